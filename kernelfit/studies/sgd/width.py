"""Where gradient descent on a ReLU network meets its neural tangent kernel, width by width.

The paper's section 5 argues from a linear model: gradient descent started at
zero lands on the minimum-norm interpolant. The theory that followed makes the
argument exact for networks: as a network in the NTK parameterization grows
wide, training it by gradient descent on the squared loss moves it as its own
linearization around the random start does, whose outputs are kernel regression
with the network's neural tangent kernel Theta (Jacot et al., NeurIPS 2018), and
the distance between the two shrinks like width^-1/2 (Lee et al., NeurIPS 2019,
"Wide neural networks of any depth evolve as linear models under gradient
descent"). This module measures that distance on real images.

The network is neural-tangents' ``stax.serial(Dense(w, W_std=sw, b_std=0), Relu(),
Dense(k, W_std=sw, b_std=0))`` in the NTK parameterization,

    f(x) = (sw / sqrt(w)) W2 relu((sw / sqrt(d)) W1 x),   W1, W2 entries N(0, 1),

whose infinite-width NTK is :func:`kernelfit.engine.network_kernels.relu_network_kernels`
with depth 1 (the same sw; b_std = 0, so the network has no biases: with
b_std = 0 a stax bias never moves the outputs). With k outputs the limit kernel
is Theta times the k x k identity, so each output is one kernel regression.

Loss and step size. The loss is the plain sum L = 1/2 sum_i ||f(x_i) - y_i||^2
over the n training points (one-hot targets y_i). One gradient step of the
network linearized at its start moves the training outputs by
f_{t+1}(X) = f_t(X) - eta J J^T (f_t(X) - Y), and J J^T -> Theta(X, X), so the
residual is multiplied by (I - eta Theta) each step: eigen-direction i by
1 - eta lambda_i, which contracts exactly when 0 < eta lambda_i < 2, that is
eta < 2 / lambda_max(Theta). (With the mean loss 1/(2n) sum_i the same bound
reads eta < 2n / lambda_max.) The step is eta = lr_factor / lambda_max, with
lr_factor in (0, 2); 1 by default, half the bound, which leaves room for the
finite-width kernel's own top eigenvalue, a little above or below the limit's.
SGD takes the same step on the sum over a batch B (no n / b rescaling): its
kernel step matrix is Theta(B, B), whose top eigenvalue is at most
lambda_max(Theta) (Cauchy interlacing), so the same eta is stable for every
batch; one SGD epoch then moves about as far as one gradient-descent step,
and "time t" counts gradient-descent steps and SGD epochs alike.

The linearized prediction. For gradient descent with Theta = V diag(lambda) V^T,

    f_t^lin(x) = f_0(x) + Theta(x, X) V diag(g_t(lambda)) V^T (Y - f_0(X)),

where f_0 is the same network's initial output. Lee et al. write it for
gradient flow, g_t = (1 - exp(-eta lambda t)) / lambda; for the discrete steps
actually taken it is g_t = (1 - (1 - eta lambda)^t) / lambda (the linear model
trained by the same gradient descent, exactly). The two agree while
eta lambda << 1 and differ in the top directions at eta ~ 1 / lambda_max,
where the flow formula lags the steps by a width-independent amount: the
distance reported is to the discrete form, the one to the flow form is
recorded beside it (``dist_flow``). For SGD the linearized prediction is the
kernel model f <- f - eta Theta(., B) (f(B) - Y_B) run from the same f_0 over
the same batches, in float64. At t = 0 both are f_0; as t -> infinity both
interpolate: f_0 + Theta(x, X) Theta^-1 (Y - f_0(X)).

Measured at each time t, on the test set: ||f_t^net - f_t^lin|| / ||f_t^lin||
(Frobenius over points and outputs, float64), both test errors (so no width
needs to be trained to zero error), both training errors; and, on a subset of
the training points, the finite-width kernel's distance to Theta at the start
and how far it moved by the end of training, the "lazy training" that makes
the linearization hold. One record per (width, seed) in a
:class:`~kernelfit.pipeline.results.ResultStore`, so a stopped study resumes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from kernelfit.engine.network_kernels import DEFAULT_WEIGHT_STD, check_network_params
from kernelfit.errors import InputError
from kernelfit.params import one_of, real, whole
from kernelfit.pipeline.results import ResultStore, result_settings, settings_key, with_data

OPTIMIZERS = ("gd", "sgd")
DTYPES = ("float32", "float64")
#: The widths of the full study: 64 to 16,384, doubling.
FULL_WIDTHS = tuple(2 ** k for k in range(6, 15))


def default_times(epochs: int) -> tuple:
    """0, 1, 2, 4, ... up to ``epochs`` (which is always one of them)."""
    return tuple(sorted({0, epochs, *(2 ** k for k in range(int(math.log2(epochs)) + 1))}))


@dataclass
class WidthStudy:
    """One width study: every (width, seed) point shares the data, the kernel and the step."""

    dataset: str = "mnist"
    n_train: int = 1000
    n_test: int = 1000
    data_seed: int = 0                  # which subset of the data (the same for every point)
    widths: tuple = FULL_WIDTHS
    seeds: tuple = (0, 1, 2)            # network initialization and SGD batch order
    optimizers: tuple = OPTIMIZERS
    epochs: int = 32                    # gradient-descent steps; SGD epochs
    times: tuple | None = None          # when to measure (None: default_times(epochs))
    lr_factor: float = 1.0              # eta = lr_factor / lambda_max(Theta), in (0, 2)
    lr: float | None = None             # eta itself (then lr_factor is unused); < 2 / lambda_max
    batch_size: int = 100               # SGD
    weight_std: float = DEFAULT_WEIGHT_STD
    dtype: str = "float32"              # the network's weights; the distances are float64
    ntk_points: int = 200               # training points the finite-width kernel is measured on
    data_home: str | None = None

    @property
    def checkpoints(self) -> tuple:
        return default_times(self.epochs) if self.times is None else tuple(self.times)

    def validate(self) -> None:
        """Raise :class:`InputError` for any setting that cannot run, saying what to pass."""
        whole("n_train", self.n_train, 2, hint="training images")
        whole("n_test", self.n_test, 1)
        whole("data_seed", self.data_seed, 0)
        whole("epochs", self.epochs, 1)
        whole("batch_size", self.batch_size, 1, high=self.n_train,
              hint=f"at most n_train = {self.n_train}")
        whole("ntk_points", self.ntk_points, 2, high=self.n_train,
              hint=f"at most n_train = {self.n_train}")
        one_of("dtype", self.dtype, DTYPES)
        check_network_params(1, self.weight_std, 0.0)
        _nonempty_unique("widths", self.widths, low=1)
        _nonempty_unique("seeds", self.seeds, low=0)
        _nonempty_unique("times", self.checkpoints, low=0, high=self.epochs,
                         hint=f"each in [0, epochs = {self.epochs}]")
        if not self.optimizers or len(set(self.optimizers)) != len(self.optimizers):
            raise InputError(f"optimizers must name gd and/or sgd once each, got "
                             f"{self.optimizers!r}")
        for o in self.optimizers:
            one_of("optimizer", o, OPTIMIZERS)
        real("lr_factor", self.lr_factor, 0, 2, lo_open=True, hi_open=True,
             hint="eta = lr_factor / lambda_max(Theta); 2 is the stability limit")
        real("lr", self.lr, 0, lo_open=True, allow_none=True,
             hint="None: lr_factor / lambda_max(Theta)")

    def settings(self) -> dict:
        """What every point's result depends on besides its width and seed (validated)."""
        self.validate()
        d = asdict(self)
        for k in ("widths", "seeds"):
            d.pop(k)
        d["times"] = list(self.checkpoints)
        d["optimizers"] = list(self.optimizers)
        return with_data(result_settings(d), self.dataset, self.data_home)


