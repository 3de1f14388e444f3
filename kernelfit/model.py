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

from kernelfit import errors
from kernelfit.engine.backend import get_backend
from kernelfit.engine.gram.panels import cross_gram_matvec
from kernelfit.engine.kernels import KERNELS, check_scale, make_kernel, row_sq_norms
from kernelfit.engine.network_kernels import DEFAULT_WEIGHT_STD
from kernelfit.engine.plan import SOLVERS, plan_fit
from kernelfit.engine.sizes import predict_rows, residual_rows
from kernelfit.engine.solvers.minimum_norm import pinv_allowed
from kernelfit.engine.solvers.solve import solve_matrix_free, solve_stored
from kernelfit.engine.storage.build import stored_for_fit
from kernelfit.engine.storage.operators import KernelOperator
from kernelfit.errors import InputError
from kernelfit.options import Options
from kernelfit.validation import (
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
        "depth": [Interval(Integral, 0, None, closed="left")],
        "weight_std": [Interval(Real, 0, None, closed="neither")],
        "bias_std": [Interval(Real, 0, None, closed="left")],
        "lam": [Interval(Real, 0, None, closed="left")],
        "solver": [StrOptions(set(SOLVERS))],
        "options": [None, Options],
    }

    def __init__(self, kernel="gaussian", *, gamma=None, sigma=None, degree=3, coef0=1.0,
                 lam=0.0, solver="cholesky", options=None, depth=1,
                 weight_std=DEFAULT_WEIGHT_STD, bias_std=0.0):
        self.kernel = kernel
        self.gamma = gamma
        self.sigma = sigma
        self.degree = degree
        self.coef0 = coef0
        self.depth = depth
        self.weight_std = weight_std
        self.bias_std = bias_std
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
        for param in ("gamma", "sigma", "coef0", "lam", "weight_std", "bias_std"):
            v = getattr(self, param)
            if v is not None and not np.isfinite(v):
                raise errors.ParameterError(f"The '{param}' parameter of {name} must be a "
                                            f"finite number. Got {v!r} instead.")
        check_scale(self.gamma, self.sigma, self.kernel)

    def fit_planned(self, X, y, plan):
        """``fit`` with the Plan its caller resolved (:func:`kernelfit.engine.plan.plan_fit`).

        A run plans the whole of itself (K, k(test, train), the features) before
        computing anything, and hands the fit that one Plan instead of letting it
        plan again; the Plan must describe this fit (n, d, solver), and is
        ``plan_`` afterwards.
        """
        return self._fit(X, y, plan)

    def _plan(self, n: int, d: int, n_outputs: int):
        """This fit's one Plan (:func:`kernelfit.engine.plan.plan_fit`): every setting resolved."""
        precomputed = self.kernel == "precomputed"
        opts = self.options or Options()
        return plan_fit(n, 0 if precomputed else d, n_outputs, solver=self.solver,
                        options=opts, precomputed=precomputed,
                        gram_allocated=precomputed and opts.overwrite_gram)

    def _check_plan(self, plan, n: int, d: int) -> None:
        """A plan handed to :meth:`fit_planned` must be this fit's."""
        want = (n, 0 if self.kernel == "precomputed" else d, self.solver,
                self.kernel == "precomputed")
        if (plan.n, plan.d, plan.solver, plan.precomputed) != want:
            raise InputError(f"the plan given is for n={plan.n}, d={plan.d}, solver="
                             f"{plan.solver!r}, precomputed={plan.precomputed}, but this fit "
                             f"has n={want[0]}, d={want[1]}, solver={want[2]!r}, "
                             f"precomputed={want[3]}: plan the fit it describes")

    def _solve(self, X, Y, plan=None):
        """Plan (once), build K, solve, and record the fitted attributes; returns the Solution."""
        n, d = X.shape
        if plan is None:
            plan = self._plan(n, d, Y.shape[1])
        else:
            self._check_plan(plan, n, d)
        self.plan_ = plan
        opts = plan.options
        if self.kernel == "precomputed":
            return self._solve_precomputed(X, Y, plan)
        check_kernel_range(X, plan.dtype)
        singular = False
        if self.lam == 0 and opts.jitter is None:
            # Duplicates in the working dtype: with agreeing targets the minimum-norm
            # interpolant K^+ y exists (rank-revealing path, or CG from zero); with
            # disagreeing ones none does (DuplicatePointsError either way).
            pinv_here = self.solver == "cholesky" and opts.scheduler is None \
                and pinv_allowed(n, self.lam, opts)
            singular = check_duplicates(X, Y, dtype=plan.dtype,
                                        allow_agreeing=pinv_here or self.solver != "cholesky")
        self.kernel_ = make_kernel(self.kernel, gamma=self.gamma, sigma=self.sigma,
                                   degree=self.degree, coef0=self.coef0, X=X,
                                   depth=self.depth, weight_std=self.weight_std,
                                   bias_std=self.bias_std)
        self.kernel_.check_dtype(plan.dtype)
        be = get_backend(plan.backend, plan.device)
        if opts.scheduler is not None:
            from kernelfit.distributed import solve_distributed  # only now: Dask is imported here
            sol = solve_distributed(self.kernel_, X, Y, lam=self.lam, solver=self.solver,
                                    options=opts)
        else:
            sol = self._solve_here(X, Y, plan, be, singular)
        sol.info.update(backend=be.name, device=be.device_name, storage=plan.storage)
        self._record(sol)
        self._backend_spec = (be.name, be.device_name)
        self.X_fit_ = np.ascontiguousarray(X, dtype=plan.dtype)
        self._sq_fit = row_sq_norms(self.X_fit_)
        return sol

    def _solve_here(self, X, Y, plan, be, singular: bool):
        """K on this machine, where the plan puts it; returns the Solution."""
        opts = plan.options
        if self.solver == "cg-matrix-free":
            sol = solve_matrix_free(self.kernel_, X, Y, lam=self.lam, options=opts)
            sol.info.setdefault("residual_against",
                                f"K recomputed in {plan.dtype} from the points")
            return sol
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
        # K on disk: its tiles go once the solve has its answer (unless keep_scratch).
        with stored_for_fit(X, self.kernel_, plan, be, opts, X_device=Xd) as (K, operator):
            be.synchronize()
            stages["gram"] = time.perf_counter() - t
            against = (f"K recomputed in {plan.dtype} from the points" if operator is not None
                       else f"the stored K ({plan.dtype})")
            if plan.refine_against == "exact":
                # Refinement and the reported residual against the exact K, block by block
                # in float64: a float32 factor then yields the float64 interpolant.
                operator = KernelOperator(self.kernel_, X, dtype="float64",
                                          block_size=residual_rows(plan.n), backend=be)
                against = "K recomputed in float64 from the points"
            sol = solve_stored(K, Y, lam=self.lam, solver=self.solver, options=opts,
                               singular=singular, operator=operator, tile=plan.tile)
        sol.timings = {**stages, **sol.timings}
        sol.info.setdefault("residual_against", against)
        return sol

    def _solve_precomputed(self, K, Y, plan):
        """X is the n x n Gram matrix itself (built elsewhere, e.g. streamed from features)."""
        n = K.shape[0]
        opts = plan.options
        if K.shape != (n, n):
            raise InputError(f"kernel='precomputed' takes the square n x n Gram matrix as X, "
                             f"got shape {K.shape}")
        self.kernel_ = None
        if opts.scheduler is not None:
            raise InputError("a Dask solve (scheduler=...) builds K on the cluster from the "
                             "points; a precomputed (or streamed) K is solved in memory: drop "
                             "the scheduler, or pass the points (and --no-stream)")
        # A given K is a host array: the plan solves it on the NumPy path whatever the
        # backend asked for (solver_info_["backend"] says so).
        check_symmetric(K)
        # A copy unless the caller handed K over: the factor overwrites its lower triangle.
        K = np.array(K, dtype=plan.dtype, order="C", copy=not opts.overwrite_gram)
        sol = solve_stored(K, Y, lam=self.lam, solver=self.solver, options=opts,
                           tile=plan.tile)
        sol.info["backend"] = "numpy"
        sol.info.setdefault("residual_against", f"the given K ({plan.dtype})")
        self._record(sol)
        return sol

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
            step = predict_rows(X.shape[1])
            for i in range(0, len(X), step):
                out[i:i + step] = np.asarray(X[i:i + step], dtype=np.float64) @ self.dual_coef_
            return out
        # The fit's backend predicts too (a model loaded elsewhere falls back to NumPy).
        be = get_backend(*getattr(self, "_backend_spec", ("numpy", "cpu")))
        # float64 temporaries of at most ~256 MB per block, whatever n is.
        block = predict_rows(self.X_fit_.shape[0])
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
    kernel : {"gaussian", "laplacian", "linear", "polynomial", "nngp", "ntk", "precomputed"}
        "precomputed": ``fit`` takes the n x n Gram matrix K as X and
        ``predict`` the m x n matrix k(test, train).
    gamma, sigma : float, optional
        Kernel scale, as gamma or as bandwidth sigma (gaussian:
        gamma = 1 / (2 sigma^2)). Neither: gamma = 1 / (d Var(X)).
    degree, coef0 : polynomial kernel parameters.
    depth, weight_std, bias_std : "nngp" and "ntk" parameters: hidden ReLU layers
        and the Dense layers' sw, sb (neural-tangents' stax conventions, NTK
        parameterization; :mod:`kernelfit.engine.network_kernels`). No gamma / sigma.
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
        ||K alpha - Y||_F / ||Y||_F (0 for an exact interpolant), with K alpha
        computed without the shift (no cancellation however large lam is) and
        the norms scaled (no overflow for targets near 1e300).
    relative_residual_ : float
        ||(K + lam I) alpha - Y||_F / ||Y||_F: how exactly the system was solved
        (the absolute residual when Y is all zeros).
    converged_ : bool
        False when the solve is less exact than its dtype allows (relative
        residual above :func:`kernelfit.engine.solvers.solve.residual_limit`: 1e-8
        sqrt(n) in float64, 1e-4 sqrt(n) in float32) or CG stopped short of
        ``tol``.
    warnings_ : list of str
        Each way the fit was not exact or is degenerate (K the identity, one
        decision value for every point, a lam that swamps K, lam = 0 without
        interpolation, alpha untrustworthy by K's condition number), in
        words (also raised as :class:`kernelfit.errors.AccuracyWarning`, or
        as :class:`kernelfit.errors.AccuracyError` with
        ``Options(strict=True)``). A K singular to working precision
        (duplicate points with agreeing targets, a very wide bandwidth, a
        linear kernel on n > d points) is answered by the minimum-norm
        solution K^+ y, with its rank in ``solver_info_["rank"]``, by every
        solver but "cg-matrix-free", which raises
        :class:`kernelfit.errors.SingularKernelError` instead.
    solver_info_ : dict
        What the solver did: "converged", "jitter" (and the attempts of
        jitter="auto"), "rank" and "cutoff" when the rank-revealing path ran
        (also for a CG solve that met a singular K: "replaced" keeps CG's own
        figures), CG's "iterations" and "residuals", "residual_limit",
        "cond_estimate" (after a Cholesky: an estimate of cond(K + lam I), and
        its "cond_estimate_method").
    timings_ : dict
        Seconds per stage (gram, factor, solve, refine, residual).
    kernel_ : kernelfit.engine.kernels.Kernel
        The kernel with its resolved scale.
    """

    def fit(self, X, y):
        return self._fit(X, y)

    def _fit(self, X, y, plan=None):
        self._check_params()
        X, y = check_fit_data(self, X, y, y_numeric=True)
        Y = np.asarray(y, dtype=np.float64)
        self._y_1d = Y.ndim == 1
        Y2 = Y.reshape(len(Y), -1)
        self.train_error_ = self._solve(X, Y2, plan).train_residual
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
        return self._fit(X, y)

    def _fit(self, X, y, plan=None):
        self._check_params()
        X, y = check_fit_data(self, X, y, y_numeric=False)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        Y = np.zeros((len(y), len(self.classes_)))
        Y[np.arange(len(y)), codes] = 1.0
        K_alpha = self._solve(X, Y, plan).K_alpha
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
        return self.predict_from(self.decision_values(X))

    def decision_values(self, X):
        """(m, n_classes) outputs, one column per class (``decision_function`` folds two
        classes into one score): what the square loss against one-hot rows reads."""
        return self._decision(X)

    def predict_from(self, F):
        """The classes that outputs ``F`` (from :meth:`decision_values`) predict."""
        return self.classes_[np.argmax(F, axis=1)]
