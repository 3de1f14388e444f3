"""`kernelfit plan`: what a run will do, decided by the planner, before any of it is done.

The same decisions `kernelfit run` makes (dtype, streamed or not, backend and
device, where K lives and in what tiles), with the bytes on each side and the
expected time of the two big stages from this machine's GEMM rate, measured
now, times the engine's efficiency measured in ``benchmarks/`` (stated beside
each estimate; an estimate, never a promise).
"""

from __future__ import annotations

import numpy as np

from ..formats import human_bytes
from ..solvers.refine import refine_flops

# The engine's measured share of the GEMM rate (benchmarks/bench_solve.py on 2 CPU
# cores: the factor at 93% at n = 10,000; benchmarks/results/h200-2026-11-30 on an
# H200: float32 factor 80%, Gram 98%, streamed factor 85% of in memory). The host
# Gram is memory-bound in its kernel map: half the GEMM rate is a fair guess.
EFFICIENCY = {"host": (0.5, 0.9), "disk tiles": (0.5, 0.8), "device": (0.9, 0.8),
              "host tiles": (0.9, 0.68)}
WHERE = {"host": "host memory, one in-place n x n buffer",
         "disk tiles": "lower tiles in a file on disk, three panels in RAM (out of core; "
                       "a killed run resumes)",
         "device": "device memory, one in-place n x n buffer",
         "host tiles": "lower tiles in pinned host memory, streamed through the device"}


def explain(config) -> dict:
    """The plan of ``config`` (a :class:`kernelfit.experiments.run.RunConfig`), as a dict.

    Raises PlanError, with the ways out, when the run cannot fit anywhere.
    """
    from ..features import make_features
    from .run import prepare, should_stream
    from .run_plan import plan_run

    data = prepare(config)
    n, m = len(data.train_labels), len(data.test_labels)
    fmap = make_features(config.features, seed=config.seed, **config.feature_params)
    # the plan needs the image shape only (feature dimension, the front end's working
    # memory): no fit
    shape = data.train_images.shape[1:]
    dim = fmap.dim_for(shape)
    streamed = should_stream(config, fmap, n + m, dim)
    n_classes = len(np.unique(data.train_labels))
    # the very Plan `kernelfit run` resolves for this config
    plan = plan_run(fmap, n, m, n_classes, solver=config.solver, options=config.options,
                    streamed=streamed, image_shape=shape)
    opts = plan.options
    notes = list(plan.notes)
    where = WHERE.get(plan.storage, plan.storage)
    if opts.scheduler is not None:
        cluster = ("a LocalCluster on this machine" if opts.scheduler == "local"
                   else opts.scheduler)
        where = f"Dask workers ({cluster}): K in tiles on the workers, Dask's blocked Cholesky"
    out = {"dataset": config.dataset, "n_train": n, "n_test": m, "features": fmap.name,
           "feature_dim": dim, "streamed": streamed, "solver": config.solver,
           "kernel": kernel_settings(config),
           "front_end_bytes": fmap.working_bytes(max(n, m), shape),
           "plan": plan.as_dict(), "where": where, "notes": notes}
    out["estimate"] = _estimate(plan, dim, n_classes, opts, streamed)
    return out


def kernel_settings(config) -> dict:
    """The kernel as the run's settings give it (a default scale is resolved from the data
    at fit time, so it is named, not computed, here)."""
    from ..kernels import NETWORK_KERNELS
    out = {"name": config.kernel}
    if config.kernel in NETWORK_KERNELS:
        return {**out, "depth": config.depth, "weight_std": config.weight_std,
                "bias_std": config.bias_std}
    if config.kernel in ("gaussian", "laplacian"):
        out["scale"] = (f"sigma={config.sigma}" if config.sigma is not None else
                        f"gamma={config.gamma}" if config.gamma is not None else
                        "gamma = 1 / (d Var X)")
    return out