def _nonempty_unique(name, values, *, low, high=None, hint="") -> None:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or not len(values):
        raise InputError(f"{name} must be a non-empty list of integers, got {values!r}")
    for v in values:
        whole(f"each of {name}", v, low, high=high, hint=hint)
    if len(set(values)) != len(values):
        raise InputError(f"{name} lists a value twice: {list(values)}")


def step_size(lam_max: float, *, lr: float | None = None, lr_factor: float = 1.0) -> float:
    """The gradient-descent step eta on the loss 1/2 sum_i ||f(x_i) - y_i||^2.

    ``lr_factor / lam_max`` (``lr`` None), else ``lr``; refused (InputError) unless
    0 < eta < 2 / lam_max, where the linearized dynamics contract (module docstring).
    """
    real("lambda_max(Theta)", lam_max, 0, lo_open=True)
    if lr is None:
        real("lr_factor", lr_factor, 0, 2, lo_open=True, hi_open=True,
             hint="eta = lr_factor / lambda_max(Theta); 2 is the stability limit")
        return float(lr_factor) / float(lam_max)
    real("lr", lr, 0, lo_open=True)
    if lr >= 2.0 / lam_max:
        raise InputError(f"lr = {lr:.4g} is at or beyond the stability limit 2 / lambda_max("
                         f"Theta) = {2.0 / lam_max:.4g} of gradient descent on the sum of "
                         f"squared errors (lambda_max = {lam_max:.4g}); pass a smaller lr, or "
                         "lr_factor in (0, 2) instead")
    return float(lr)


