"""Input checks shared by the estimators: typed errors that say what to do."""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import validate_data

from .errors import DuplicatePointsError, InputError


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


def find_duplicates(X) -> list[tuple[int, int]]:
    """Pairs (later row, first row) of rows of X that are exactly equal."""
    X = np.ascontiguousarray(X)
    rows = X.view(np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    dup = np.flatnonzero(first[inverse] != np.arange(len(X)))
    return [(int(i), int(first[inverse[i]])) for i in dup]


def check_no_duplicates(X) -> None:
    pairs = find_duplicates(X)
    if pairs:
        raise DuplicatePointsError(pairs, len(pairs))
