"""What a whole run allocates, planned before any of it is: the fit, the run around it,
the hyper-parameter selection.

:func:`kernelfit.engine.plan.plan_fit` counts the fit itself (K, the data in the
working dtype, the solver's temporaries); a run holds more at the same time
(k(test, train) or the test features, a streamed feature chunk, prediction
blocks), and these are passed to it as ``extra_bytes`` so that the whole
request is refused at once, in seconds, or not at all. So is the front end's
own working memory (``FeatureMap.working_bytes``: randconv's filter bank,
Gabor's filter responses, kymatio's intermediates), planned from the image
shape before the map is fitted.
"""

from __future__ import annotations

import copy

import numpy as np

from kernelfit.engine.plan import Plan, plan_fit
from kernelfit.engine.sizes import (
    STREAM_CHUNK_UNITS,
    host_limit,
    machine_memory,
    predict_rows,
    working_dtype,
)
from kernelfit.errors import InputError, PlanError
from kernelfit.formats import human_bytes
from kernelfit.options import Options


def plan_selection(fmap, n: int, m: int, n_classes: int, *, options: Options,
                   val_fraction: float = 0.2, image_shape=None) -> Plan:
    """Plan ``--sigma auto`` / ``--lam auto``: the hold-out selection's peak, before it runs.

    :func:`kernelfit.pipeline.select.select` holds, per fold, the float64
    inner products of the fitted part (n_f x n_f) and of the validation part
    (n_v x n_f), a float64 kernel copy of each for the grid point being fitted
    (the K counted here), and the float32 features of the whole run.
    ``image_shape``: as for :func:`plan_run`.
    """
    n_val = int(round(val_fraction * n))
    n_fit = n - n_val
    dim = fmap.dim_for(image_shape) if image_shape is not None else fmap.dim
    extra = n_fit * n_fit * 8 + 2 * n_val * n_fit * 8 + (n + m) * dim * 4
    return plan_fit(n_fit, 0, n_classes, options=options.replace(dtype="float64"),
                    precomputed=True, extra_bytes=extra)


def check_memory_limit(limit: int | None, *, force: bool = False) -> None:
    """Refuse a memory limit above this machine's physical memory, unless ``force``.

    A plan made against memory that is not there passes and then meets the
    OOM killer; ``force`` is for planning a run meant for a larger machine.
    (``Options`` checks only that the value is a byte count: a library user
    may plan for any machine.)
    """
    if limit is None or force:
        return
    total = machine_memory()
    if limit > total:
        raise InputError(f"--memory-limit {human_bytes(limit)} is more than this machine's "
                         f"{human_bytes(total)} of physical memory: a plan against it would "
                         "pass and the run then be killed. Give at most that (or leave it out "
                         "for 90% of the free memory), or add --force to plan for a larger "
                         "machine anyway")


def plan_run(fmap, n: int, m: int, n_classes: int, *, solver: str, options: Options,
             streamed: bool, image_shape=None) -> Plan:
    """The run's one Plan, its fit's included; raise PlanError if the run cannot fit.

    Besides what :func:`kernelfit.engine.plan.plan_fit` counts for the fit itself (K,
    the data in the working dtype, the solver's temporaries), the run holds:

    - streamed: k(test, train) (m x n, K's dtype) and one column chunk of
      train + test features, float32 as computed plus its standardized copy
      in K's dtype;
    - in memory: the float32 train and test feature matrices (on a GPU, K and
      its work live on the device, and the host holds these);
    - both: the front end's working memory (its fit, fitted state and
      per-batch temporaries), and the float64 row blocks of k(test, train)
      that prediction uses.

    A front end that alone (working memory and features) exceeds the memory
    is refused with a message that names it and, for randconv, how many
    filters fit. The estimator fits with this Plan (``fit_planned``), so what
    is planned is what runs, and the record reports it.

    Parameters
    ----------
    fmap : FeatureMap
        Fitted, or not yet fitted with ``image_shape`` given (the plan comes
        before the fit: randconv's fit alone can be too large).
    n, m : int
        Training and test points.
    n_classes : int
        Columns of the one-hot right-hand side.
    solver : str
    options : Options
        As the user gave them; ``memory_limit`` caps the plan.
    streamed : bool
        Which road to plan.
    image_shape : tuple, optional
        The images' shape (default: what ``fmap`` was fitted on).
    """
    item = np.dtype(working_dtype(options.dtype, n)).itemsize
    predict_temps = predict_rows(n, m) * n * 8 * 2 if m else 0
    shape = tuple(image_shape) if image_shape is not None else fmap.input_shape_
    dim = fmap.dim_for(shape)
    front = _front_end_bytes(fmap, n, m, shape, streamed, item)
    _check_front_end(fmap, n, m, shape, streamed, item, front, host_limit(options.memory_limit))
    if streamed:
        return plan_fit(n, 0, n_classes, solver=solver, options=options, precomputed=True,
                        streamed=True, extra_bytes=m * n * item + front + predict_temps)
    return plan_fit(n, dim, n_classes, solver=solver, options=options,
                    extra_bytes=front + predict_temps)


def _front_end_bytes(fmap, n: int, m: int, shape, streamed: bool, item: int) -> int:
    """The front end's peak: its working memory plus the features it hands over."""
    dim = fmap.dim_for(shape)
    working = fmap.working_bytes(max(n, m), shape)
    if not streamed:
        return working + (n + m) * dim * 4
    cols = min(dim, STREAM_CHUNK_UNITS * fmap.features_per_unit)
    return working + (n + m) * cols * (4 + item)


def _check_front_end(fmap, n: int, m: int, shape, streamed: bool, item: int, front: int,
                     limit: int) -> None:
    """PlanError naming the front end when it alone does not fit (before K is counted)."""
    if front <= limit:
        return
    what = f"{fmap.name} front end" + (f" with {getattr(fmap, fmap.unit_param):,} "
                                       f"{fmap.unit_param.removeprefix('n_')}"
                                       if fmap.unit_param else "")
    ways = []
    if fmap.unit_param:
        fits = _units_that_fit(fmap, n, m, shape, streamed, item, limit)
        unit = fmap.unit_param.removeprefix("n_")
        ways.append(f"fewer {unit} (about {fits:,} fit, before K's own share)" if fits
                    else f"fewer {unit} will not do: even one does not fit")
    ways.append("fewer training or test points, a smaller image, or free memory held by "
                "other processes")
    raise PlanError(f"the {what} needs about {human_bytes(front)} to fit and "
                    f"compute the features of {n + m:,} images of shape {shape} (its working "
                    f"memory {human_bytes(fmap.working_bytes(max(n, m), shape))}), before K "
                    f"and the solve, but only {human_bytes(limit)} is available. Try: "
                    + "; ".join(ways) + ".")


def _units_that_fit(fmap, n, m, shape, streamed, item, limit) -> int:
    """The most units (``fmap.unit_param``) whose front-end bytes fit ``limit`` (0: none)."""
    def need(units):
        probe = copy.copy(fmap)
        setattr(probe, fmap.unit_param, units)
        return _front_end_bytes(probe, n, m, shape, streamed, item)

    lo, hi = 0, int(getattr(fmap, fmap.unit_param))      # need(hi) > limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if need(mid) <= limit else (lo, mid)
    return lo
