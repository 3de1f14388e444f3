"""SGD on the linear model the interpolant solves (paper section 5), against the exact answer.

Two forms of one model. *Kernel form*: f = sum_i alpha_i k(x_i, .), and a
mini-batch B of b points takes the step alpha_B <- alpha_B - eta (K_B alpha - y_B)
(the functional gradient of the batch's square loss). *Primal form* (linear
kernel, d > n): w <- w - eta X_B^T (X_B w - y_B). Started at 0 both stay in the
span of the data, so their only possible limit is the minimum-norm
interpolant: alpha* = K^{-1} Y from kernelfit's Cholesky path, or w* from
``numpy.linalg.lstsq``. From a random w0 the primal iterate never changes its
null-space part, so it converges to w* + P_null(w0), predicted here in closed
form, with norm^2 = ||w*||^2 + ||P_null(w0)||^2.

The step size (``lr=None``: the provable 1 / L_b) and EigenPro's
preconditioner come from the spectrum of K
(:mod:`kernelfit.studies.sgd.linear_spectrum`); the per-epoch
measurements and the run's record, with its monotonicity check, are in
:mod:`kernelfit.studies.sgd.linear_record`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from kernelfit.data.randomize import parse_randomization
from kernelfit.errors import InputError
from kernelfit.params import one_of, real, whole
from kernelfit.pipeline.results import ResultStore, result_settings, settings_key, with_data
from kernelfit.studies.sgd.linear_record import _Meter, _record
from kernelfit.studies.sgd.linear_spectrum import _step_rule, top_eigenpairs, top_eigenvalue_bound

FORMS = ("kernel", "primal")
INITS = ("zero", "random")


@dataclass
class SGDLinearConfig:
    """One run of `kernelfit sgd linear`; every field has the command's default."""

    dataset: str = "digits"
    n_train: int | None = 500
    n_test: int | None = None
    seed: int = 0
    kernel: str = "gaussian"
    sigma: float | None = None      # None: kernelfit's default scale 1 / (d Var X)
    form: str = "kernel"
    epochs: int = 100
    batch_size: int = 64
    lr: float | None = None         # None: 1 / L_b (see linear_spectrum's docstring)
    precondition_rank: int = 0      # k > 0: EigenPro steps on the top-k eigenpairs of K
    split_rank: int | None = None   # error split top-k / rest (None: precondition_rank)
    init: str = "zero"
    init_scale: float = 1.0         # random init: entries N(0, s^2 / dim), columns of norm ~ s
    tol: float = 1e-3               # stop at relative distance <= tol to the limit; 0: never
    randomize: str = "none"         # a randomization test of kernelfit.data.randomize
    data_home: str | None = None

    def settings(self) -> dict:
        """The settings that change the result (the record's key), validated."""
        validate(self)
        s = {**asdict(self), "split_rank": self.rank, "randomize": self.randomization}
        if s["randomize"] == "none":
            # keyed as before the setting existed, so true-label records are still reused;
            # any other test adds its canonical spec, so they never stand in for each other
            del s["randomize"]
        return with_data(result_settings(s), self.dataset, self.data_home)

    def name(self) -> str:
        k = f"k{self.precondition_rank}" if self.precondition_rank else "plain"
        r = "" if self.randomization == "none" else f"-{self.randomization}"
        return (f"{self.form}-{self.dataset}-n{self.n_train}-{k}{r}-"
                f"{settings_key(self.settings())}")

    @property
    def rank(self) -> int:
        return self.precondition_rank if self.split_rank is None else self.split_rank

    @property
    def randomization(self) -> str:
        """The canonical spec ("labels:1" and "random-labels" are one run, as in `run`)."""
        return parse_randomization(self.randomize).describe()


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)


