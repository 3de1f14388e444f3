"""`kernelfit study double-descent`: random Fourier features across the interpolation threshold.

Belkin, Hsu, Ma & Mandal (PNAS 2019, arXiv 1812.11118) fit the minimum-norm
least-squares predictor on N random Fourier features of an MNIST subset of
n = 10^4 points and plot test error (zero-one and square loss) and the norm of
the solution against N: both rise towards the interpolation threshold N = n,
peak there, then fall again as N grows past it, towards the Gaussian kernel's
own minimum-norm interpolant (the N -> infinity limit of the features).

kernelfit computes every point exactly, from the same features
(:class:`kernelfit.features.rff.RandomFourierFeatures`, seeded; the features of
a smaller N are a prefix of a larger N's):

* N >= n: through the engine (:func:`kernelfit.studies.sweeps.run_sweep`
  with ``--features rff --kernel linear --stream --dtype float64``): K = Phi
  Phi^T (n x n, full rank) accumulated from column chunks, the interpolant
  alpha = K^-1 Y (Cholesky, or K^+ Y where K is singular to working precision,
  as next to N = n), whose weights w = Phi^T alpha are the minimum-norm
  interpolating ones; its norm sqrt(trace(alpha^T K alpha)) is ||w||_F.
* N < n: no interpolant exists; the minimum-norm least-squares weights
  w = Phi^+ Y come from :func:`min_norm_lstsq` on Phi in float64 (Householder
  QR where Phi has full column rank to working precision, else LAPACK's
  SVD-based ``gelsd``), checked by the normal-equations residual
  ||Phi^T (Phi w - Y)||_F / (||Phi||_F (||Phi||_F ||w||_F + ||Y||_F)) (a
  backward-error measure: a few float64 epsilons for a stable solve) and the
  rank found. Records are stored through
  :class:`kernelfit.pipeline.results.ResultStore`, keyed like the engine's
  (the run settings, the data's fingerprint, the kernelfit version).
* N -> infinity: the exact Gaussian-kernel interpolant at the same bandwidth
  (the rff front end resolves the Gaussian kernel's default scale on the same
  rows unless sigma is given).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernelfit.errors import InputError
from kernelfit.options import Options
from kernelfit.params import real, whole
from kernelfit.pipeline.report import RunRecord
from kernelfit.pipeline.results import ResultStore, result_settings, settings_key, with_data
from kernelfit.pipeline.run import RunConfig, prepare, square_loss
from kernelfit.studies.followups.common import (
    BHMM19,
    NOT_VERIFIABLE,
    Part,
    StudyResult,
    check_sizes,
    failures,
    line_plot,
    markdown_table,
    ok_records,
    run_part,
    write_report,
)

NAME = "double-descent"
#: What the N < n records say of their fit (also part of their key).
PRIMAL_FIT = ("minimum-norm least squares w = Phi^+ Y (float64; Householder QR, or the SVD "
              "(gelsd) where Phi is rank-deficient to working precision)")
#: Largest normal-equations backward error accepted from the solve (float64 eps is 2.2e-16).
PRIMAL_LIMIT = 1e-10
#: Smallest reciprocal condition estimate of QR's R (1-norm, LAPACK trcon) for which the
#: QR solution is taken: a Phi this well conditioned has full column rank to working
#: precision, so its least-squares solution is unique and QR's is the minimum-norm one.
QR_RCOND = 1e-10


@dataclass
class DoubleDescentStudy:
    dataset: str = "mnist"
    n_train: int = 10000
    n_test: int = 2000
    n_features: tuple = (100, 300, 1000, 3000, 5000, 8000, 9000, 10000, 11000, 12500, 15000,
                         20000, 40000, 100000)
    seeds: tuple = (0, 1, 2)
    sigma: float | None = None

    def __post_init__(self):
        whole("n_train", self.n_train, 2)
        whole("n_test", self.n_test, 1)
        check_sizes("n_features", list(self.n_features))
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"seeds must be distinct, got {list(self.seeds)}")
        for s in self.seeds:
            whole("seed", s, 0)
        real("sigma", self.sigma, 0, lo_open=True, allow_none=True,
             hint="None: the Gaussian kernel's default scale 1 / (d Var X)")

    @classmethod
    def small(cls, **kw) -> DoubleDescentStudy:
        """Digits, n = 300: the whole curve in well under a minute."""
        return cls(**{**dict(dataset="digits", n_train=300, n_test=500,
                             n_features=(30, 75, 150, 225, 270, 300, 330, 400, 600, 1200, 3000),
                             seeds=(0, 1, 2)), **kw})

    @classmethod
    def full(cls, **kw) -> DoubleDescentStudy:
        return cls(**kw)

    def config(self, seed: int, n_features: int | None = None) -> RunConfig:
        """The run of one point: rff features under the linear kernel (K = Phi Phi^T)."""
        params = {} if self.sigma is None else {"sigma": self.sigma}
        if n_features is not None:
            params["n_features"] = n_features
        return RunConfig(dataset=self.dataset, n_train=self.n_train, n_test=self.n_test,
                         seed=seed, kernel="linear", features="rff", feature_params=params,
                         stream=True, feature_cache=False,
                         options=Options(progress=False, dtype="float64"))

    def parts(self) -> list[Part]:
        above = [N for N in self.n_features if N >= self.n_train]
        seeds = "seed=" + ",".join(map(str, self.seeds))
        out = []
        if above:
            out.append(Part("rff-interpolating", self.config(self.seeds[0]),
                            ["feature_params=" + ",".join(f"n_features={N}" for N in above),
                             seeds], "engine: K = Phi Phi^T"))
        exact = RunConfig(dataset=self.dataset, n_train=self.n_train, n_test=self.n_test,
                          kernel="gaussian", sigma=self.sigma,
                          options=Options(progress=False, dtype="float64"))
        out.append(Part("gaussian-exact", exact, [seeds], "exact Gaussian kernel"))
        return out


def min_norm_lstsq(Phi: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, int, str]:
    """w = Phi^+ Y for a float64 Phi with no more columns than rows; (w, rank, method).

    The SVD gives the minimum-norm solution whatever Phi's rank, but its
    bidiagonalization runs at matrix-vector speed: on the study's MNIST features at
    n = 10^4, ``gelsd`` takes 2.4x QR's time at N = 5,000 and 4.5x at N = 9,000
    (171 s against 38 s on two cores; ``benchmarks/bench_lstsq.py``, the two
    solutions 4e-14 apart). Blocked Householder QR (LAPACK geqrf, then
    ormqr and a triangular solve) runs at matrix-matrix speed, and for a Phi of
    full column rank its least-squares solution is the unique one, hence the
    minimum-norm one. QR is taken when R's reciprocal condition estimate is at
    least :data:`QR_RCOND`; otherwise Phi may have a numerical null space, and
    ``gelsd`` decides the rank (singular values below max(n, N) eps s_max
    dropped, NumPy's ``lstsq`` cut-off).
    """
    import scipy.linalg
    from scipy.linalg import lapack

    n, N = Phi.shape
    if N > n:
        raise InputError(f"min_norm_lstsq takes a Phi with no more columns than rows, got "
                         f"{n} x {N}: for N > n the interpolant goes through K = Phi Phi^T")
    # lwork = N * 64: the blocked algorithm (the default workspace forces the unblocked one).
    qr, tau, _, info = lapack.dgeqrf(Phi, lwork=max(1, N * 64))
    R = np.triu(qr[:N])
    rcond, info_c = lapack.dtrcon(R, norm="1", uplo="U", diag="N") if not info else (0.0, 1)
    if info or info_c or not rcond >= QR_RCOND:
        # NumPy's lstsq cut-off: singular values below max(n, N) eps s_max count as zero.
        cut = max(n, N) * np.finfo(np.float64).eps
        W, _, rank, _ = scipy.linalg.lstsq(Phi, Y, cond=cut, lapack_driver="gelsd",
                                           check_finite=False)
        return W, int(rank), f"SVD (gelsd): R's reciprocal condition estimate {rcond:.1e}"
    QtY, _, info = lapack.dormqr("L", "T", qr, tau, Y, lwork=max(1, Y.shape[1] * 64))
    if info:
        raise RuntimeError(f"LAPACK dormqr failed (info {info})")
    W = scipy.linalg.solve_triangular(R, QtY[:N], lower=False, check_finite=False)
    return W, N, f"Householder QR: R's reciprocal condition estimate {rcond:.1e}"


def primal_problem(config: RunConfig):
    """(prepared data, fitted rff map, Phi in float64, classes, codes, one-hot Y) of a point."""
    from kernelfit.features import make_features

    data = prepare(config)
    fmap = make_features("rff", seed=config.seed, **config.feature_params)
    fmap.fit(data.train_images)
    Phi = fmap.transform(data.train_images).astype(np.float64)
    classes, codes = np.unique(data.train_labels, return_inverse=True)
    Y = np.zeros((len(codes), len(classes)))
    Y[np.arange(len(codes)), codes] = 1.0
    return data, fmap, Phi, classes, codes, Y


def backward_error(Phi: np.ndarray, W: np.ndarray, Y: np.ndarray, R=None) -> float:
    """||Phi^T R||_F / (||Phi||_F (||Phi||_F ||W||_F + ||Y||_F)), R = Phi W - Y (pass it
    when already formed): a few float64 epsilons for a backward-stable least-squares solve."""
    R = Phi @ W - Y if R is None else R
    norm_w, norm_phi = float(np.linalg.norm(W)), float(np.linalg.norm(Phi))
    return float(np.linalg.norm(Phi.T @ R)
                 / (norm_phi * (norm_phi * norm_w + float(np.linalg.norm(Y))) or 1.0))


def fit_primal(config: RunConfig) -> dict:
    """The minimum-norm least-squares fit of one N < n point, as a run record (dict)."""
    t0 = time.perf_counter()
    data, fmap, Phi, classes, codes, Y = primal_problem(config)
    W, rank, method = min_norm_lstsq(Phi, Y)
    R = Phi @ W - Y
    norm_w = float(np.linalg.norm(W))
    backward = backward_error(Phi, W, Y, R)
    warnings = []
    if not (math.isfinite(backward) and backward <= PRIMAL_LIMIT):
        warnings.append(f"least-squares backward error {backward:.2e} > {PRIMAL_LIMIT:g}: "
                        "the solve is not the minimum-norm solution to working precision")
    if rank < min(Phi.shape):
        warnings.append(f"Phi has rank {rank} < {min(Phi.shape)}: the features are dependent")
    F_test = fmap.transform(data.test_images).astype(np.float64) @ W
    record = RunRecord(
        dataset=config.dataset, n_train=len(codes), n_test=len(data.test_labels),
        kernel={"name": "linear"}, solver=PRIMAL_FIT, dtype="float64", lam=0.0,
        train_error=float(np.mean(np.argmax(Phi @ W, axis=1) != codes)),
        test_error=float(np.mean(classes[np.argmax(F_test, axis=1)] != data.test_labels)),
        test_sq_loss=square_loss(F_test, data.test_labels, classes),
        norm=norm_w, relative_residual=float(np.linalg.norm(R) / np.linalg.norm(Y)),
        features=fmap.name, feature_params=fmap.params, feature_dim=fmap.dim,
        preprocessing=data.preprocessing + list(fmap.preprocessing),
        randomization=data.randomization, seed=config.seed, converged=not warnings,
        warnings=warnings, timings={"total": time.perf_counter() - t0},
        notes=[f"N = {fmap.dim} < n: no interpolant; {method}; least-squares backward "
               f"error {backward:.2e}, rank {rank}"])
    return record.to_dict()


def _primal_points(study: DoubleDescentStudy, out_dir, log) -> list[tuple[dict, dict]]:
    """(labels, record) of every N < n point, each stored and reused like a sweep point."""
    store = ResultStore(Path(out_dir) / "rff-least-squares" / "points")
    out = []
    below = [N for N in study.n_features if N < study.n_train]
    if below:
        log("-- rff-least-squares")
    for seed in study.seeds:
        for N in below:
            config = study.config(seed, N)
            settings = with_data({**result_settings(config), "fit": PRIMAL_FIT},
                                 config.dataset, config.data_home)
            name = f"n_features-{N}_seed-{seed}-{settings_key(settings, 8)}"
            saved = store.load_or_compute(name, settings,
                                          lambda c=config: {"record": fit_primal(c)}, log=log)
            out.append(({"n_features": N, "seed": seed}, saved["record"]))
    return out


def run_study(study: DoubleDescentStudy, out_dir, *, plot: bool = True,
              log=print) -> StudyResult:
    res = StudyResult(NAME)
    rows = []
    for _, r in _primal_points(study, out_dir, log):
        rows.append(_row(r, "least squares (N < n)"))
    exact = []
    for part in study.parts():
        points = run_part(part, out_dir, log=log)
        res.failed += failures(points)
        for _, r in ok_records(points):
            (exact if part.name == "gaussian-exact" else rows).append(_row(r, part.tag))
    res.rows = sorted(rows, key=lambda r: (r["n_features"], r["seed"])) + exact
    summary = _summary(rows)
    peak = _peak(summary, "test_sq_loss")
    peak01 = _peak(summary, "test_error")
    limit = {k: float(np.mean([e[k] for e in exact])) if exact else None
             for k in ("test_error", "test_sq_loss", "norm")}
    res.summary += [f"peak of the square loss at N = {peak:,} (n = {study.n_train:,})",
                    f"peak of the zero-one error at N = {peak01:,}"]
    res.measures.update(peak_sq_loss=peak, peak_zero_one=peak01, exact=limit)
    sections = [_header(study), _table(summary, limit, study, peak, peak01)]
    if res.failed:
        sections.append("Failed points:\n\n" + "\n".join(f"- {f}" for f in res.failed))
    res.files.update(write_report(out_dir, NAME, res.rows, sections))
    if plot:
        res.files.update(_plots(summary, limit, study, out_dir))
    return res


def _row(r: dict, fit: str) -> dict:
    return dict(fit=fit, n_features=r.get("feature_dim") if r["features"] == "rff" else None,
                seed=r["seed"], n_train=r["n_train"], solver=r["solver"],
                train_error=r["train_error"], test_error=r["test_error"],
                test_sq_loss=r.get("test_sq_loss"), norm=r["norm"],
                relative_residual=r["relative_residual"], converged=r["converged"],
                warnings="; ".join(r.get("warnings", [])))


def _summary(rows) -> list[dict]:
    """Mean and standard deviation over seeds, one line per N."""
    out = []
    for N in sorted({r["n_features"] for r in rows}):
        rs = [r for r in rows if r["n_features"] == N]
        line = dict(n_features=N, seeds=len(rs), fit=rs[0]["fit"])
        for k in ("train_error", "test_error", "test_sq_loss", "norm"):
            v = np.array([r[k] for r in rs], dtype=float)
            line[k], line[k + "_std"] = float(v.mean()), float(v.std())
        out.append(line)
    return out


def _peak(summary, key) -> int | None:
    return max(summary, key=lambda s: s[key])["n_features"] if summary else None


def _header(study: DoubleDescentStudy) -> str:
    return (f"# Double descent with random Fourier features\n\nAfter {BHMM19}.\n\n"
            f"{study.dataset}, n = {study.n_train:,} training and {study.n_test:,} test points, "
            f"one-hot targets, seeds {', '.join(map(str, study.seeds))} (each seed draws "
            "both the subset and the features); Gaussian kernel "
            + (f"sigma = {study.sigma:g}" if study.sigma else "at its default scale "
               "1 / (d Var X)") + ". Every point is the minimum-norm solution, computed "
            "exactly: least squares for N < n (float64; Householder QR where Phi has full "
            "column rank, the SVD where it may not: each record's notes say which), the "
            "engine's interpolant of K = Phi Phi^T for N >= n.\n")


def _table(summary, limit, study, peak, peak01) -> str:
    cols = [("n_features", "N"), ("fit", "fit"), ("train_error", "train error"),
            ("test_error", "test error (0-1)"), ("test_error_std", "sd"),
            ("test_sq_loss", "test square loss"), ("test_sq_loss_std", "sd"),
            ("norm", "norm of w"), ("norm_std", "sd")]
    rows = [dict(s, test_error_std=100 * s["test_error_std"]) for s in summary]
    rows.append(dict(n_features="infinity", fit="exact Gaussian kernel", train_error=0.0,
                     test_error=limit["test_error"], test_sq_loss=limit["test_sq_loss"],
                     norm=limit["norm"]))
    published = [
        dict(what="peak location", kernelfit=f"N = {peak:,} (square loss), {peak01:,} (0-1)",
             published="N = n = 10,000 (BHMM19 Fig. 2, MNIST subset)"),
        dict(what="test error at the peak / at the largest N / exact kernel",
             kernelfit=" / ".join("-" if v is None else f"{100 * v:.2f}%" for v in (
                 max(s["test_error"] for s in summary), summary[-1]["test_error"],
                 limit["test_error"])),
             published=f"{NOT_VERIFIABLE} (read off BHMM19 Fig. 2)"),
        dict(what="norm peaks at the threshold", kernelfit=f"N = {_peak(summary, 'norm'):,}",
             published="yes, N = n (BHMM19 Fig. 2, bottom)"),
    ]
    return ("## Test error, square loss and norm against N\n\n(sd columns: standard "
            "deviation over seeds; the 0-1 sd in percentage points)\n\n"
            + markdown_table(rows, cols) + "\n## Beside the published figure\n\n"
            + markdown_table(published, [("what", ""), ("kernelfit", "kernelfit"),
                                         ("published", "published")]))


def _plots(summary, limit, study, out_dir) -> dict:
    N = [s["n_features"] for s in summary]
    files = {}
    vl = {"N = n": study.n_train}
    for key, label, pct_ in (("test_error", "test error (0-1)", True),
                             ("test_sq_loss", "test square loss", False),
                             ("norm", "norm of the solution", False)):
        series = {f"RFF, mean of {len(study.seeds)} seeds":
                  (N, [s[key] for s in summary], [s[key + "_std"] for s in summary])}
        hl = {"exact Gaussian kernel (N -> infinity)": limit[key]} if limit[key] else {}
        files[f"double_descent_{key}"] = line_plot(
            Path(out_dir) / f"double_descent_{key}.png", series,
            xlabel="N (random Fourier features)", ylabel=label, percent=pct_, logx=True,
            logy=key != "test_error", hlines=hl, vlines=vl,
            title=f"{study.dataset}, n = {study.n_train:,}: double descent (BHMM19 Fig. 2)")
    return files