# -- the network ------------------------------------------------------------------------

class ReluNet:
    """One hidden ReLU layer in the NTK parameterization (stax: Dense, Relu, Dense; no bias).

    ``f(X) = (sw / sqrt(w)) relu((sw / sqrt(d)) X W1^T) W2^T``, ``W1`` (w, d) and
    ``W2`` (k, w) with N(0, 1) entries drawn from ``rng``, stored in ``dtype``.
    """

    def __init__(self, d: int, width: int, k: int, rng, *, weight_std=DEFAULT_WEIGHT_STD,
                 dtype="float32"):
        dt = np.dtype(dtype)
        self.W1 = rng.standard_normal((width, d), dtype=dt)
        self.W2 = rng.standard_normal((k, width), dtype=dt)
        self.a = dt.type(weight_std / math.sqrt(d))      # first Dense: 1 / sqrt(fan-in d)
        self.b = dt.type(weight_std / math.sqrt(width))  # readout: 1 / sqrt(fan-in w)
        self.dtype = dt

    def forward(self, X):
        """(outputs (n, k), hidden activations relu(H) (n, w)); H is scaled in place."""
        H = X @ self.W1.T
        np.multiply(H, self.a, out=H)
        A = np.maximum(H, 0, out=H)
        return (A @ self.W2.T) * self.b, A

    def __call__(self, X):
        return self.forward(X)[0]

    def gradients(self, X, R, A=None):
        """(dL/dW1, dL/dW2) of L = sum of R * f(X) (R = f - Y gives the squared loss's).

        ``A``: the activations relu(H) from :meth:`forward` (relu'(H) = 1[A > 0]).
        """
        if A is None:
            A = self.forward(X)[1]
        R = R.astype(self.dtype, copy=False)
        gW2 = (R.T @ A) * self.b
        dH = R @ self.W2
        np.multiply(dH, A > 0, out=dH)
        gW1 = dH.T @ X
        np.multiply(gW1, self.a * self.b, out=gW1)
        return gW1, gW2

    def step(self, X, Y, eta, F=None, A=None) -> None:
        """One gradient step with step ``eta`` on 1/2 sum ||f(X) - Y||^2."""
        if F is None:
            F, A = self.forward(X)
        g1, g2 = self.gradients(X, F - Y, A)
        e = self.dtype.type(eta)
        self.W1 -= np.multiply(g1, e, out=g1)
        self.W2 -= e * g2

    def empirical_ntk(self, X) -> np.ndarray:
        """The finite-width tangent kernel J J^T on ``X`` (float64), averaged over the outputs.

        Readout weights: (sw^2 / w) relu(H) relu(H)^T; first layer:
        (sw^2 / w) (1[H > 0] diag(mean_k W2_k^2) 1[H > 0]^T) * (sw^2 / d) X X^T.
        """
        X = np.asarray(X, dtype=np.float64)
        H = X @ self.W1.T.astype(np.float64) * float(self.a)
        A, D = np.maximum(H, 0), (H > 0).astype(np.float64)
        b2 = float(self.b) ** 2
        v = np.mean(self.W2.astype(np.float64) ** 2, axis=0)
        return b2 * (A @ A.T) + b2 * ((D * v) @ D.T) * (float(self.a) ** 2 * (X @ X.T))


