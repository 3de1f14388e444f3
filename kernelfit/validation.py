"""Input checks shared by the estimators: typed errors that say what to do."""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import validate_data

from kernelfit.errors import DuplicatePointsError, InputError


def check_fit_data(estimator, X, y, *, y_numeric: bool):
    """Validate training data through scikit-learn, re-raised as :class:`InputError`.

    scikit-learn's messages are kept (its estimator checks look for them) and
    a hint on what to do is appended.
    """
    try:
        return validate_data(estimator, X, y, dtype=[np.float64, np.float32],
                             ensure_min_samples=2, multi_output=True, y_numeric=y_numeric)
    except ValueError as err:
        raise InputError(_with_hint(str(err))) from err


def check_predict_data(estimator, X):
    try:
        return validate_data(estimator, X, dtype=[np.float64, np.float32], reset=False)
    except ValueError as err:
        raise InputError(_with_hint(str(err))) from err


def _with_hint(msg: str) -> str:
    if "NaN" in msg or "infinity" in msg:
        return msg + " Impute or drop the rows with NaN/inf before fitting."
    if "inconsistent numbers of samples" in msg:
        return msg + " X and y must have one row per training point."
    if "minimum of 2 is required" in msg:
        return msg + " An interpolant needs at least 2 training points."
    return msg


def find_duplicates(X, dtype=None) -> list[tuple[int, int]]:
    """Pairs (later row, first row) of rows of X that are exactly equal.

    ``dtype``: compare the rows as rounded to the working dtype (rows distinct
    in float64 can coincide in float32, and then K is singular there); -0.0
    and 0.0 count as equal.
    """
    X = np.array(X, dtype=dtype or np.asarray(X).dtype, order="C", copy=True)
    X += 0.0                                      # -0.0 -> 0.0: equal numbers, equal bytes
    rows = X.view(np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    dup = np.flatnonzero(first[inverse] != np.arange(len(X)))
    return [(int(i), int(first[inverse[i]])) for i in dup]


def check_no_duplicates(X, dtype=None) -> None:
    pairs = find_duplicates(X, dtype)
    if pairs:
        raise DuplicatePointsError(pairs, len(pairs), dtype=dtype)


def check_duplicates(X, Y, *, dtype=None, allow_agreeing: bool = True) -> bool:
    """Whether X has duplicate rows (in ``dtype``) whose targets agree; raise if they disagree.

    Duplicate points make K exactly singular. With agreeing targets (same row
    of Y) an interpolant still exists and the minimum-norm one, K^+ y, is
    unique: True is returned and the caller takes the rank-revealing path.
    With different targets no function interpolates them:
    :class:`DuplicatePointsError` (``conflicting=True``). ``allow_agreeing=False``
    (no rank-revealing path at hand): agreeing duplicates raise too.
    """
    pairs = find_duplicates(X, dtype)
    if not pairs:
        return False
    # name the dtype only when rounding to it is what made the rows equal
    rounded = dtype if dtype is not None and np.dtype(dtype) != np.asarray(X).dtype else None
    Y = np.asarray(Y).reshape(len(Y), -1)
    clash = [(i, j) for i, j in pairs if not np.array_equal(Y[i], Y[j])]
    if clash:
        raise DuplicatePointsError(clash, len(clash), conflicting=True, dtype=rounded)
    if not allow_agreeing:
        raise DuplicatePointsError(pairs, len(pairs), dtype=rounded)
    return True


def check_kernel_range(X, dtype) -> None:
    """Refuse X whose inner products overflow ``dtype`` (the Gram GEMM would give inf, K NaN).

    |<x, y>| <= max ||x||^2, and the distance kernels need ||x||^2 + ||y||^2:
    every squared row norm must stay below a quarter of the dtype's largest value.
    """
    dt = np.dtype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        X = np.asarray(X)
        big = float(np.max(np.abs(X))) if X.size else 0.0
        sq_max = big * big * X.shape[1] if X.ndim == 2 else big * big
    limit = float(np.finfo(dt).max) / 4
    if not sq_max <= limit:
        raise InputError(
            f"X has entries up to {big:.3g} in absolute value: with {X.shape[1]} features "
            f"the inner products of its rows can reach {sq_max:.3g}, beyond what {dt.name} "
            f"holds ({limit:.3g}), so kernel values would overflow to inf/NaN. Rescale X "
            "(e.g. sklearn.preprocessing.StandardScaler or X / X.max())"
            + (", or use dtype='float64'" if dt == np.float32 else "") + ".")


def check_symmetric(K, *, step: int = 1024) -> None:
    """Refuse a precomputed K that is not symmetric, block by block (no n x n copy).

    Tolerance: sqrt(eps) of K's dtype times its largest diagonal entry. A Gram
    matrix built by blocks differs from its transpose by rounding only (GEMM
    sums in another order: ~sqrt(d) eps relative), while a K(test, train) or a
    non-kernel passed by mistake differs by O(1).
    """
    K = np.asarray(K)
    n = K.shape[0]
    dt = K.dtype if K.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    scale = float(np.max(np.abs(np.diagonal(K)))) if n else 0.0
    tol = float(np.sqrt(np.finfo(dt).eps)) * max(scale, np.finfo(dt).tiny)
    for i0 in range(0, n, step):
        for j0 in range(i0, n, step):
            a = np.asarray(K[i0:i0 + step, j0:j0 + step], dtype=dt)
            b = np.asarray(K[j0:j0 + step, i0:i0 + step], dtype=dt).T
            gap = np.abs(a - b)
            worst = float(gap.max())
            if worst > tol:
                i, j = np.unravel_index(int(np.argmax(gap)), gap.shape)
                i, j = i0 + int(i), j0 + int(j)
                raise InputError(
                    f"kernel='precomputed' needs the symmetric n x n Gram matrix K(train, "
                    f"train), but K[{i}, {j}] = {float(K[i, j]):.6g} and K[{j}, {i}] = "
                    f"{float(K[j, i]):.6g} differ by {worst:.3g} (tolerance {tol:.3g}). Pass "
                    "K(train, train) to fit and K(test, train) to predict; symmetrize a "
                    "rounding-level mismatch with (K + K.T) / 2.")