def validate(c: SGDLinearConfig) -> None:
    """Raise :class:`InputError` for any setting that cannot run, saying what to pass."""
    from kernelfit.engine.kernels import KERNELS

    one_of("form", c.form, FORMS)
    one_of("init", c.init, INITS)
    one_of("kernel", c.kernel, KERNELS)
    whole("n_train", c.n_train, 2, allow_none=True,
          hint="None: all; an interpolant of one point is trivial")
    whole("n_test", c.n_test, 1, allow_none=True, hint="None: all")
    whole("epochs", c.epochs, 1)
    whole("batch_size", c.batch_size, 1)
    whole("precondition_rank", c.precondition_rank, 0)
    whole("seed", c.seed, 0)
    whole("split_rank", c.split_rank, 0, allow_none=True)
    real("lr", c.lr, 0, lo_open=True, allow_none=True, hint="None: the provable step 1 / L_b")
    real("sigma", c.sigma, 0, lo_open=True, allow_none=True)
    real("init_scale", c.init_scale, 0, lo_open=True)
    real("tol", c.tol, 0, 1, hi_open=True)
    _check(isinstance(c.randomize, str), f"randomize must be a randomization spec such as "
           f"'random-labels' or 'labels:0.2', got {c.randomize!r}")
    parse_randomization(c.randomize)      # the one parser of a test's spec: says the valid ones
    _check(not (c.kernel == "linear" and c.sigma is not None), "the linear kernel has no "
           "bandwidth; drop --sigma")
    _check(c.form == "kernel" or c.kernel == "linear", "the primal form is the linear model "
           "w: pass --kernel linear (or --form kernel for other kernels)")
    n = c.n_train
    if n is not None:
        for name in ("precondition_rank", "split_rank"):
            k = getattr(c, name) or 0
            _check(k <= n - 2, f"{name}={k} needs at most n_train - 2 = {n - 2} eigenpairs "
                   "(the rank-(k+1) eigenvalue sets the flattened spectrum)")
        _check(c.batch_size <= n, f"batch_size={c.batch_size} exceeds n_train={n}")


# -- the two parameterizations -----------------------------------------------------

class _KernelForm:
    """alpha (n, c): f = K alpha on the training points, K_test alpha on the test points.

    ``lam``, ``V``: top eigenpairs of K (V: n x r); the first ``k_pre`` precondition.
    """

    def __init__(self, K, K_test, Y, lam, V, k_pre):
        self.K, self.K_test, self.Y, self.lam, self.V = K, K_test, Y, lam, V
        self.P = V[:, :k_pre]

    def train_out(self, theta):
        return self.K @ theta

    def test_out(self, theta):
        return self.K_test @ theta

    def step(self, theta, idx, eta, scale):
        r = self.K[idx] @ theta - self.Y[idx]
        theta[idx] -= eta * r
        if scale is not None:       # + eta V D V_B^T r: the EigenPro correction
            theta += self.P @ ((eta * scale)[:, None] * (self.P[idx].T @ r))

    def norm(self, theta):
        return float(np.sqrt(max(np.sum(theta * (self.K @ theta)), 0.0)))

    def rkhs_coords(self, e):
        """Coordinates of the function e along the top eigenfunctions: sqrt(lambda_j) v_j^T e."""
        return np.sqrt(self.lam)[:, None] * (self.V.T @ e)


class _PrimalForm:
    """w (d, c): f = X w; the RKHS of the linear kernel is R^d itself."""

    def __init__(self, X, X_test, Y, lam, V, k_pre):
        self.X, self.X_test, self.Y = X, X_test, Y
        # right singular vectors of X from the left ones: X^T v_j / sqrt(lambda_j)
        self.W = (X.T @ V) / np.sqrt(lam)
        self.P = self.W[:, :k_pre]

    def train_out(self, theta):
        return self.X @ theta

    def test_out(self, theta):
        return self.X_test @ theta

    def step(self, theta, idx, eta, scale):
        Xb = self.X[idx]
        g = Xb.T @ (Xb @ theta - self.Y[idx])
        if scale is not None:       # Q g = g - W D W^T g
            g -= self.P @ (scale[:, None] * (self.P.T @ g))
        theta -= eta * g

    def norm(self, theta):
        return float(np.linalg.norm(theta))

    def rkhs_coords(self, e):
        return self.W.T @ e


