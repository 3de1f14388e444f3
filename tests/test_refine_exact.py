"""refine_against='exact': a float32 K and factor, refined to the float64 solution of the exact K.

The oracle is SciPy's float64 solve of K built by scikit-learn in float64.
"""

import json
import re

import numpy as np
import pytest
from scipy.linalg import solve
from sklearn.datasets import load_digits
from sklearn.metrics.pairwise import rbf_kernel

from kernelfit import KernelInterpolant, KernelInterpolantClassifier, Options
from kernelfit.errors import InputError

SIGMA = 30.0  # digits (pixels 0..16): cond(K) ~ 4e4, so rounding K to float32 moves alpha


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X, y = X[:900].astype(np.float64), y[:900]
    Y = np.eye(10)[y]
    K = rbf_kernel(X, gamma=1 / (2 * SIGMA**2))
    return X, y, Y, K, solve(K, Y, assume_a="pos")


def _fit(X, y, **opts):
    opts = Options(dtype="float32", **opts)
    return KernelInterpolantClassifier(sigma=SIGMA, options=opts).fit(X, y)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_exact_refinement_reaches_the_float64_solution_of_the_exact_kernel(digits):
    X, y, Y, K, alpha64 = digits
    stored = _fit(X, y, refine_steps=4, refine_against="stored")
    exact = _fit(X, y, refine_steps=4)       # "auto": exact, the points being at hand
    # The stored float32 K is a different matrix: refining against it converges to
    # *its* solution, which is off the exact one by ~ cond(K) eps32.
    assert _rel(stored.dual_coef_, alpha64) > 1e-5
    assert _rel(exact.dual_coef_, alpha64) < 1e-9
    # The reported residual is the one against the exact K, in float64.
    r = np.linalg.norm(K @ exact.dual_coef_ - Y) / np.linalg.norm(Y)
    assert exact.relative_residual_ == pytest.approx(r, rel=1e-3, abs=1e-15)
    assert exact.relative_residual_ < 1e-12
    info = exact.solver_info_
    assert info["residual_against"] == "K recomputed in float64 from the points"
    assert stored.solver_info_["residual_against"] == "the stored K (float32)"
    # each step cuts the residual by about cond(K) eps32 until float64's floor (~1e-14)
    hist = info["refine_history"]
    assert hist[0] > 1e3 * hist[1] > 1e6 * hist[2] and exact.converged_


def test_without_steps_the_residual_against_the_exact_kernel_is_measured_honestly(digits):
    X, y, Y, K, _ = digits
    m = _fit(X, y, refine_against="exact")
    r = np.linalg.norm(K @ m.dual_coef_ - Y) / np.linalg.norm(Y)
    assert m.relative_residual_ == pytest.approx(r, rel=1e-3)
    # what the stored K claims for the same float32 solve is smaller: it hides the rounding
    plain = _fit(X, y)                       # "auto" without steps: the stored K
    assert plain.solver_info_["residual_against"] == "the stored K (float32)"
    assert plain.relative_residual_ < m.relative_residual_


@pytest.mark.parametrize("kw, words", [
    (dict(solver="cg"), "solver='cholesky'"),
    (dict(solver="pcg"), "solver='cholesky'"),
    (dict(kernel="precomputed"), "not a precomputed K"),
])
def test_refused_where_the_exact_kernel_cannot_be_recomputed(digits, kw, words):
    X, y, *_ = digits
    Xa = X[:50] if kw.get("kernel") != "precomputed" else rbf_kernel(X[:50])
    with pytest.raises(InputError, match=words):
        KernelInterpolant(**kw, options=Options(refine_against="exact")).fit(Xa, y[:50] * 1.0)


def test_the_option_is_validated():
    with pytest.raises(InputError, match="refine_against must be one of 'auto', 'stored', "):
        Options(refine_against="float64")


def test_the_command_says_what_the_residual_was_measured_against(tmp_path, capsys):
    # the command scales pixels to [0, 1]: sigma 1.9 there is sigma 30 above
    from kernelfit.cli import main
    out = tmp_path / "r.json"
    assert main(["run", "--n-train", "600", "--n-test", "100", "--dtype", "float32",
                 "--sigma", "1.9", "--refine-steps", "2", "--refine-against", "exact",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(against K recomputed in float64 from the points)" in text
    assert re.search(r"refinement\s+\d\.\de-\d\d -> \d\.\de-\d\d -> \d\.\de-\d\d", text)
    rec = json.loads(out.read_text())
    assert rec["residual_against"] == "K recomputed in float64 from the points"
    assert len(rec["refine_history"]) == 2 and rec["relative_residual"] < rec["refine_history"][1]


@pytest.mark.parametrize("solver, against", [
    ("cg", "the stored K (float64)"),
    ("cg-matrix-free", "K recomputed in float64 from the points"),
    ("pcg", "the stored K (float64)"),
])
def test_every_solver_says_what_its_residual_was_measured_against(digits, solver, against):
    X, y, Y, K, _ = digits
    m = KernelInterpolantClassifier(sigma=SIGMA, solver=solver,
                                    options=Options(dtype="float64", tol=1e-8,
                                                    max_iter=2000)).fit(X[:300], y[:300])
    assert m.solver_info_["residual_against"] == against
    r = np.linalg.norm(K[:300, :300] @ m.dual_coef_ - Y[:300]) / np.linalg.norm(Y[:300])
    assert m.relative_residual_ == pytest.approx(r, rel=1e-3, abs=1e-12)


def test_a_precomputed_k_is_the_reference_of_its_own_residual(digits):
    X, y, Y, K, _ = digits
    m = KernelInterpolantClassifier(kernel="precomputed",
                                    options=Options(dtype="float64")).fit(K[:300, :300], y[:300])
    assert m.solver_info_["residual_against"] == "the given K (float64)"
    r = np.linalg.norm(K[:300, :300] @ m.dual_coef_ - Y[:300]) / np.linalg.norm(Y[:300])
    assert m.relative_residual_ == pytest.approx(r, rel=1e-3, abs=1e-13)