# -- the linearized prediction -----------------------------------------------------------

class LinearizedNTK:
    """Closed-form outputs of the network linearized at its start, trained on (X, Y).

    Holds Theta(X, X)'s eigendecomposition (float64, checked: all eigenvalues
    positive, reconstruction to ``tol``) and Theta(x, X) V for the test points.
    """

    def __init__(self, theta_train, theta_test, eta: float, *, tol: float = 1e-10):
        theta_train = np.asarray(theta_train, dtype=np.float64)
        lam, V = np.linalg.eigh((theta_train + theta_train.T) / 2)
        recon = np.linalg.norm((V * lam) @ V.T - theta_train) / np.linalg.norm(theta_train)
        if not (lam[0] > 0 and recon <= tol):
            raise InputError(f"the NTK Gram matrix is not numerically positive definite "
                             f"(smallest eigenvalue {lam[0]:.3g}, eigendecomposition "
                             f"residual {recon:.2g}): duplicate or zero images?")
        self.lam, self.V, self.eta = lam, V, float(eta)
        self.theta_train = theta_train
        self.theta_test = np.asarray(theta_test, dtype=np.float64)
        self.test_V = self.theta_test @ V
        self.eig_residual = float(recon)

    def gain(self, t, *, flow: bool = False) -> np.ndarray:
        """g_t(lambda): (1 - (1 - eta lambda)^t) / lambda, or (1 - exp(-eta lambda t)) / lambda
        for gradient flow; 1 / lambda at t = inf."""
        x = self.eta * self.lam
        if np.isinf(t):
            return 1.0 / self.lam
        if flow:
            return -np.expm1(-x * t) / self.lam
        # 1 - (1 - x)^t: as -expm1(t log1p(-x)) where x is small (no cancellation); the
        # power itself where 1 - x is near 0 or negative (x < 2; t is a whole step count).
        small = x < 0.5
        g = np.where(small, -np.expm1(t * np.log1p(-np.minimum(x, 0.5))), 1.0 - (1.0 - x) ** t)
        return g / self.lam

    def outputs(self, f0_train, f0_test, Y, t, *, flow: bool = False):
        """(train, test) outputs at time t (steps; ``np.inf``: the interpolant), float64."""
        r0 = np.asarray(Y, dtype=np.float64) - f0_train
        c = self.gain(t, flow=flow)[:, None] * (self.V.T @ r0)
        return f0_train + self.V @ (self.lam[:, None] * c), f0_test + self.test_V @ c

    def sgd_step(self, f_train, f_test, Y, batch) -> None:
        """One SGD step of the kernel model on ``batch``, in place: f -= eta Theta(., B) r_B."""
        r = f_train[batch] - Y[batch]
        f_test -= self.eta * (self.theta_test[:, batch] @ r)
        f_train -= self.eta * (self.theta_train[:, batch] @ r)


# -- one (width, seed) point -------------------------------------------------------------

@dataclass
class Shared:
    """What every point of a study shares: the data, one-hot targets, the kernel, the step."""

    X: np.ndarray           # (n, d) in the network's dtype
    X_test: np.ndarray
    y: np.ndarray           # class codes
    y_test: np.ndarray
    Y: np.ndarray           # one-hot, float64
    lin: LinearizedNTK
    eta: float
    facts: dict


