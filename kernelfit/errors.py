"""Typed errors. Each says what was wrong and what to do about it.

Every class also derives from the built-in exception a caller would expect
(``ValueError`` for bad input, ``MemoryError`` for a plan that does not fit,
``numpy.linalg.LinAlgError`` for a failed factorization), so generic handlers
and scikit-learn's estimator checks keep working.
"""

from __future__ import annotations

import os

import numpy as np


class KernelfitError(Exception):
    """Base class of every error kernelfit raises on purpose."""


class InputError(KernelfitError, ValueError):
    """The data handed in cannot be used as given (NaN, shapes, sizes)."""


class DuplicatePointsError(InputError):
    """Two or more training points coincide, so K is exactly singular.

    ``conflicting=True``: the coinciding points carry different targets, so
    no function interpolates them (with agreeing targets the minimum-norm
    interpolant K^+ y still exists, and the estimators compute it).
    """

    def __init__(self, pairs, n_duplicates: int, *, conflicting: bool = False, dtype=None):
        self.pairs = list(pairs)
        self.n_duplicates = int(n_duplicates)
        self.conflicting = bool(conflicting)
        shown = ", ".join(f"{i}={j}" for i, j in self.pairs[:5])
        more = "" if len(self.pairs) <= 5 else f" (and {len(self.pairs) - 5} more)"
        where = f" once rounded to {np.dtype(dtype).name}" if dtype is not None else ""
        why = ("with different targets, so no function interpolates them"
               if self.conflicting else
               "so the kernel matrix is singular and no unique interpolant exists")
        super().__init__(
            f"{self.n_duplicates} training rows duplicate earlier ones{where} (rows "
            f"{shown}{more}), {why}. Remove the duplicates (e.g. numpy.unique(X, axis=0, "
            "return_index=True)), or pass lam > 0 (ridge) or jitter='auto'."
        )


# What makes K better conditioned depends on the kernel; the solver does not know which.
BANDWIDTH_REMEDY = ("for a gaussian or laplacian kernel, a smaller bandwidth (--sigma / sigma=); "
                    "a linear or polynomial kernel on n > d points has a singular K: use "
                    "--lam / lam > 0 or a gaussian kernel")


class NotPositiveDefiniteError(KernelfitError, np.linalg.LinAlgError):
    """The Cholesky factorization met a pivot <= 0 (``pivot`` None: found otherwise)."""

    def __init__(self, pivot: int | None, n: int, dtype, detail: str = ""):
        self.pivot = None if pivot is None else int(pivot)
        self.n = int(n)
        self.dtype = np.dtype(dtype)
        remedies = []
        if self.dtype == np.float32:
            remedies.append("Options(dtype='float64') / --dtype float64 (K may be positive "
                            "definite, but not once rounded to float32)")
        remedies += ["lam > 0 / --lam (ridge regularization)",
                     "Options(jitter='auto') / --jitter auto (retry with growing diagonal jitter)",
                     BANDWIDTH_REMEDY]
        where = f": pivot {self.pivot} of {self.n} is <= 0" if self.pivot is not None else ""
        super().__init__(
            f"kernel matrix is not positive definite in {self.dtype.name}{where}{detail}. Try: "
            + "; ".join(remedies) + "."
        )


class SingularKernelError(NotPositiveDefiniteError):
    """K is singular to working precision and the solver at hand cannot return K^+ y.

    Raised by the CG solvers (whatever ``Options.strict`` says) when they met
    the singularity and no rank-revealing solve was possible there; the
    remedies differ from a failed Cholesky's, hence the class.
    """

    def __init__(self, n: int, dtype, evidence: str, *, solver: str, pinv_max_n: int):
        self.pivot, self.n, self.dtype = None, int(n), np.dtype(dtype)
        self.evidence = evidence
        minimum_norm = ("solver='cholesky' gives the minimum-norm solution K^+ y (as do "
                        "solver='cg' and 'pcg' on a stored K, without --strict); or "
                        if self.n <= pinv_max_n else
                        f"K^+ y is computed here for n <= {pinv_max_n:,} only, so ")
        KernelfitError.__init__(
            self, f"K is singular to working precision in {self.dtype.name} ({evidence}), and "
            f"{solver} cannot return its minimum-norm solution: iterates started at zero drift "
            f"along K's null space in floating point. {minimum_norm}pass --lam / lam > 0 "
            "(ridge).")


