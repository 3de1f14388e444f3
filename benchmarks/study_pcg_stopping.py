"""What `--solver pcg --val-fraction` should stop on: curves measured on MNIST.

One process, a stored float32 K of ``--n`` MNIST training points (Gaussian,
sigma 5) and the test kernel, then:

* exact: Cholesky in float64 and float32 (kernelfit's solve_stored), test error;
* full: PCG on all n points (the refit) for ``--max-iter`` iterations, the test
  error of every iterate (the refit stopped at t has exactly this iterate);
* per split seed: the validation run (``val_fraction`` held out, no patience
  stop: ``--max-iter`` iterations), its validation error and the test error of
  the held-out model at every iteration; and a warm-started refit from the
  held-out solution at ``--warm-from`` iterations, test error per iteration.

Test errors are measurements only (they never steer a run). The raw curves go
to a JSON file; :func:`rules` replays stopping rules on the validation curves
and reports the test error each would give, held-out model and refit.

    flock /tmp/kernelfit-heavy.lock python benchmarks/study_pcg_stopping.py --n 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pcg import OUTPUTS, SIGMA, _data  # noqa: E402

from kernelfit.atomic import write_json_atomic  # noqa: E402


def measure(n: int | None, seeds: list[int], val_fraction: float, max_iter: int,
            warm_from: int, exact: bool, lean: bool) -> dict:
    """The curves; ``lean`` (full MNIST in 24 GB): a float32 test kernel, built only
    after the validation runs, whose held-out models and warm refits go untraced."""
    from kernelfit import Options
    from kernelfit.engine.gram.panels import build_gram
    from kernelfit.engine.kernels import make_kernel, row_sq_norms
    from kernelfit.engine.solvers.cg import block_cg
    from kernelfit.engine.solvers.pcg import (
        PanelOperator,
        _split,
        make_preconditioner,
        pcg_solve,
        sketch_budget,
        validation_run,
    )
    from kernelfit.engine.solvers.solve import solve_stored

    Xtr, ytr, Xte, yte = _data(n, None)
    n = len(Xtr)
    kern = make_kernel("gaussian", sigma=SIGMA)
    Y = np.eye(OUTPUTS)[ytr]
    kt_dtype = np.float32 if lean else np.float64
    Kt = None

    def test_kernel():
        xtr, xte = Xtr.astype(kt_dtype), Xte.astype(kt_dtype)
        sq_tr, sq_te = row_sq_norms(xtr), row_sq_norms(xte)
        Kt = np.empty((len(Xte), n), dtype=kt_dtype)
        for i in range(0, len(Xte), 1000):
            kern.block(xte[i:i + 1000], xtr, sq_te[i:i + 1000], sq_tr, out=Kt[i:i + 1000])
        return Kt

    def test_error(alpha):
        return float(np.mean(np.argmax(Kt @ alpha.astype(kt_dtype), axis=1) != yte))

    out = {"n": n, "n_test": len(yte), "sigma": SIGMA, "val_fraction": val_fraction,
           "max_iter": max_iter, "seeds": seeds, "test_kernel_dtype": np.dtype(kt_dtype).name,
           "exact": {}}
    if not lean:
        Kt = test_kernel()
    for dtype in ("float64", "float32") if exact else ():
        K = build_gram(Xtr, kern, options=Options(dtype=dtype))
        t = time.perf_counter()
        sol = solve_stored(K, Y, solver="cholesky", options=Options(dtype=dtype))
        out["exact"][dtype] = {"test_error": test_error(sol.alpha),
                               "seconds": time.perf_counter() - t,
                               "relative_residual": sol.relative_residual}
        del K, sol
        print(f"cholesky {dtype}: {out['exact'][dtype]}", flush=True)

    opts = Options(dtype="float32", tol=1e-12, max_iter=max_iter)
    K = build_gram(Xtr, kern, options=opts)
    full_op = PanelOperator(K)
    budget = sketch_budget(n, 4, opts, gram_allocated=True)
    out["splits"] = []
    for seed in seeds:
        iterates = []

        def monitor(it, a, iterates=iterates):
            if not lean:
                iterates.append(a.copy())
            return False

        t = time.perf_counter()
        # The validation run alone (no refit), the rule never stopping it: max_iter
        # iterations, to replay stopping rules on afterwards.
        rows, val = _split(n, val_fraction, ytr, seed)
        _, info = validation_run(K, Y, 0.0, rows, val,
                                 opts.replace(val_fraction=val_fraction, patience=max_iter),
                                 budget, seed, monitor)
        split = {"seed": seed, "val_size": len(val),
                 "val_error": [h["val_error"] for h in info["history"]],
                 "seconds": time.perf_counter() - t, "precond_s": info["timings"]["precond"],
                 "validation_seconds": [h["seconds"] for h in info["history"]]}
        print(f"seed {seed}: val {[round(100 * e, 2) for e in split['val_error']]}", flush=True)
        if not lean:
            split["held_out_test_error"] = [test_error(a) for a in iterates]
            # Warm refit: all n rows from the held-out solution (0 on the held-out rows).
            pre = make_preconditioner(full_op, opts, budget_bytes=budget, seed=seed)
            warm = []
            block_cg(full_op, Y, tol=1e-12, max_iter=max_iter, precond=pre,
                     X0=iterates[warm_from - 1],
                     callback=lambda it, X, rel, warm=warm: warm.append(test_error(X)) and False)
            split["warm_from"] = warm_from
            split["warm_test_error"] = warm
            print(f"  held-out model test "
                  f"{[round(100 * e, 2) for e in split['held_out_test_error']]}\n"
                  f"  warm refit test {[round(100 * e, 2) for e in warm]}", flush=True)
        out["splits"].append(split)
    if Kt is None:
        Kt = test_kernel()
    curve = []
    t = time.perf_counter()
    _, info = pcg_solve(K, Y, options=opts,
                        monitor=lambda it, a: curve.append(test_error(a)) and False)
    out["full"] = {"test_error": curve, "residual": [h["relative_residual"]
                                                     for h in info["history"]],
                   "seconds": [h["seconds"] for h in info["history"]],
                   "seconds_with_tracing": time.perf_counter() - t,
                   "precond_s": info["timings"]["precond"],
                   "preconditioner": info["preconditioner"]}
    print(f"full: {[round(100 * e, 2) for e in curve]}", flush=True)
    return out


# Stopping rules replayed on the recorded validation curves: the one pcg_solve
# runs (kernelfit.engine.solvers.pcg.ValidationStop: first strict minimum, fixed
# patience, a minimum of iterations) and the alternatives it was measured against.
RULES = {
    "first minimum, patience 5, at least 10 iterations (pcg_solve)": dict(patience=5,
                                                                          min_iter=10),
    "first minimum, patience 5": dict(patience=5),
    "ties to later, patience 5": dict(patience=5, ties_later=True),
    "first minimum, patience 10": dict(patience=10),
    "ties to later, patience 10": dict(patience=10, ties_later=True),
    "patience max(5, t*)": dict(patience=5, relative=1.0),
    "ties to later, patience max(5, t*)": dict(patience=5, ties_later=True, relative=1.0),
    "ties to later, patience 5, at least 20 iterations": dict(patience=5, ties_later=True,
                                                               min_iter=20),
}


def replay(val_errors, patience: int, ties_later=False, relative=0.0, min_iter=0):
    """(t*, the iteration the rule stops at) on one validation curve."""
    best, best_it = np.inf, 0
    for it, err in enumerate(val_errors, 1):
        if err < best or (ties_later and err <= best):
            best, best_it = err, it
        if it >= min_iter and it - best_it >= max(patience, int(np.ceil(relative * best_it))):
            return best_it, it
    return best_it, len(val_errors)


def rules(doc: dict) -> list[dict]:
    """Each rule on each split: t*, its stop, and the test error of the refit at t*
    (the full run's iterate t*) and, when traced, of the held-out model at t*."""
    from kernelfit.engine.solvers.pcg import ValidationStop

    full = doc["full"]["test_error"]
    out = []
    for name, kw in RULES.items():
        rows = []
        for split in doc["splits"]:
            t_star, stop = replay(split["val_error"], **kw)
            if name.endswith("(pcg_solve)"):     # the replay is the solver's own rule
                rule = ValidationStop(kw["patience"], kw["min_iter"])
                stopped = next((it for it, e in enumerate(split["val_error"], 1)
                                if rule.update(it, e)), len(split["val_error"]))
                assert (rule.best_it, stopped) == (t_star, stop), (name, split["seed"])
            held = split.get("held_out_test_error")
            rows.append({"seed": split["seed"], "t_star": t_star, "stop": stop,
                         "refit_test_error": full[t_star - 1],
                         "held_out_test_error": held[t_star - 1] if held else None})
        out.append({"rule": name, "splits": rows,
                    "mean_refit_test_error": float(np.mean([r["refit_test_error"]
                                                            for r in rows])),
                    "mean_iterations": float(np.mean([r["stop"] + r["t_star"] for r in rows]))})
    return out


def report(doc: dict) -> str:
    lines = [f"n = {doc['n']:,}, val_fraction {doc['val_fraction']:g}, "
             f"{len(doc['splits'])} splits; exact: " + ", ".join(
                 f"{k} {100 * v['test_error']:.2f}%" for k, v in doc["exact"].items())]
    for r in rules(doc):
        held = [s["held_out_test_error"] for s in r["splits"]]
        lines.append(
            f"  {r['rule']}: t* {[s['t_star'] for s in r['splits']]}, stops "
            f"{[s['stop'] for s in r['splits']]}, refit test error "
            f"{[round(100 * s['refit_test_error'], 2) for s in r['splits']]} (mean "
            f"{100 * r['mean_refit_test_error']:.3f}%)"
            + (f", held-out model {100 * np.mean(held):.3f}%" if None not in held else "")
            + f", iterations incl. refit {r['mean_iterations']:.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="training points; 0: all 60,000")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--max-iter", type=int, default=60)
    ap.add_argument("--warm-from", type=int, default=8)
    ap.add_argument("--no-exact", action="store_true", help="skip the Cholesky solves")
    ap.add_argument("--lean", action="store_true",
                    help="full MNIST in 24 GB: float32 test kernel, held-out models untraced")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--replay", metavar="JSON", help="only replay the rules on a written file")
    args = ap.parse_args(argv)
    if args.replay:
        print(report(json.loads(Path(args.replay).read_text())))
        return 0
    doc = measure(args.n or None, args.seeds, args.val_fraction, args.max_iter, args.warm_from,
                  not args.no_exact, args.lean)
    doc["command"] = "python benchmarks/study_pcg_stopping.py " + " ".join(argv or sys.argv[1:])
    path = Path(args.out) / f"study_pcg_stopping_{doc['n']}_val{args.val_fraction:g}.json"
    doc["rules"] = rules(doc)
    write_json_atomic(path, doc)
    print(report(doc))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