def prepare_shared(study: WidthStudy, X, y, X_test, y_test) -> Shared:
    """The NTK on (X, X_test), its eigendecomposition and the step, for arrays given."""
    from kernelfit.engine.network_kernels import relu_network_kernels

    t = time.perf_counter()
    X64, T64 = np.asarray(X, dtype=np.float64), np.asarray(X_test, dtype=np.float64)
    classes, codes = np.unique(y, return_inverse=True)
    test_codes = np.searchsorted(classes, y_test)
    if not np.all(classes[np.minimum(test_codes, len(classes) - 1)] == y_test):
        raise InputError("the test set holds a class the training subset lacks; take a "
                         "larger n_train")
    Y = np.eye(len(classes))[codes]
    d = X64.shape[1]
    sq, sq_t = np.sum(X64 ** 2, axis=1), np.sum(T64 ** 2, axis=1)
    ntk = {"d": d, "depth": 1, "weight_std": study.weight_std, "bias_std": 0.0}
    theta = relu_network_kernels(X64 @ X64.T, sq[:, None], sq[None, :], **ntk)[1]
    theta_t = relu_network_kernels(T64 @ X64.T, sq_t[:, None], sq[None, :], **ntk)[1]
    lam_max = float(np.linalg.eigvalsh(theta)[-1])
    eta = step_size(lam_max, lr=study.lr, lr_factor=study.lr_factor)
    lin = LinearizedNTK(theta, theta_t, eta)
    _, f_inf = lin.outputs(np.zeros_like(Y), np.zeros((len(T64), Y.shape[1])), Y, np.inf)
    facts = {"n_train": len(X64), "n_test": len(T64), "dim": d, "n_classes": len(classes),
             "lambda_max": lam_max, "lambda_min": float(lin.lam[0]), "eta": eta,
             "eta_lambda_max": eta * lam_max, "eig_residual": lin.eig_residual,
             "ntk_interpolant_test_error": float(np.mean(np.argmax(f_inf, 1) != test_codes)),
             "kernel_seconds": time.perf_counter() - t}
    dt = np.dtype(study.dtype)
    return Shared(X64.astype(dt), T64.astype(dt), codes, test_codes, Y, lin, eta, facts)


def _error(F, codes) -> float:
    return float(np.mean(np.argmax(F, axis=1) != codes))


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _measure(s: Shared, t: int, net_train, net_test, lin_train, lin_test, extra=None) -> dict:
    net_train, net_test = net_train.astype(np.float64), net_test.astype(np.float64)
    if not (np.all(np.isfinite(net_train)) and np.all(np.isfinite(net_test))):
        raise InputError(f"training diverged by time {t} (eta = {s.eta:.4g}, eta lambda_max = "
                         f"{s.facts['eta_lambda_max']:.3g}); pass a smaller lr or lr_factor")
    return {"t": t, "dist": _rel(net_test, lin_test), "dist_train": _rel(net_train, lin_train),
            **(extra or {}),
            "test_error_net": _error(net_test, s.y_test), "test_error_lin": _error(lin_test,
                                                                                   s.y_test),
            "train_error_net": _error(net_train, s.y), "train_error_lin": _error(lin_train, s.y),
            "train_mse_net": float(np.mean(np.sum((net_train - s.Y) ** 2, axis=1)))}


def train_gd(s: Shared, net: ReluNet, times, f0) -> list[dict]:
    """Full-batch gradient descent for max(times) steps, measured at ``times``."""
    f0_train, f0_test = f0
    history = []
    for step in range(max(times) + 1):
        F, A = net.forward(s.X)
        if step in times:
            lin_train, lin_test = s.lin.outputs(f0_train, f0_test, s.Y, step)
            flow_test = s.lin.outputs(f0_train, f0_test, s.Y, step, flow=True)[1]
            net_test = net(s.X_test).astype(np.float64)
            history.append(_measure(s, step, F, net_test, lin_train, lin_test,
                                    {"dist_flow": _rel(net_test, flow_test)}))
        if step < max(times):
            net.step(s.X, s.Y, s.eta, F, A)
    return history


def train_sgd(s: Shared, net: ReluNet, times, f0, batch_size: int, rng) -> list[dict]:
    """Mini-batch SGD for max(times) epochs beside the kernel model on the same batches."""
    lin_train, lin_test = (f.astype(np.float64).copy() for f in f0)
    n, history = len(s.X), []
    for epoch in range(max(times) + 1):
        if epoch in times:
            history.append(_measure(s, epoch, net(s.X), net(s.X_test), lin_train, lin_test))
        if epoch == max(times):
            break
        perm = rng.permutation(n)
        for start in range(0, n, batch_size):
            batch = perm[start:start + batch_size]
            net.step(s.X[batch], s.Y[batch], s.eta)
            s.lin.sgd_step(lin_train, lin_test, s.Y, batch)
    return history


