"""What the tests share: the one backend fixture, the digits, SPD matrices.

``backend_case`` is the one backend fixture: by default it runs a test on
every backend the engine supports (NumPy, PyTorch on the CPU,
``array-api-strict``, and, marked ``gpu``, PyTorch-CUDA and CuPy), skipping
cleanly where one is missing; a test that needs fewer names them with
``@pytest.mark.parametrize("backend_case", [...], indirect=True)``.
"""

from dataclasses import dataclass

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def random_spd(rng, n, cond_shift=None):
    """A random symmetric positive definite matrix (float64)."""
    B = rng.standard_normal((n, n))
    return B @ B.T + (n if cond_shift is None else cond_shift) * np.eye(n)


# -- the one backend fixture ------------------------------------------------------------
@dataclass(frozen=True)
class BackendCase:
    """A backend the engine runs on: how to put a host array there, and its Options names."""

    param: str
    name: str                  # Options.backend ("" for array-api-strict: engine-level only)
    device: str | None
    to_xp: object              # host array -> a copy on this backend

    def backend(self):
        from kernelfit.engine.backend import backend_of, get_backend
        if self.name:
            return get_backend(self.name, self.device)
        return backend_of(self.to_xp(np.zeros(1)))

    def options(self, **kw):
        """Options that run an estimator here (array-api-strict has none: skipped)."""
        from kernelfit import Options
        if not self.name:
            pytest.skip("array-api-strict runs the engine, not the estimators")
        return Options(backend=self.name, device=self.device, **kw)


def _torch(device):
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return lambda a: torch.from_numpy(np.array(a)).to(device)


def _strict():
    xp = pytest.importorskip("array_api_strict")
    return lambda a: xp.asarray(np.array(a))


def _cupy():
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as err:  # noqa: BLE001 - CuPy without a driver raises its own error
        pytest.skip(f"CuPy sees no device ({err})")
    return lambda a: cp.asarray(np.array(a))


_CASES = {
    "numpy": lambda: BackendCase("numpy", "numpy", None, lambda a: np.array(a)),
    "torch-cpu": lambda: BackendCase("torch-cpu", "torch", "cpu", _torch("cpu")),
    "array-api-strict": lambda: BackendCase("array-api-strict", "", None, _strict()),
    "torch-cuda": lambda: BackendCase("torch-cuda", "torch", "cuda", _torch("cuda")),
    "cupy": lambda: BackendCase("cupy", "cupy", "cuda", _cupy()),
}
GPU_CASES = ("torch-cuda", "cupy")


def backend_params(*names):
    """Parameters for ``backend_case`` (all by default), GPU ones marked ``gpu``."""
    return [pytest.param(p, marks=pytest.mark.gpu) if p in GPU_CASES else p
            for p in (names or _CASES)]


@pytest.fixture(params=backend_params())
def backend_case(request) -> BackendCase:
    return _CASES[request.param]()


@pytest.fixture
def to_xp(backend_case):
    """Host array -> the same values on the test's backend (a copy)."""
    return backend_case.to_xp


# -- the one digits fixture -------------------------------------------------------------
@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as the house reads them: pixels / 16 (float64), labels, one-hot."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y, np.eye(10)[y]
