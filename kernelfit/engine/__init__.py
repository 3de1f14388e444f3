"""The engine: K alpha = Y solved exactly, from points to a checked solution.

Layers, each importing only those below it (import-linter checks this):

- :mod:`.plan`: the one resolution. ``plan_fit`` turns the request
  (estimator parameters, :class:`~kernelfit.options.Options`, the data's
  shape) into a frozen :class:`~.plan.Plan`: dtype, backend and device, where
  K lives, tile and panel sizes, refinement reference. Everything below
  takes the Plan's resolved options; nothing below has an "auto" of its own.
- :mod:`.solvers`: Cholesky (in place, tiled, out of core), CG / PCG,
  refinement, the minimum-norm fallback, the checks every solution passes.
- :mod:`.storage`: where K is kept (resident, host tiles, disk tiles) and
  ``build_stored``, which fills the store the Plan chose.
- :mod:`.gram`: blocks of K from points (``panels``) or from a front end's
  column chunks (``stream``).
- :mod:`.kernels` and :mod:`.backend`: kernel values from inner products, and
  the array library (NumPy, PyTorch, CuPy) they run on.
- :mod:`.sizes`: every size constant and memory probe; imports nothing.
"""