def run_point(study: WidthStudy, s: Shared, width: int, seed: int) -> dict:
    """Train one width from one seed by each optimizer; the record's payload."""
    times = set(study.checkpoints)
    sub = np.random.default_rng([seed, 5]).choice(len(s.X), study.ntk_points, replace=False)
    theta_sub = s.lin.theta_train[np.ix_(sub, sub)]
    out = {"width": width, "seed": seed, **s.facts, "optimizer": {}}
    for opt in study.optimizers:
        t0 = time.perf_counter()
        # The same initial network for both optimizers: f_0 and the start are shared.
        net = ReluNet(s.X.shape[1], width, s.Y.shape[1], np.random.default_rng([seed, width]),
                      weight_std=study.weight_std, dtype=study.dtype)
        f0 = (net(s.X).astype(np.float64), net(s.X_test).astype(np.float64))
        ntk0 = net.empirical_ntk(s.X[sub])
        if opt == "gd":
            history = train_gd(s, net, times, f0)
        else:
            history = train_sgd(s, net, times, f0, study.batch_size,
                                np.random.default_rng([seed, 1]))
        ntk_end = net.empirical_ntk(s.X[sub])
        out["optimizer"][opt] = {
            "history": history,
            "ntk_init_dist": _rel(ntk0, theta_sub), "ntk_change": _rel(ntk_end, ntk0),
            "seconds": time.perf_counter() - t0}
    out["ntk_points"] = study.ntk_points
    return out


# -- the study ---------------------------------------------------------------------------

def load_data(study: WidthStudy):
    """(X, y, X_test, y_test): the study's subset, pixels scaled to [0, 1], one row per image."""
    from kernelfit.pipeline.run import RunConfig, prepare

    data = prepare(RunConfig(dataset=study.dataset, n_train=study.n_train,
                             n_test=study.n_test, seed=study.data_seed,
                             preprocessing="scale,flatten", data_home=study.data_home))
    return data.train_images, data.train_labels, data.test_images, data.test_labels


def point_name(width: int, seed: int, settings: dict) -> str:
    return f"width{width:05d}-seed{seed}-{settings_key(settings, 8)}"


def run_width_study(study: WidthStudy, out_dir, *, log=print, progress: bool = True) -> list:
    """Every (width, seed) record of ``study``: reused from ``out_dir`` when made with the
    same settings, else trained now (the data and kernel are prepared once, when needed)."""
    base = study.settings()
    store, shared, records = ResultStore(out_dir), None, []
    for width in study.widths:
        for seed in study.seeds:
            settings = {**base, "width": int(width), "seed": int(seed)}

            def compute(width=width, seed=seed):
                nonlocal shared
                if shared is None:
                    shared = prepare_shared(study, *load_data(study))
                rec = run_point(study, shared, int(width), int(seed))
                log(point_line(rec))
                return rec

            records.append(store.load_or_compute(point_name(width, seed, settings), settings,
                                                 compute, log=log, progress=progress))
    return records


def point_line(rec: dict) -> str:
    """One log line: each optimizer's last distance and test errors."""
    parts = []
    for opt, r in rec["optimizer"].items():
        m = r["history"][-1]
        parts.append(f"{opt} t={m['t']}: dist {m['dist']:.3g}, test error net "
                     f"{100 * m['test_error_net']:.1f}% / lin {100 * m['test_error_lin']:.1f}% "
                     f"({r['seconds']:.1f} s)")
    return f"width {rec['width']} seed {rec['seed']}: " + "; ".join(parts)


#: ``kernelfit sgd width --small``: the embedded digits, four widths, seconds on a laptop.
SMALL = {"dataset": "digits", "n_train": 200, "n_test": 200, "widths": (64, 256, 1024, 4096),
         "seeds": (0, 1, 2), "epochs": 8, "ntk_points": 100}


def small_study(**overrides) -> WidthStudy:
    """The small study (:data:`SMALL`), with ``overrides``."""
    return WidthStudy(**{**SMALL, **overrides})
