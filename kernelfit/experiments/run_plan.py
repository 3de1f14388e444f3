"""What a whole run allocates, planned before any of it is: the fit, the run around it,
the hyper-parameter selection.

:func:`kernelfit.plan.plan_fit` counts the fit itself (K, the data in the
working dtype, the solver's temporaries); a run holds more at the same time
(k(test, train) or the test features, a streamed feature chunk, prediction
blocks), and these are passed to it as ``extra_bytes`` so that the whole
request is refused at once, in seconds, or not at all.
"""

from __future__ import annotations

import numpy as np

from ..options import Options
from ..plan import Plan, plan_fit

# Filters (units) per streamed column chunk: 256 randconv filters are 2,048 feature
# columns, 400 MB per chunk at n = 50,000.
STREAM_CHUNK_UNITS = 256
# Prediction works on row blocks of k(test, train) of at most this many float64
# elements (the estimator's own bound, counted here by the planner).
PREDICT_BLOCK_ELEMENTS = 2**25


def plan_selection(fmap, n: int, m: int, n_classes: int, *, options: Options,
                   val_fraction: float = 0.2) -> Plan:
    """Plan ``--sigma auto`` / ``--lam auto``: the hold-out selection's peak, before it runs.

    :func:`kernelfit.experiments.select.select` holds, per fold, the float64
    inner products of the fitted part (n_f x n_f) and of the validation part
    (n_v x n_f), a float64 kernel copy of each for the grid point being fitted
    (the K counted here), and the float32 features of the whole run.
    """
    n_val = int(round(val_fraction * n))
    n_fit = n - n_val
    extra = n_fit * n_fit * 8 + 2 * n_val * n_fit * 8 + (n + m) * fmap.dim * 4
    return plan_fit(n_fit, 0, n_classes, options=options.replace(dtype="float64"),
                    extra_bytes=extra)


def plan_run(fmap, n: int, m: int, n_classes: int, *, solver: str, options: Options,
             streamed: bool) -> Plan:
    """Plan the whole run before any of it is allocated; raise PlanError if it cannot fit.

    Besides what :func:`kernelfit.plan.plan_fit` counts for the fit itself (K,
    the data in the working dtype, the solver's temporaries), the run holds:

    - streamed: k(test, train) (m x n, K's dtype) and one column chunk of
      train + test features, float32 as computed plus its standardized copy
      in K's dtype;
    - in memory: the float32 train and test feature matrices;
    - both: the float64 row blocks of k(test, train) that prediction uses.

    Parameters
    ----------
    fmap : FeatureMap
        Fitted (its ``dim`` is known).
    n, m : int
        Training and test points.
    n_classes : int
        Columns of the one-hot right-hand side.
    solver : str
    options : Options
        ``dtype`` already resolved; ``memory_limit`` caps the plan.
    streamed : bool
        Which road to plan.
    """
    item = np.dtype(options.resolve_dtype(n)).itemsize
    predict_rows = min(m, max(1, PREDICT_BLOCK_ELEMENTS // max(n, 1)))
    predict_temps = predict_rows * n * 8 * 2
    if streamed:
        cols = min(fmap.dim, STREAM_CHUNK_UNITS * fmap.features_per_unit)
        chunk = (n + m) * cols * (4 + item)
        return plan_fit(n, 0, n_classes, solver=solver, options=options,
                        extra_bytes=m * n * item + chunk + predict_temps)
    features = (n + m) * fmap.dim * 4
    if options.scheduler not in (None, "local"):
        # K lives on a remote cluster's workers (kernelfit.distributed plans it there);
        # this host holds the features, the solution and the prediction blocks.
        return plan_fit(n, fmap.dim, n_classes, solver=solver, options=options,
                        gram_allocated=True, extra_bytes=features + predict_temps)
    from ..backend import resolve_backend
    be = resolve_backend(options, solver)
    if be.on_gpu:
        # K lives on the device (or in host tiles streamed through it): the device's
        # plan; the host then holds the features and k(test, train)'s blocks only.
        return plan_fit(n, fmap.dim, n_classes, solver=solver, options=options, backend=be)
    return plan_fit(n, fmap.dim, n_classes, solver=solver, options=options,
                    extra_bytes=features + predict_temps)
