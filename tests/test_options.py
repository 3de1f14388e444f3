"""Options validate every field when made; the planner's messages speak in readable units."""

import pytest

import kernelfit
from kernelfit import Options
from kernelfit.engine.plan import plan_fit
from kernelfit.errors import InputError, PlanError


@pytest.mark.parametrize("field, value, says", [
    ("dtype", "float16", "dtype"), ("dtype", None, "dtype"),
    ("block_size", 0, "block_size"), ("block_size", -5, "block_size"),
    ("block_size", True, "block_size"), ("block_size", 2.5, "block_size"),
    ("tile_size", 0, "tile_size"), ("n_jobs", 0, "n_jobs"),
    ("jitter", "abc", "jitter"), ("jitter", float("nan"), "jitter"), ("jitter", -1e-3, "jitter"),
    ("jitter", "1e-3", "jitter"), ("refine_steps", -1, "refine_steps"),
    ("tol", float("nan"), "tol"), ("tol", 0.0, "tol"), ("tol", 1.5, "tol"), ("tol", "1e-6", "tol"),
    ("max_iter", 0, "max_iter"), ("memory_limit", 0, "memory_limit"),
    ("memory_limit", -1, "memory_limit"), ("backend", "jax", "backend"),
    ("progress", "yes", "progress"), ("overwrite_gram", 1, "overwrite_gram"),
    ("strict", None, "strict"), ("device", 3, "device"),
])
def test_every_field_is_validated(field, value, says):
    with pytest.raises(InputError, match=says):
        Options(**{field: value})


def test_torch_device_forms():
    for ok in ("cpu", "cuda", "cuda:0", "cuda:12"):
        assert Options(backend="torch", device=ok).device == ok
    with pytest.raises(InputError, match="'cpu', 'cuda' or 'cuda:N'"):
        Options(backend="torch", device="bogus")


def test_valid_values_pass_and_replace_revalidates():
    o = Options(dtype="float32", block_size=8, tile_size=None, jitter="auto", tol=1e-8,
                memory_limit=10**9, strict=True)
    assert o.strict and o.jitter == "auto"
    assert Options(jitter=0).jitter == 0 and Options(jitter=1e-6).jitter == 1e-6
    with pytest.raises(InputError, match="max_iter"):
        o.replace(max_iter=0)


def test_package_exports_the_estimators():
    from kernelfit import KernelInterpolant, KernelInterpolantClassifier  # noqa: F401
    assert kernelfit.KernelInterpolant.__name__ == "KernelInterpolant"
    with pytest.raises(AttributeError):
        kernelfit.NoSuchThing  # noqa: B018


def test_plan_messages_never_say_zero_gb_nor_matrix_free_for_a_precomputed_k():
    opts = Options(dtype="float32", memory_limit=int(3e7))
    with pytest.raises(PlanError) as err:
        plan_fit(5_000, 0, 10, options=opts, gram_allocated=True)
    msg = str(err.value)
    assert "0.0 GB" not in msg and "MB" in msg and "cg-matrix-free" not in msg
    with pytest.raises(PlanError) as err:           # a K built from points: the way out is offered
        plan_fit(5_000, 10, 1, options=opts)
    assert "cg-matrix-free" in str(err.value)


def test_plan_counts_extra_bytes():
    opts = Options(dtype="float32", memory_limit=int(2e8))
    base = plan_fit(2_000, 10, 1, options=opts)
    plan = plan_fit(2_000, 10, 1, options=opts, extra_bytes=10**7)
    assert plan.total_bytes == base.total_bytes + 10**7
    with pytest.raises(PlanError, match="other allocations of the run: 300.0 MB"):
        plan_fit(2_000, 10, 1, options=opts, extra_bytes=3 * 10**8)
