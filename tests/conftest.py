import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def random_spd(rng, n, cond_shift=None):
    """A random symmetric positive definite matrix (float64)."""
    B = rng.standard_normal((n, n))
    return B @ B.T + (n if cond_shift is None else cond_shift) * np.eye(n)
