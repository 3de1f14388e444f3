"""K alpha = Y on a Dask cluster: the Gram built in tiles where it will be solved.

For a K bigger than one machine, or more cores than one process uses. Three
steps, all on the cluster's workers:

1. **Gram tiles.** X and its squared norms are scattered once to every worker;
   each upper tile K[I, J] (I <= J) is one task, :meth:`Kernel.block` on the
   worker's copy of X (the project's kernel maps, nothing re-implemented). A
   lower tile is the transpose of its mirror, so K is exactly symmetric and
   each block is computed once. The tiles stay on the workers as one
   ``dask.array`` of t x t chunks.
2. **Exact solve.** Dask's own blocked ``dask.array.linalg.cholesky`` and two
   ``solve_triangular`` on that tiled K. Dask's Cholesky wants equal square
   chunks, so when t does not divide n, K is padded to T t rows with an
   identity block: diag(K, I) factors into diag(L, I), and the padded rows of
   Y (zeros) give exactly zero in alpha, so nothing of the answer changes.
3. **CG.** The project's Nyström-preconditioned block CG
   (:func:`kernelfit.engine.solvers.solve._cg`) with an operator whose products
   ``K @ V`` are Dask tasks: each tile's product runs on the worker that holds
   the tile, and only n x c blocks travel.

Either way the answer goes through :func:`kernelfit.engine.solvers.solve.check_solution`,
the same quality gate as the in-memory solves (finiteness, residual limit of
the working dtype, CG convergence).

Nothing here imports Dask at module level: ``kernelfit`` without
``--scheduler`` / ``Options.scheduler`` never loads it.

Modules: :mod:`.cluster` (connect or start a cluster, its memory plan),
:mod:`.gram` (the tiled Gram on the workers), :mod:`.solve` (the solves).
"""

from kernelfit.distributed.cluster import CONNECT_TIMEOUT_S, cluster_summary, connect, require_dask
from kernelfit.distributed.gram import build_gram_dask, tiling
from kernelfit.distributed.solve import DASK_SOLVERS, DaskOperator, solve_distributed

__all__ = ["CONNECT_TIMEOUT_S", "DASK_SOLVERS", "DaskOperator",
           "build_gram_dask", "cluster_summary", "connect", "require_dask",
           "solve_distributed", "tiling"]
