"""KernelInterpolant: the minimum-norm kernel interpolant as a scikit-learn estimator.

fit solves (K + lam I) alpha = Y exactly (lam = 0: interpolation, the paper's
setting), then reports what the paper reports: the RKHS norm
sqrt(trace(alpha^T K alpha)), the training error (0 for an interpolant) and
the relative residual ||(K + lam I) alpha - Y|| / ||Y||.
"""

from __future__ import annotations

import time
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from . import errors
from .backend import get_backend, resolve_backend
from .errors import InputError
from .gram import cross_gram_matvec
from .gram_store import build_stored
from .kernels import KERNELS, make_kernel, row_sq_norms
from .options import Options
from .plan import SOLVERS, plan_fit, residual_rows
from .solvers.operators import KernelOperator
from .solvers.pinv import PINV_MAX_N
from .solvers.refine import relative_norm
from .solvers.solve import solve_matrix_free, solve_stored
from .validation import (
    check_duplicates,
    check_fit_data,
    check_kernel_range,
    check_predict_data,
    check_symmetric,
)


class _KernelInterpolantBase(BaseEstimator):
    # scikit-learn's declarative checks (types and ranges), run first thing in fit;
    # _check_params adds what they cannot say (finite values, gamma xor sigma).
    _parameter_constraints: dict = {
        "kernel": [StrOptions(set(KERNELS) | {"precomputed"})],
        "gamma": [None, Interval(Real, 0, None, closed="neither")],
        "sigma": [None, Interval(Real, 0, None, closed="neither")],
        "degree": [Interval(Integral, 1, None, closed="left")],
        "coef0": [Interval(Real, None, None, closed="neither")],
        "lam": [Interval(Real, 0, None, closed="left")],
        "solver": [StrOptions(set(SOLVERS))],
        "options": [None, Options],
    }

    def __init__(self, kernel="gaussian", *, gamma=None, sigma=None, degree=3, coef0=1.0,
                 lam=0.0, solver="cholesky", options=None):
        self.kernel = kernel
        self.gamma = gamma
        self.sigma = sigma
        self.degree = degree
        self.coef0 = coef0
        self.lam = lam
        self.solver = solver
        self.options = options

    # -- fitting ----------------------------------------------------------
    def _check_params(self) -> None:
        """Validate every parameter in one place; :class:`ParameterError` says what is wrong.

        ``ParameterError`` is both a :class:`kernelfit.errors.InputError` and
        scikit-learn's ``InvalidParameterError`` (whose message format its
        estimator checks look for).
        """
        name = type(self).__name__
        try:
            self._validate_params()
        except InvalidParameterError as err:
            raise errors.ParameterError(str(err)) from None
        for param in ("gamma", "sigma", "coef0", "lam"):
            v = getattr(self, param)
            if v is not None and not np.isfinite(v):
                raise errors.ParameterError(f"The '{param}' parameter of {name} must be a "
                                            f"finite number. Got {v!r} instead.")
        if self.gamma is not None and self.sigma is not None:
            raise errors.ParameterError(f"The 'gamma' and 'sigma' parameters of {name} give the "
                                        "same kernel scale: pass one of them, not both. Got "
                                        f"gamma={self.gamma!r}, sigma={self.sigma!r} instead.")

    def _solve(self, X, Y):
        """Build K, solve, and record the fitted attributes; returns K alpha."""
        opts = self.options or Options()
        n, d = X.shape
        opts = opts.replace(dtype=opts.resolve_dtype(n))
        exact = opts.refines_exactly(self.solver, has_points=self.kernel != "precomputed")
        opts = opts.replace(refine_against="exact" if exact else "stored")
        if self.kernel == "precomputed":
            return self._solve_precomputed(X, Y, opts)
        check_kernel_range(X, opts.dtype)
        singular = False
        if self.lam == 0 and opts.jitter is None:
            # Duplicates in the working dtype: with agreeing targets the minimum-norm
            # interpolant K^+ y exists (rank-revealing path, or CG from zero); with
            # disagreeing ones none does (DuplicatePointsError either way).
            pinv_here = (self.solver == "cholesky" and opts.scheduler is None
                         and not opts.strict and n <= PINV_MAX_N)
            singular = check_duplicates(X, Y, dtype=opts.dtype,
                                        allow_agreeing=pinv_here or self.solver != "cholesky")
        self.kernel_ = make_kernel(self.kernel, gamma=self.gamma, sigma=self.sigma,
                                   degree=self.degree, coef0=self.coef0, X=X)
        self.kernel_.check_dtype(opts.dtype)
        if opts.scheduler is not None:
            sol, be, storage = self._solve_on_cluster(X, Y, opts), get_backend("numpy"), "dask"
        else:
            sol, be, storage = self._solve_here(X, Y, opts, singular)
        sol.info.update(backend=be.name, device=be.device_name, storage=storage)
        self._record(sol)
        self._backend_spec = (be.name, be.device_name)
        self.X_fit_ = np.ascontiguousarray(X, dtype=opts.dtype)
        self._sq_fit = row_sq_norms(self.X_fit_)
        return sol.K_alpha

    def _solve_on_cluster(self, X, Y, opts):
        """K built and solved on a Dask cluster (kernelfit.distributed plans it there)."""
        if opts.backend not in ("numpy", "auto"):
            raise InputError("a Dask solve (scheduler=...) runs on the cluster's workers "
                             "with NumPy; drop --backend torch/cupy or the scheduler")
        from .distributed import solve_distributed  # only now: Dask is imported here
        self.plan_ = None
        return solve_distributed(self.kernel_, X, Y, lam=self.lam, solver=self.solver,
                                 options=opts)

    def _solve_here(self, X, Y, opts, singular: bool):
        """K on this machine, where the plan puts it; returns (Solution, backend, storage)."""
        n, d = X.shape
        be = resolve_backend(opts, self.solver)
        # Where K lives (host, disk tiles, device, host tiles streamed through the
        # device) and every size, decided once before anything large is allocated.
        self.plan_ = plan = plan_fit(n, d, Y.shape[1], solver=self.solver, options=opts,
                                     backend=be)
        if self.solver == "cg-matrix-free":
            sol = solve_matrix_free(self.kernel_, X, Y, lam=self.lam, options=opts)
            sol.info.setdefault("residual_against",
                                f"K recomputed in {plan.dtype} from the points")
            return sol, be, plan.storage
        stages = {}
        Xd = None
        if be.name != "numpy":
            # The points' trip to the device is a stage of its own, so that the
            # Gram's time (and rate) is the device's work alone.
            t = time.perf_counter()
            Xd = be.asarray(X, plan.dtype)
            be.synchronize()
            stages["to_device"] = time.perf_counter() - t
        t = time.perf_counter()
        K, operator = build_stored(X, self.kernel_, plan, be, opts, X_device=Xd)
        be.synchronize()
        stages["gram"] = time.perf_counter() - t
        against = (f"K recomputed in {plan.dtype} from the points" if operator is not None
                   else f"the stored K ({plan.dtype})")
        if opts.refine_against == "exact":
            # Refinement and the reported residual against the exact K, block by block
            # in float64: a float32 factor then yields the float64 interpolant.
            operator = KernelOperator(self.kernel_, X, dtype="float64",
                                      block_size=residual_rows(n), backend=be)
            against = "K recomputed in float64 from the points"
        sol = solve_stored(K, Y, lam=self.lam, solver=self.solver, options=opts,
                           singular=singular, operator=operator, tile=plan.tile)
        sol.timings = {**stages, **sol.timings}
        sol.info.setdefault("residual_against", against)
        return sol, be, plan.storage

    def _solve_precomputed(self, K, Y, opts):
        """X is the n x n Gram matrix itself (built elsewhere, e.g. streamed from features)."""
        n = K.shape[0]
        if K.shape != (n, n):
            raise InputError(f"kernel='precomputed' takes the square n x n Gram matrix as X, "
                             f"got shape {K.shape}")
        self.kernel_ = None
        if opts.scheduler is not None:
            raise InputError("a Dask solve (scheduler=...) builds K on the cluster from the "
                             "points; a precomputed (or streamed) K is solved in memory: drop "
                             "the scheduler, or pass the points (and --no-stream)")
        if self.solver == "cg-matrix-free":
            raise InputError("solver='cg-matrix-free' needs the points, not a precomputed K; "
                             "use 'cholesky' or 'cg'")
        # A given K is a host array: it is solved by the NumPy path whatever the backend
        # (solver_info_["backend"] says so).
        check_symmetric(K)
        self.plan_ = plan_fit(n, 0, Y.shape[1], solver=self.solver, options=opts,
                              gram_allocated=opts.overwrite_gram)
        # A copy unless the caller handed K over: the factor overwrites its lower triangle.
        K = np.array(K, dtype=opts.dtype, order="C", copy=not opts.overwrite_gram)
        sol = solve_stored(K, Y, lam=self.lam, solver=self.solver, options=opts)
        sol.info["backend"] = "numpy"
        sol.info.setdefault("residual_against", f"the given K ({opts.dtype})")
        self._record(sol)
        return sol.K_alpha

    def _record(self, sol) -> None:
        self.dual_coef_ = sol.alpha
        self.norm_ = sol.norm
        self.relative_residual_ = sol.relative_residual
        self.n_iter_ = sol.iterations
        self.timings_ = sol.timings
        self.converged_ = bool(sol.converged)
        self.warnings_ = list(sol.warnings)
        self.solver_info_ = {"jitter": 0.0, **sol.info, "shift": sol.shift,
                             "converged": self.converged_}

    def _decision(self, X):
        check_is_fitted(self, "dual_coef_")
        X = check_predict_data(self, X)
        if self.kernel == "precomputed":
            # X is k(test, train), (m, n): float64 products a row block at a time,
            # so a float32 X is never upcast whole.
            out = np.empty((len(X),) + self.dual_coef_.shape[1:])
            step = max(1, 2**25 // max(X.shape[1], 1))
            for i in range(0, len(X), step):
                out[i:i + step] = np.asarray(X[i:i + step], dtype=np.float64) @ self.dual_coef_
            return out
        # The fit's backend predicts too (a model loaded elsewhere falls back to NumPy).
        be = get_backend(*getattr(self, "_backend_spec", ("numpy", "cpu")))
        n = self.X_fit_.shape[0]
        # float64 temporaries of at most ~256 MB per block, whatever n is.
        block = int(max(64, min(4096, 2**25 // max(n, 1))))
        return cross_gram_matvec(self.kernel_, X, self.X_fit_, self.dual_coef_,
                                 dtype=self.X_fit_.dtype, block_size=block,
                                 sq_cols=self._sq_fit if be.name == "numpy" else None,
                                 backend=be)


class KernelInterpolant(RegressorMixin, _KernelInterpolantBase):
    """Minimum-norm kernel interpolant (kernel "ridgeless" regression).

    Solves (K + lam I) alpha = Y with K_ij = k(x_i, x_j); predicts
    f(x) = sum_i alpha_i k(x, x_i). With lam = 0 the fit interpolates the
    training targets exactly and is the minimum-RKHS-norm function that does.

    Parameters
    ----------
    kernel : {"gaussian", "laplacian", "linear", "polynomial", "precomputed"}
        "precomputed": ``fit`` takes the n x n Gram matrix K as X and
        ``predict`` the m x n matrix k(test, train).
    gamma, sigma : float, optional
        Kernel scale, as gamma or as bandwidth sigma (gaussian:
        gamma = 1 / (2 sigma^2)). Neither: gamma = 1 / (d Var(X)).
    degree, coef0 : polynomial kernel parameters.
    lam : float >= 0
        Ridge added to K's diagonal; 0 interpolates.
    solver : {"cholesky", "cg", "cg-matrix-free"}
        Exact in-place tiled Cholesky; Nyström-preconditioned block CG on the
        stored K; or the same CG with K's blocks recomputed every iteration
        (memory O(n d) instead of O(n^2)).
    options : kernelfit.Options, optional
        dtype, tile and block sizes, threads, jitter, refinement, CG tolerance.

    Attributes
    ----------
    dual_coef_ : ndarray (n,) or (n, n_outputs)
    norm_ : float
        sqrt(trace(alpha^T K alpha)), the interpolant's RKHS norm.
    train_error_ : float
        ||K alpha - Y||_F / ||Y||_F (0 for an exact interpolant).
    relative_residual_ : float
        ||(K + lam I) alpha - Y||_F / ||Y||_F: how exactly the system was solved
        (the absolute residual when Y is all zeros).
    converged_ : bool
        False when the solve is less exact than its dtype allows (relative
        residual above :func:`kernelfit.solvers.solve.residual_limit`: 1e-8
        sqrt(n) in float64, 1e-4 sqrt(n) in float32) or CG stopped short of
        ``tol``.
    warnings_ : list of str
        Each way the fit was not exact, in words (also raised as
        :class:`kernelfit.errors.AccuracyWarning`, or as
        :class:`kernelfit.errors.AccuracyError` with ``Options(strict=True)``).
        A K singular to working precision (duplicate points with agreeing
        targets, a very wide bandwidth) is answered by the minimum-norm
        solution K^+ y, with its rank in ``solver_info_["rank"]``.
    solver_info_ : dict
        What the solver did: "converged", "jitter" (and the attempts of
        jitter="auto"), "rank" and "cutoff" when the rank-revealing path ran,
        CG's "iterations" and "residuals", "residual_limit".
    timings_ : dict
        Seconds per stage (gram, factor, solve, refine, residual).
    kernel_ : kernelfit.kernels.Kernel
        The kernel with its resolved scale.
    """

    def fit(self, X, y):
        self._check_params()
        X, y = check_fit_data(self, X, y, y_numeric=True)
        Y = np.asarray(y, dtype=np.float64)
        self._y_1d = Y.ndim == 1
        Y2 = Y.reshape(len(Y), -1)
        K_alpha = self._solve(X, Y2)
        self.train_error_ = relative_norm(K_alpha - Y2, Y2)
        if self._y_1d:
            self.dual_coef_ = self.dual_coef_[:, 0]
        return self

    def predict(self, X):
        return self._decision(X)      # 1-D or 2-D, as dual_coef_ (and y) were

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.input_tags.pairwise = self.kernel == "precomputed"
        return tags


class KernelInterpolantClassifier(ClassifierMixin, _KernelInterpolantBase):
    """The interpolant of one-hot labels; predicts the class with the largest output.

    Same parameters and attributes as :class:`KernelInterpolant`; labels are
    encoded as one-hot rows (1 for the class, 0 elsewhere), so
    ``dual_coef_`` has one column per class and ``train_error_`` is the
    fraction of training points misclassified (0 for an interpolant).
    """

    def fit(self, X, y):
        self._check_params()
        X, y = check_fit_data(self, X, y, y_numeric=False)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        Y = np.zeros((len(y), len(self.classes_)))
        Y[np.arange(len(y)), codes] = 1.0
        K_alpha = self._solve(X, Y)
        self.train_error_ = float(np.mean(np.argmax(K_alpha, axis=1) != codes))
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.kernel == "precomputed"
        return tags

    def decision_function(self, X):
        F = self._decision(X)
        # binary: one score, positive for classes_[1], as scikit-learn expects
        return F[:, 1] - F[:, 0] if len(self.classes_) == 2 else F

    def predict(self, X):
        F = self._decision(X)
        return self.classes_[np.argmax(F, axis=1)]
