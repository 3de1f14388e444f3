"""The Dask cluster: connecting (or starting a LocalCluster), its size, and the memory plan."""

from __future__ import annotations

import contextlib
import os

import numpy as np

from kernelfit.engine.sizes import host_limit
from kernelfit.errors import InputError, MissingDependencyError, PlanError
from kernelfit.formats import human_bytes
from kernelfit.options import Options

# Seconds to wait for a --scheduler ADDRESS to answer before giving up.
CONNECT_TIMEOUT_S = 10


def require_dask() -> None:
    """Raise :class:`MissingDependencyError` (naming the ``dask`` extra) when Dask is absent."""
    try:
        import dask.array  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(err.name or "distributed", "dask",
                                     "a Dask solve (--scheduler / Options.scheduler)") from err


@contextlib.contextmanager
def connect(scheduler: str):
    """A ``distributed.Client`` for ``scheduler`` ("local" or "tcp://host:port"), closed after.

    "local" starts a LocalCluster of one single-threaded worker process per
    core (BLAS inside each worker is then single-threaded too, so the cores
    are not oversubscribed) and shuts it down on exit. An address connects
    to a running cluster, whose workers must be able to import kernelfit.
    """
    Options(scheduler=scheduler)          # the one validation of the value
    require_dask()
    from distributed import Client, LocalCluster

    if scheduler == "local":
        with LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1,
                          processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as err:
        raise InputError(
            f"no Dask scheduler answered at {scheduler} within {CONNECT_TIMEOUT_S} s ({err}). "
            "Start one there (`dask scheduler`, then `dask worker ADDRESS` on each machine, "
            "with kernelfit installed), check the address, or use --scheduler local / "
            "Options(scheduler='local') for a cluster on this machine.") from None
    with client:
        yield client


def cluster_summary(client) -> dict:
    """Workers, threads and memory of the cluster, for the record."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {"scheduler": client.scheduler.address, "workers": len(workers),
            "threads": sum(w["nthreads"] for w in workers.values()),
            "memory_limit_bytes": sum(w.get("memory_limit") or 0 for w in workers.values())}


def plan_distributed(n: int, t: int, T: int, dtype, n_outputs: int, summary: dict, *,
                     local: bool) -> int:
    """Bytes the cluster will hold; :class:`PlanError` when its workers cannot.

    K (stored whole, both triangles; a lower tile is a view of its mirror on the
    worker that holds both, but Dask counts it) plus, for the Cholesky, L and
    L^T tiles, and per worker a few tile-sized temporaries of the block updates.
    ``local``: the workers share this machine, so what is free here also bounds them
    (a LocalCluster's memory limits split the total RAM, not the free RAM).
    """
    item = np.dtype(dtype).itemsize
    N = T * t
    need = 3 * N * N * item + summary["workers"] * 4 * t * t * 8 + 8 * N * n_outputs * 6
    limit = summary["memory_limit_bytes"]
    if local:
        free = host_limit(None)
        limit = min(limit, free) if limit else free
    if limit and need > limit:
        raise PlanError(
            f"a Dask solve of n={n:,} in {np.dtype(dtype).name} needs about "
            f"{human_bytes(need)} on the workers (K, its Cholesky factor L and L^T in "
            f"{T} x {T} tiles of {t:,}), but the {summary['workers']} workers may hold "
            f"{human_bytes(limit)}. Add workers or memory, or use --dtype float32 / "
            "dtype='float32', or fewer training points.")
    return need
