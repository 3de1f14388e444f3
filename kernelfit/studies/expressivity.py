"""Finite-sample expressivity (paper Theorem 1, Appendix C): 2n + d weights fit any n labels.

The construction: project the n distinct points on a random unit vector a so
that the values x_i = <a, z_i> are distinct, sort them, put one bias between
consecutive values (b_1 < x_1 < b_2 < x_2 < ... < b_n < x_n), and solve the
n x n system A w = y with A_ij = max(x_i - b_j, 0). A is lower triangular
(x_i < b_j for j > i) with diagonal x_i - b_i > 0, so the system has one
solution and ``scipy.linalg.solve_triangular`` finds it; its smallest
eigenvalue, min_i (x_i - b_i), is how well posed the fit is. The network
f(z) = sum_j w_j max(<a, z> - b_j, 0) has d + n + n weights and interpolates.

Where the biases go decides whether float64 can verify the fit. f is linear
on [b_j, b_{j+1}] with slope S_j, and f(x_j) = y_j gives S_{j+1} =
(dy_j / g_j - rho S_j) / (1 - rho) for b_{j+1} = x_j + rho g_j (g_j the gap).
Midpoints (rho = 1/2) leave S_{j+1} + S_j = 2 dy_j / g_j undamped: one tiny
gap's slope (~1e7 on MNIST) reappears in every later weight, and the forward
pass loses ~1e-6 to rounding (measured, 1,000 MNIST images, three seeds:
9.5e-7 .. 1.9e-6). b_{j+1} = x_j + 0.01 g_j damps it 100-fold per point and
makes the diagonal 0.99 g_j (same data: 1.9e-9 .. 3.7e-9), while x_j stays
inactive for ReLU j + 1 by a margin of 0.01 g_j, far above the rounding of
<a, z_j>. b_1 = x_1 - 0.99 g_1.

The fit is verified by evaluating the network forward on the original
(unsorted) points, independently of A, and the record keeps the largest
residual. Coinciding points cannot take different labels: they raise
:class:`~kernelfit.errors.DuplicatePointsError`; a projection that happens to
tie two distinct points is redrawn.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.linalg import solve_triangular

from kernelfit.errors import AccuracyWarning, InputError, PlanError
from kernelfit.params import one_of, real, whole
from kernelfit.pipeline.results import ResultStore, result_settings, settings_key, with_data
from kernelfit.validation import check_no_duplicates

DATASETS = ("synthetic", "digits", "mnist", "cifar10")
LABELS = ("random", "true")
N_CLASSES_SYNTHETIC = 10
# Projections closer than this (relative to their range) count as tied: redraw a.
TIE_RTOL = 1e-12
MAX_DRAWS = 10
# b_{j+1} = x_j + BIAS_FRACTION * (x_{j+1} - x_j): see the module docstring.
BIAS_FRACTION = 0.01
# The triangular system is dense: 8 n^2 bytes (n = 20,000: 3.2 GB).
MAX_N = 20_000
# Rows per block of the forward pass (bounds the n_points x n hidden-unit temporary).
FORWARD_ROWS = 1024


@dataclass
class ExpressivityConfig:
    """One construction; every field has the `kernelfit expressivity` default."""

    n: int = 1000
    d: int | None = None            # synthetic: dimension (default 10); images: their size
    dataset: str = "synthetic"
    labels: str = "random"          # random classes, or the true ones (image datasets)
    seed: int = 0
    tol: float = 1e-8               # largest |f(z_i) - y_i| that counts as an exact fit
    data_home: str | None = None

    def settings(self) -> dict:
        """The settings that change the result (the record's key, with the data's
        fingerprint for image datasets), validated."""
        validate(self)
        if self.dataset == "synthetic":         # drawn from the seed: no data to fingerprint
            return result_settings(self)
        return with_data(result_settings(self), self.dataset, self.data_home)

    def name(self) -> str:
        return f"{self.dataset}-n{self.n}-d{self.d or 'auto'}-{settings_key(self.settings())}"


def validate(c: ExpressivityConfig) -> None:
    """Raise :class:`InputError` for a setting that cannot run, saying what to pass."""
    one_of("dataset", c.dataset, DATASETS)
    one_of("labels", c.labels, LABELS)
    whole("n", c.n, 2)
    if c.n > MAX_N:
        raise PlanError(f"n = {c.n:,}: the dense n x n triangular system takes "
                        f"{8 * c.n**2 / 2**30:.1f} GiB; use n <= {MAX_N:,}")
    whole("d", c.d, 1, allow_none=True)
    whole("seed", c.seed, 0)
    real("tol", c.tol, 0, 1, lo_open=True, hi_open=True)
    if c.dataset == "synthetic" and c.labels == "true":
        raise InputError("synthetic points have no true labels; use --labels random")


@dataclass
class ReluNet:
    """f(z) = sum_j w_j max(<a, z> - b_j, 0): one hidden layer of n ReLUs, one output."""

    a: np.ndarray       # (d,) the shared projection
    b: np.ndarray       # (n,) biases
    w: np.ndarray       # (n,) output weights

    @property
    def n_weights(self) -> int:
        return int(self.a.size + self.b.size + self.w.size)

    def __call__(self, Z) -> np.ndarray:
        Z = np.asarray(Z, dtype=np.float64)
        out = np.empty(len(Z))
        for i in range(0, len(Z), FORWARD_ROWS):
            H = Z[i:i + FORWARD_ROWS] @ self.a[:, None] - self.b[None, :]
            out[i:i + FORWARD_ROWS] = np.maximum(H, 0.0) @ self.w
        return out


def _project(Z, rng):
    """A random unit vector a whose projections <a, z_i> are distinct (redrawn on a tie)."""
    for draws in range(1, MAX_DRAWS + 1):
        a = rng.standard_normal(Z.shape[1])
        a /= np.linalg.norm(a)
        x = Z @ a
        order = np.argsort(x, kind="stable")
        xs = x[order]
        gap = np.diff(xs).min()
        if gap > TIE_RTOL * max(xs[-1] - xs[0], np.finfo(float).tiny):
            return a, order, xs, draws
    raise InputError(f"{MAX_DRAWS} random projections all tied two distinct points (smallest "
                     f"gap {gap:.3g}); the points are too close to separate in float64: "
                     "rescale them or drop near-duplicates")


def fit_relu_net(Z, y, *, seed: int = 0) -> tuple[ReluNet, dict]:
    """The Theorem 1 network that interpolates (Z, y), and facts about its conditioning.

    Parameters
    ----------
    Z : ndarray (n, d)
        Distinct points (rows).
    y : ndarray (n,)
        Any real labels.
    seed : int
        Draws the projection a (redrawn, up to MAX_DRAWS times, on a tie).

    Returns
    -------
    net : ReluNet
    info : dict
        ``min_diagonal`` = min_i (x_i - b_i), the smallest eigenvalue of the
        triangular A; ``min_gap`` between sorted projections; ``draws``;
        ``max_abs_weight``; ``cond_A`` (2-norm condition number, n <= 2000);
        ``order`` (the sort of the points by projection) and ``x_sorted``.
    """
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if Z.ndim != 2 or y.shape != (len(Z),) or len(Z) < 2:
        raise InputError(f"need Z (n, d) with n >= 2 and y (n,), got {Z.shape} and {y.shape}")
    if not (np.all(np.isfinite(Z)) and np.all(np.isfinite(y))):
        raise InputError("Z and y must be finite; drop or impute NaN/inf rows")
    check_no_duplicates(Z)
    a, order, xs, draws = _project(Z, np.random.default_rng([seed, 5]))
    gaps = np.diff(xs)
    b = np.empty_like(xs)
    b[1:] = xs[:-1] + BIAS_FRACTION * gaps
    b[0] = xs[0] - (1 - BIAS_FRACTION) * gaps[0]
    A = np.maximum(xs[:, None] - b[None, :], 0.0)
    w = solve_triangular(A, y[order], lower=True, check_finite=True)
    info = {"order": order, "x_sorted": xs, "draws": draws, "min_gap": float(gaps.min()),
            "min_diagonal": float(np.min(xs - b)),
            "min_inactive_margin": float(np.min(b[1:] - xs[:-1])),
            "max_abs_weight": float(np.max(np.abs(w))),
            "projection_range": [float(xs[0]), float(xs[-1])],
            "cond_A": float(np.linalg.cond(A)) if len(A) <= 2000 else None}
    return ReluNet(a=a, b=b, w=w), info


def _points(c: ExpressivityConfig):
    """(Z, y, description) for the config: synthetic Gaussian points or scaled images."""
    if c.dataset == "synthetic":
        rng = np.random.default_rng([c.seed, 9])
        d = 10 if c.d is None else c.d
        Z = rng.standard_normal((c.n, d))
        y = rng.integers(0, N_CLASSES_SYNTHETIC, c.n).astype(np.float64)
        return Z, y, {"points": "standard normal", "labels": "random classes 0..9"}
    from kernelfit.pipeline.run import RunConfig, prepare

    # n_test=1: prepare() always loads a test split; the construction never reads it.
    data = prepare(RunConfig(dataset=c.dataset, n_train=c.n, n_test=1, seed=c.seed,
                             preprocessing="scale,flatten", data_home=c.data_home,
                             randomize="random-labels" if c.labels == "random" else "none"),
                   asked=("train",))
    Z = np.asarray(data.train_images, dtype=np.float64)
    if c.d is not None and c.d != Z.shape[1]:
        raise InputError(f"{c.dataset} images have d = {Z.shape[1]}; drop --d or pass "
                         f"--d {Z.shape[1]}")
    return Z, data.train_labels.astype(np.float64), {
        "points": f"{c.dataset} images, " + ", ".join(data.preprocessing),
        "labels": data.randomization}


def run_expressivity(c: ExpressivityConfig) -> dict:
    """Build the network for ``c``, verify it forward, and return the record."""
    validate(c)
    t = time.perf_counter()
    Z, y, described = _points(c)
    timings = {"data": time.perf_counter() - t}
    t = time.perf_counter()
    net, info = fit_relu_net(Z, y, seed=c.seed)
    timings["construct"] = time.perf_counter() - t
    t = time.perf_counter()
    residual = np.abs(net(Z) - y)      # forward pass on the unsorted points, independent of A
    timings["verify"] = time.perf_counter() - t
    order = info.pop("order")
    per_point = {"x_sorted": info.pop("x_sorted").tolist(), "y_sorted": y[order].tolist(),
                 "residual_sorted": residual[order].tolist()}
    n, d = Z.shape
    max_res = float(residual.max())
    notes = []
    if not np.isfinite(max_res) or max_res > c.tol:
        notes.append(f"max |f(z_i) - y_i| = {max_res:.3g} > tol {c.tol:g}: not an exact fit in "
                     f"float64 (smallest diagonal of A {info['min_diagonal']:.3g})")
        warnings.warn(notes[-1], AccuracyWarning, stacklevel=2)
    if net.n_weights != 2 * n + d:
        raise AssertionError(f"network has {net.n_weights} weights, not 2n + d = {2 * n + d}")
    return {"config": asdict(c), "n": n, "d": d, **described, "n_weights": net.n_weights,
            "weights_formula": "2n + d", "max_residual": max_res,
            "mean_residual": float(residual.mean()), "exact_fit": max_res <= c.tol, **info,
            "timings": timings, "notes": notes,
            "network": {"a": net.a.tolist(), "b": net.b.tolist(), "w": net.w.tolist()},
            **per_point}


def expressivity(c: ExpressivityConfig, out_dir, *, log=print) -> dict:
    """The record of ``c`` from ``out_dir`` if one was made with the same settings, else run it."""
    return ResultStore(out_dir).load_or_compute(c.name(), c.settings(),
                                                lambda: run_expressivity(c), log=log)


def summary(r: dict) -> str:
    """A few lines for the terminal."""
    lines = [
        f"points      {r['n']:,} x d = {r['d']} ({r['points']}); labels: {r['labels']}",
        f"network     depth 2, {r['n']:,} ReLUs, {r['n_weights']:,} weights = 2n + d = "
        f"2 x {r['n']:,} + {r['d']}",
        f"fit         max |f(z_i) - y_i| = {r['max_residual']:.3g} (mean "
        f"{r['mean_residual']:.3g}); exact (<= {r['config']['tol']:g}): "
        f"{'yes' if r['exact_fit'] else 'NO'}",
        f"conditioning min_i (x_i - b_i) = {r['min_diagonal']:.3g} (smallest gap "
        f"{r['min_gap']:.3g}), max |w| = {r['max_abs_weight']:.3g}"
        + (f", cond_2(A) = {r['cond_A']:.3g}" if r.get("cond_A") else ""),
    ]
    return "\n".join(lines + [f"note        {n}" for n in r["notes"]]) + "\n"


def plot(r: dict, path, window: int = 30) -> Path:
    """:func:`figure` saved as a PNG at ``path``."""
    from kernelfit.plots import save_figure

    return save_figure(figure(r, window), path)


def figure(r: dict, window: int = 30):
    """The network along its projection over ``window`` consecutive points, and every residual."""
    from kernelfit.plots import pyplot

    plt = pyplot()
    b, w = np.asarray(r["network"]["b"]), np.asarray(r["network"]["w"])
    xs, ys = np.asarray(r["x_sorted"]), np.asarray(r["y_sorted"])
    lo = max(0, len(xs) // 2 - window // 2)
    hi = min(len(xs), lo + window)
    t = np.linspace(b[lo], xs[hi - 1], 4000)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    ax1.plot(t, np.maximum(t[:, None] - b[None, :], 0.0) @ w, lw=1, label="network f")
    ax1.plot(xs[lo:hi], ys[lo:hi], "o", ms=4, label="labels y_i")
    ax1.set_xlabel("projection <a, z>")
    ax1.set_ylabel("label y, output f(z) (class index)")
    ax1.set_title(f"f along a: points {lo + 1}..{hi} of {len(xs):,} (sorted)", fontsize=10)
    ax1.legend(fontsize=8)
    res = np.asarray(r["residual_sorted"])
    ax2.semilogy(np.arange(1, len(res) + 1), np.maximum(res, 1e-20), ".", ms=2)
    ax2.axhline(r["config"]["tol"], color="k", ls=":", lw=1, label=f"tol {r['config']['tol']:g}")
    ax2.set_xlabel("point, in projection order")
    ax2.set_ylabel("|f(z_i) - y_i| (class index)")
    ax2.set_title(f"|f(z_i) - y_i| (0 drawn at 1e-20); max {r['max_residual']:.2g}", fontsize=10)
    ax2.legend(fontsize=8)
    fig.suptitle(f"Theorem 1: a depth-2 ReLU network with {r['n_weights']:,} = 2n + d weights "
                 f"fits {r['n']:,} points (d = {r['d']}, labels: {r['labels']})", fontsize=11)
    fig.tight_layout()
    return fig