def _estimate(plan, d: int, n_classes: int, opts, streamed: bool) -> dict:
    """Seconds of the Gram, the factor and the refinement from the GEMM rate measured now."""
    if plan.solver != "cholesky":
        return {"note": "iterative solvers: time depends on the iterations; not estimated"}
    rate, where = _rate(plan, opts)
    gram_eff, factor_eff = EFFICIENCY.get(plan.storage, (0.5, 0.9))
    n = plan.n
    gram = 2 * n * n * max(d, 1) / 2 / (gram_eff * rate * 1e9)
    factor = n**3 / 3 / (factor_eff * rate * 1e9)
    out = {"gemm_gflops": rate, "measured_on": where, "gram_s": gram, "factor_s": factor,
           "efficiency": {"gram": gram_eff, "factor": factor_eff}}
    if opts.refine_steps:
        # residual products and triangular solves are memory-bound: the Gram's share
        # of the float64 rate (half the float32 one where K is float32)
        exact = plan.refine_against == "exact"
        rate64 = rate / (2 if plan.dtype == "float32" else 1)
        work = refine_flops(n, 0 if streamed else d, n_classes, opts.refine_steps, exact=exact)
        out["refine_s"] = work / (gram_eff * rate64 * 1e9)
        out["refine_steps"] = opts.refine_steps
    return out


def _rate(plan, opts) -> tuple[float, str]:
    if plan.backend != "numpy" and plan.device != "cpu":
        from .bench_device import matmul_peak, no_tf32, probe
        dev = probe(plan.backend, plan.device)
        with no_tf32():
            return matmul_peak(dev, plan.dtype, size=4096, reps=2)["gflops"], dev.name
    from ..report import gemm_gflops
    return gemm_gflops(plan.dtype), "this machine's CPU (NumPy)"


def render(info: dict) -> str:
    """The plan as the terminal shows it."""
    p = info["plan"]
    lines = [f"run          {info['dataset']}  (n_train={info['n_train']:,}, "
             f"n_test={info['n_test']:,}), {info['features']} features (dim "
             f"{info['feature_dim']:,}){', streamed K' if info['streamed'] else ''}",
             "kernel       " + ", ".join([info["kernel"]["name"]] + [
                 f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                 for k, v in info["kernel"].items() if k != "name"]),
             f"solver       {info['solver']}, {p['dtype']}, {p['backend']} on {p['device']}",
             f"K lives in   {info['where']}",
             f"tile         {p['tile']:,} ({_panels(p['n'], p['tile'])})"]
    if p["storage"] in ("device", "host tiles"):
        lines.append(f"device       {human_bytes(p['device_bytes'])} of "
                     f"{human_bytes(p['device_limit_bytes'])} available")
    lines.append(f"front end    {info['features']}: {human_bytes(info['front_end_bytes'])} "
                 "working memory (its fit, fitted state and per-batch temporaries)")
    in_ram = p["gram_bytes"] + p["work_bytes"] + p["extra_bytes"]
    k_part = f" (K: {human_bytes(p['gram_bytes'])})" if p["storage"] == "host" else ""
    lines.append(f"host memory  {human_bytes(in_ram)} of {human_bytes(p['limit_bytes'])} "
                 f"available{k_part}")
    if p["storage"] == "disk tiles":
        lines.append(f"disk         {human_bytes(p['disk_bytes'])} of K's tiles under "
                     f"{p['scratch_dir']}")
    est = info["estimate"]
    if "gram_s" in est:
        refine = (f", refinement {_secs(est['refine_s'])} for {est['refine_steps']} steps at "
                  "most" if "refine_s" in est else "")
        lines.append(f"expected     Gram {_secs(est['gram_s'])}, factor {_secs(est['factor_s'])}"
                     f"{refine}  (GEMM {est['gemm_gflops']:,.0f} GFLOP/s measured now on "
                     f"{est['measured_on']}, at the engine's measured "
                     f"{est['efficiency']['gram']:.0%} / {est['efficiency']['factor']:.0%} of it)")
    else:
        lines.append(f"expected     {est['note']}")
    for note in info["notes"]:
        lines.append(f"note         {note}")
    return "\n".join(lines)


def _panels(n: int, tile: int) -> str:
    count = -(-n // tile)
    return f"{count} panel{'s' * (count != 1)}"


def _secs(s: float) -> str:
    if s < 0.1:
        return "< 0.1 s"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.0f} min"