# -- one run --------------------------------------------------------------------------

def _data(c: SGDLinearConfig):
    from kernelfit.pipeline.run import RunConfig, prepare

    # the randomization test as `kernelfit run` applies it (same seed, same labels)
    data = prepare(RunConfig(dataset=c.dataset, n_train=c.n_train, n_test=c.n_test, seed=c.seed,
                             randomize=c.randomize, preprocessing="scale,flatten",
                             data_home=c.data_home))
    return data, (np.asarray(data.train_images, dtype=np.float64), data.train_labels,
                  np.asarray(data.test_images, dtype=np.float64), data.test_labels)


def _reference(c, X, Y, K) -> tuple[np.ndarray, dict]:
    """The minimum-norm interpolant theta* (alpha* or w*) and how exactly it interpolates."""
    from kernelfit.engine.solvers.solve import solve_stored
    from kernelfit.options import Options

    if c.form == "kernel":
        sol = solve_stored(K.copy(), Y, solver="cholesky",
                           options=Options(dtype="float64", progress=False))
        return sol.alpha, {"reference": "kernelfit Cholesky (float64)",
                           "reference_residual": sol.relative_residual}
    w_star = np.linalg.lstsq(X, Y, rcond=None)[0]
    return w_star, {"reference": "numpy.linalg.lstsq minimum-norm solution",
                    "reference_residual": float(np.linalg.norm(X @ w_star - Y)
                                                / np.linalg.norm(Y))}


@dataclass
class SGDResult:
    """What :func:`fit_linear_sgd` returns: the iterate, the references, the measurements."""

    theta: np.ndarray           # final alpha (n, c) or w (d, c)
    theta_star: np.ndarray      # the minimum-norm interpolant (alpha* or lstsq's w*)
    limit: np.ndarray           # the predicted limit: theta*, or w* + P_null(w0)
    history: list               # one dict of measurements per epoch (epoch 0: the start)
    facts: dict                 # step size and its bound, spectrum, references, timings