class AccuracyWarning(UserWarning):
    """A solve is not as exact as its dtype allows, or an iterative solver did not converge.

    The fitted model is still returned (and the estimator lists the reason in
    ``warnings_``); ``Options(strict=True)`` raises :class:`AccuracyError` instead.
    """


class AccuracyError(KernelfitError, ArithmeticError):
    """Raised instead of :class:`AccuracyWarning` when ``Options(strict=True)``."""


class NonFiniteError(AccuracyError):
    """A solve produced NaN or infinity (K itself holds non-finite entries, or overflowed).

    Always raised, whatever ``Options.strict`` says: a NaN model is never an answer.
    """


class PlanError(KernelfitError, MemoryError):
    """A request does not fit in the memory that is available."""


def __getattr__(name):
    # ParameterError derives from scikit-learn's InvalidParameterError (its estimator
    # checks expect that class), whose import costs ~1.5 s: built on first use, so that
    # `import kernelfit` stays cheap.
    if name == "ParameterError":
        from sklearn.utils._param_validation import InvalidParameterError

        class ParameterError(InputError, InvalidParameterError):
            """An estimator parameter has a wrong type or value (scikit-learn's message)."""

        ParameterError.__module__ = __name__
        ParameterError.__qualname__ = "ParameterError"
        globals()["ParameterError"] = ParameterError
        return ParameterError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class BackendError(KernelfitError, ImportError):
    """An array backend (CuPy, PyTorch) was asked for but is not usable here."""


class MissingDependencyError(KernelfitError, ImportError):
    """An optional dependency (an extra such as ``plots`` or ``torch``) is not installed."""

    def __init__(self, module: str, extra: str, purpose: str):
        self.module, self.extra = module, extra
        super().__init__(f"{purpose} needs {module}, which is not installed. Install it with "
                         f"`pip install \"kernelfit[{extra}]\"`.")


class DatasetError(KernelfitError):
    """Base class of dataset problems."""


class _FileProblem:
    """Mixin of errors about one file: "PATH: PROBLEM. REMEDY" (``path``, ``problem`` kept)."""

    remedy = ""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}. {self.remedy}")


class DatasetFormatError(_FileProblem, DatasetError, ValueError):
    """A dataset file is truncated, has a wrong magic number, or wrong dimensions."""

    remedy = "Delete the file and fetch it again (`kernelfit data fetch NAME`)."


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No source could supply the dataset."""


class VerificationError(DatasetError):
    """Fetched files do not match the recorded sizes, counts or checksum."""


class OutputPathError(KernelfitError, OSError):
    """An output file cannot be written where asked (a directory, a device, no permission)."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"cannot write {self.path}: {problem}.")


class FileInUseError(KernelfitError, BlockingIOError):
    """A file or folder is locked by another live process (:mod:`kernelfit.locks`).

    ``pid``: the holder's process id as it recorded it (None if not yet written).
    """

    def __init__(self, path, pid: int | None, what: str, remedy: str):
        self.path = str(path)
        self.pid = pid
        who = ("this process (an earlier holder in it was not closed)" if pid == os.getpid()
               else f"process {pid}" if pid else "another process (its PID is not written yet)")
        super().__init__(f"{what} {self.path} is in use by {who}. {remedy}")


class CorruptScratchError(KernelfitError, OSError):
    """Tiles of K on disk no longer hold the bytes written to them (their checksums fail)."""


class ModelFileError(_FileProblem, KernelfitError, ValueError):
    """A saved model file is not one, is damaged or modified, or has another format version."""

    remedy = "Save the model again with `kernelfit run ... --save-model PATH`."


class UserDataError(DatasetError, ValueError):
    """User data (``npz:PATH``, ``idx:DIR``) cannot be used as given."""

    def __init__(self, source, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}.")


class SubsetWarning(UserWarning):
    """A requested subset of a dataset lacks some of its classes."""