def fit_linear_sgd(c: SGDLinearConfig, X, y, X_test, y_test, *,
                   progress: bool = False) -> SGDResult:
    """Run SGD as ``c`` says on the arrays given (``c``'s data fields are not used).

    Parameters
    ----------
    c : SGDLinearConfig
        form, kernel, sigma, epochs, batch_size, lr, precondition_rank,
        split_rank, init, init_scale, tol, seed.
    X, X_test : ndarray (n, d), (m, d)
    y, y_test : ndarray (n,), (m,)
        Class labels; the targets are their one-hot rows (as the classifier fits).
    """
    from kernelfit.engine.gram.panels import build_gram
    from kernelfit.engine.kernels import make_kernel
    from kernelfit.options import Options

    validate(c)
    X, X_test = np.asarray(X, dtype=np.float64), np.asarray(X_test, dtype=np.float64)
    classes, codes = np.unique(y, return_inverse=True)
    Y = np.zeros((len(codes), len(classes)))
    Y[np.arange(len(codes)), codes] = 1.0
    n, d = X.shape
    _check(c.batch_size <= n and max(c.precondition_rank, c.rank) <= n - 2,
           f"n_train resolved to {n}: batch_size and ranks must fit it")
    _check(c.form == "kernel" or d > n, f"the primal form shows the minimum-norm interpolant "
           f"only when d > n (here d = {d}, n = {n}); use a smaller --n-train")
    t = time.perf_counter()
    kernel = make_kernel(c.kernel, sigma=c.sigma, X=X)
    K = build_gram(X, kernel, options=Options(dtype="float64", progress=False))
    timings = {"gram": time.perf_counter() - t}

    t = time.perf_counter()
    r = max(c.precondition_rank, c.rank)
    lam, V = top_eigenpairs(K, r, c.seed) if r else (np.zeros(0), np.zeros((n, 0)))
    lam1 = top_eigenvalue_bound(K, c.seed)
    eta, scale, bound = _step_rule(c, K, lam, V, lam1)
    timings["spectrum"] = time.perf_counter() - t

    t = time.perf_counter()
    theta_star, info = _reference(c, X, Y, K)
    if c.form == "kernel":
        form = _KernelForm(K, kernel.block(X_test, X), Y, lam[:r], V[:, :r], c.precondition_rank)
    else:
        form = _PrimalForm(X, X_test, Y, lam[:r], V[:, :r], c.precondition_rank)
    theta = np.zeros((n if c.form == "kernel" else d, Y.shape[1]))
    if c.init == "random":
        g = np.random.default_rng([c.seed, 3]).standard_normal(theta.shape)
        theta = c.init_scale * g / np.sqrt(len(theta))
    lim = theta_star
    if c.form == "primal" and c.init == "random":
        # w_t - w0 stays in the row space of X, so the null-space part of w0 survives.
        p_null = theta - np.linalg.lstsq(X, X @ theta, rcond=None)[0]
        lim = theta_star + p_null
        info["p_null_norm"] = float(np.linalg.norm(p_null))
    meter = _Meter(c, form, Y, classes, y_test, theta_star, lim, lam)
    info.update(test_error_exact=meter.test_error(theta_star), norm_min=form.norm(theta_star),
                norm_limit=meter.lim_norm)
    timings["reference"] = time.perf_counter() - t

    rng = np.random.default_rng([c.seed, 11])
    history = [meter(theta, 0, 0.0)]
    bar = tqdm(range(1, c.epochs + 1), desc=f"sgd {c.form}", unit="epoch", disable=not progress,
               delay=1.0)
    t_sgd = time.perf_counter()
    for epoch in bar:
        perm = rng.permutation(n)
        # A step beyond the bound may overflow: checked below, by value, every epoch.
        with np.errstate(over="ignore", invalid="ignore"):
            for s in range(0, n, c.batch_size):
                form.step(theta, perm[s:s + c.batch_size], eta, scale)
            m = meter(theta, epoch, time.perf_counter() - t_sgd)
        history.append(m)
        if not np.all(np.isfinite([m["loss"], m["rkhs_dist"]])):
            raise InputError(f"SGD diverged at epoch {epoch} with lr = {eta:.4g} (the provable "
                             f"step is 1 / L_b = {1 / bound['bound']:.4g}); use --lr auto")
        bar.set_postfix(train=f"{m['train_error']:.3f}", dist=f"{m['rel_dist']:.2e}")
        if c.tol and m["rel_dist"] <= c.tol:
            break
    bar.close()
    timings["sgd"] = time.perf_counter() - t_sgd
    facts = {"n_train": n, "dim": d, "n_test": len(X_test), "n_classes": int(Y.shape[1]),
             "kernel": kernel.params, **info,
             "lr": eta, "lr_rule": "1 / L_b" if c.lr is None else "given", "step_bound": bound,
             "lambda_1": lam1, "eigenvalues_top": lam[:50].tolist(),
             "lambda_k+1": float(lam[c.precondition_rank]) if c.precondition_rank else None,
             "timings": timings}
    return SGDResult(theta, theta_star, lim, history, facts)


def run_sgd_linear(c: SGDLinearConfig, *, progress: bool = True) -> dict:
    """Load ``c``'s data (pixels scaled to [0, 1]), run SGD, and return the record."""
    validate(c)
    data, arrays = _data(c)
    res = fit_linear_sgd(c, *arrays, progress=progress)
    res.facts["timings"] = {"data": data.seconds, **res.facts["timings"]}
    return _record(c, res.history, {**res.facts, "preprocessing": data.preprocessing,
                                    "randomization": data.randomization})


def sgd_linear(c: SGDLinearConfig, out_dir, *, progress: bool = True, log=print) -> dict:
    """The record of ``c`` from ``out_dir`` if one was made with the same settings, else run it."""
    return ResultStore(out_dir).load_or_compute(
        c.name(), c.settings(), lambda: run_sgd_linear(c, progress=progress), log=log)
