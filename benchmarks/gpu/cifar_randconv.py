"""Table 3's CIFAR-10 random conv-net rows (exact, and + l2) at the paper's scale on one GPU.

    python benchmarks/gpu/cifar_randconv.py DATA_DIR --json OUT.json [--filters 32000]

DATA_DIR holds x_train.npy uint8 (50000, 32, 32, 3), y_train.npy (50000,),
x_test.npy uint8 (10000, 32, 32, 3), y_test.npy (10000,); several folders may
be given, and an array may come as NAME.part0.npy, NAME.part1.npy, ... (a
device call carries 64 MiB at most). Every step runs where
the images lie (``--device``, CUDA when present): the random-filter features of
a chunk of filters for all 60,000 images, their standardization, and the
accumulation G += Phi_c Phi_c^T (train x train, test x train) -- so the paper's
256,000 feature columns never exist at once anywhere. Then, on a validation
split carved from the training set (the test set is not touched), the Gaussian
bandwidth (both rows) and lambda (the l2 row) are chosen from maps of the same
G; the two rows are then fitted on all training images with those settings and
scored on the test set once each.

Cost at the paper's scale, n = 50,000 train + m = 10,000 test images, F = 32,000
filters (D = 8F = 256,000 columns), 6x6x3 patches (d = 108, + 1 for the
threshold), 27 x 27 = 729 positions, on an H200 (~50 TFLOP/s float32 GEMM with
TF32 off, ~4.3 TB/s):

- features: 2 (n + m) 729 109 F = 3.1e14 FLOP of GEMM (inner dimension 109, so
  well below peak) plus 1.4e12 responses through two in-place clamps and two
  quadrant sums (~30 TB of traffic): ~20-30 s. Temporaries: one image block's
  patch matrix + responses, <= 1 GiB (``block_bytes``).
- Gram: upper-triangle tiles of G_train, ~0.58 x 2 n^2 D = 7.4e14 FLOP, and
  G_test, 2 m n D = 2.6e14 FLOP: ~20-25 s. Memory: G_train n^2 x 4 B = 10 GB,
  G_test 2 GB; per chunk (256 filters) the features, 60,000 x 2,048 x 4 B =
  0.49 GB, and their standardized copy, 0.49 GB.
- selection (45,000 fit / 5,000 validation): per bandwidth one kernel map of a
  copy of G_fit (8.1 GB) and per (bandwidth, lambda) one float32 Cholesky of
  45,000^2 (3.0e13 FLOP, ~1-2 s) into one reused 8.1 GB factor buffer: 5 x 5
  points, ~40-60 s; a best value at a grid end walks out up to 2 more steps
  (one to three more factors per step).
- final fits, one per row: K (10 GB) and its factor (10 GB), 4.2e13 FLOP each,
  float64 residual and refinement in 1.6 GB row blocks; K_test 2 GB.
- peak device memory ~35 GB (G 10 + G_test 2 + K 10 + factor 10 + blocks).
  Host: the float32 images (0.74 GB) and one feature map fit (100,000 patches).

A float32 factor that fails (K not positive definite in float32) is redone in
float64 (needs 40 GB more; the device has 139 GB). Progress lines carry the
elapsed time and are flushed, and the JSON is rewritten after every stage, so
a run cut short still says how far it got.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _import_repo() -> None:
    """Import kernelfit from this checkout, also where it is not pip-installed (a bare GPU box).

    The repository maps ``features/`` to ``kernelfit.features`` at install time
    (pyproject's package-dir); without an install that mapping is made here.
    """
    import importlib.util
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        import kernelfit.features  # noqa: F401
        return
    except ModuleNotFoundError:
        pass
    base = ROOT / "features"
    spec = importlib.util.spec_from_file_location("kernelfit.features", base / "__init__.py",
                                                  submodule_search_locations=[str(base)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernelfit.features"] = module
    spec.loader.exec_module(module)


_import_repo()

from kernelfit.atomic import write_json_atomic  # noqa: E402
from kernelfit.data.dataset import stratified_indices  # noqa: E402
from kernelfit.data.preprocess import Preprocessing  # noqa: E402
from kernelfit.engine.backend import get_backend  # noqa: E402
from kernelfit.engine.gram.stream import accumulate_streamed, finish_streamed  # noqa: E402
from kernelfit.engine.kernels import make_kernel  # noqa: E402
from kernelfit.engine.solvers.cholesky import restore_lower  # noqa: E402
from kernelfit.engine.solvers.solve import solve_stored  # noqa: E402
from kernelfit.errors import AccuracyWarning, InputError, NotPositiveDefiniteError  # noqa: E402
from kernelfit.features import make_features  # noqa: E402
from kernelfit.options import Options  # noqa: E402
from kernelfit.pipeline.select import _tie_break  # noqa: E402
from kernelfit.pipeline.select_grid import SIGMA_FACTORS, _beyond, _edge_notes  # noqa: E402
from kernelfit.studies.table3 import EXTEND, L2_LAM_FACTORS, PAPER_FILTERS, rows  # noqa: E402

N_CLASSES = 10
# Rows of K cast to float64 at a time for residuals and predictions (4096 x 50,000 x 8 B
# = 1.6 GB): float64 accuracy without a float64 copy of K.
F64_ROWS = 4096
PREPROCESSING = "scale"      # the CIFAR randconv rows of table3: pixels / 255


class Log:
    """Progress lines with the elapsed wall time, flushed so a killed run still shows them."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:8.1f} s] {msg}", flush=True)


# -- data ---------------------------------------------------------------------------

def load_array(dirs, name: str) -> np.ndarray:
    """``NAME.npy`` from the first of ``dirs`` that has it, else its parts concatenated.

    Parts, ``NAME.part0.npy``, ``NAME.part1.npy``, ..., may lie in different
    folders: a device call carries at most 64 MiB, and CIFAR-10's 180 MB of
    uint8 images reach a warm machine over several calls.
    """
    for d in dirs:
        if (Path(d) / f"{name}.npy").is_file():
            return np.load(Path(d) / f"{name}.npy", allow_pickle=False)
    parts = {}
    for d in dirs:
        for path in Path(d).glob(f"{name}.part*.npy"):
            index = path.name[len(name) + 5:-4]
            if index.isdigit():
                parts[int(index)] = path
    if not parts:
        raise InputError(f"{name}.npy is missing from {', '.join(map(str, dirs))}: the data "
                         "folders must hold x_train.npy, y_train.npy, x_test.npy, y_test.npy "
                         "(images uint8 (N, 32, 32, 3), labels 0-9), whole or as "
                         "NAME.part0.npy, NAME.part1.npy, ...")
    if sorted(parts) != list(range(len(parts))):
        raise InputError(f"{name}: parts {sorted(parts)} found; they must be numbered 0, 1, ... "
                         "without gaps")
    return np.concatenate([np.load(parts[i], allow_pickle=False) for i in range(len(parts))])


def load_cifar_npy(data_dirs, n_train=None, n_test=None, seed=0):
    """x_train, y_train, x_test, y_test from the .npy files; stratified subsets if asked."""
    dirs = [data_dirs] if isinstance(data_dirs, (str, Path)) else list(data_dirs)
    out = {name: load_array(dirs, name) for name in ("x_train", "y_train", "x_test", "y_test")}
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = out[f"x_{split}"], np.asarray(out[f"y_{split}"]).reshape(-1)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise InputError(f"x_{split} must be uint8 (N, 32, 32, 3), got {x.dtype} {x.shape}")
        if y.dtype.kind not in "iu" or len(y) != len(x) or y.min() < 0 or y.max() >= N_CLASSES:
            raise InputError(f"y_{split} must hold {len(x)} integer labels in 0..9, got "
                             f"{y.dtype} {y.shape}")
        if n is not None:
            if not N_CLASSES <= n <= len(x):
                raise InputError(f"--n-{split} must be between {N_CLASSES} and {len(x)}, got {n}")
            keep = stratified_indices(y, n, seed)
            x, y = x[keep], y[keep]
        out[f"x_{split}"], out[f"y_{split}"] = x, y.astype(np.int64)
    return out["x_train"], out["y_train"], out["x_test"], out["y_test"]


def fit_first_order(y, n_val, seed):
    """Training order with the validation images last: (order, n_fit).

    With the hold-out at the end, the fit part of every kernel matrix is the
    leading block of G (a view, no gather) and the validation rows the block
    below it; the final fit uses all rows, in which order does not matter.
    """
    val = stratified_indices(y, n_val, seed)
    fit = np.setdiff1d(np.arange(len(y)), val)
    return np.concatenate([fit, val]), len(fit)


# -- features and inner products on the device ----------------------------------------

def stream_inner(fmap, x_tr, x_te, chunk_filters, dtype, log):
    """Accumulate G_train, G_test and the norms from device feature chunks; (acc, seconds)."""
    torch = _torch()
    b = get_backend("torch", str(x_tr.device))
    n_chunks = fmap.n_column_chunks(chunk_filters)
    every = max(1, n_chunks // 16)
    times = {"features": 0.0}

    def chunks():
        for c in range(n_chunks):
            j0, j1 = fmap.column_range(c, chunk_filters)
            u0, u1 = j0 // fmap.features_per_unit, j1 // fmap.features_per_unit
            b.synchronize()
            t = time.perf_counter()
            pair = (fmap.transform_columns_device(x_tr, u0, u1),
                    fmap.transform_columns_device(x_te, u0, u1))
            b.synchronize()
            times["features"] += time.perf_counter() - t
            yield pair
            if (c + 1) % every == 0 or c + 1 == n_chunks:
                log(f"chunk {c + 1}/{n_chunks} (filters < {u1:,}): features "
                    f"{times['features']:.1f} s, total {time.perf_counter() - t_all:.1f} s")

    t_all = time.perf_counter()
    with torch.no_grad():
        acc = accumulate_streamed(chunks(), x_tr.shape[0], x_te.shape[0], standardize=True,
                                  dtype=dtype)
        b.synchronize()
        total = time.perf_counter() - t_all
        t = time.perf_counter()
        # the linear "kernel": mirror G and write its exact diagonal (the float64 norms)
        finish_streamed(acc, make_kernel("linear"), 8192)
        b.synchronize()
    return acc, {"features": times["features"],
                 "gram": total - times["features"] + time.perf_counter() - t}


def median_distance_from_inner(G, sq, n_fit, seed, sample=1000):
    """Median distance between distinct fit points, from inner products (the features are gone).

    The same statistic as kernelfit.pipeline.select_grid.median_distance on a
    seeded sample of ``sample`` fit rows: d^2 = ||x||^2 + ||y||^2 - 2 <x, y>.
    """
    torch = _torch()
    idx = np.sort(np.random.default_rng(seed).choice(n_fit, min(sample, n_fit), replace=False))
    i = torch.from_numpy(idx).to(G.device)
    s = sq[i]
    d2 = (s[:, None] + s[None, :] - 2.0 * G[i][:, i].double()).clamp_(min=0)
    iu = torch.triu_indices(len(idx), len(idx), 1, device=G.device)
    return float(d2[iu[0], iu[1]].median().sqrt())


# -- solves -----------------------------------------------------------------------------

def one_hot(y, device, dtype):
    """One-hot targets (1 for the class, 0 elsewhere): KernelInterpolantClassifier's, as table3."""
    torch = _torch()
    Y = torch.zeros((len(y), N_CLASSES), dtype=dtype, device=device)
    Y[torch.arange(len(y), device=device), torch.from_numpy(y).to(device)] = 1
    return Y


def matmul64(A, X):
    """A @ X in float64, A cast F64_ROWS rows at a time (A float32 n x k, X float64 k x c)."""
    torch = _torch()
    out = torch.empty((A.shape[0], X.shape[1]), dtype=torch.float64, device=A.device)
    for r in range(0, A.shape[0], F64_ROWS):
        torch.matmul(A[r:r + F64_ROWS].double(), X, out=out[r:r + F64_ROWS])
    return out


def kernel_block(G_block, sq_rows, sq_cols, sigma, out=None):
    """k(x_i, y_j) from inner products: a copy of ``G_block`` (into ``out``) mapped in place."""
    K = G_block.clone() if out is None else out.copy_(G_block)
    return make_kernel("gaussian", sigma=sigma).from_inner(K, sq_rows, sq_cols)


def engine_solve(K, Y64, lam, refine=0):
    """The project's one exact solve on a device K (in place): Cholesky, refinement, checks.

    K's lower triangle becomes the factor and its strict upper triangle keeps K
    (:func:`restore_lower` undoes it). Warnings of an inexact solve are kept in
    the Solution (a selection point records them; it does not print them).
    """
    options = Options(backend="torch", device=str(K.device), dtype=str(K.dtype)[6:],
                      refine_steps=refine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        return solve_stored(K, Y64.cpu().numpy(), lam=lam, options=options)


# -- selection ---------------------------------------------------------------------------

def score_sigma(G, sq, y_fit, y_val, n_fit, sigma, lams, bufs):
    """Validation error of every lambda at one bandwidth (one kernel map, one factor each)."""
    torch = _torch()
    K = kernel_block(G[:n_fit, :n_fit], sq[:n_fit], sq[:n_fit], sigma, out=bufs["K"])
    K.diagonal().fill_(1.0)                       # k(x, x) = 1 exactly, as the solver's K
    K_val = kernel_block(G[n_fit:, :n_fit], sq[n_fit:], sq[:n_fit], sigma)
    Y = one_hot(y_fit, G.device, torch.float64)
    ones = np.ones(n_fit)
    out = []
    for lam in lams:
        point = {"params": {"sigma": sigma, "lam": lam}, "failed": None}
        try:
            sol = engine_solve(K, Y, lam)
        except NotPositiveDefiniteError as err:
            # K + lam I not positive definite in this precision: a bad choice, not a stop
            point.update(val_error=math.inf, failed=str(err).split(". Try")[0])
        else:
            alpha = torch.from_numpy(sol.alpha).to(K.device)
            pred = torch.argmax(matmul64(K_val, alpha), dim=1).cpu().numpy()
            point.update(val_error=float(np.mean(pred != y_val)),
                         residual=sol.relative_residual, converged=sol.converged)
        restore_lower(K, ones)                  # K again for the next lambda
        out.append(point)
    return out


EXACT, L2 = "cifar10-randconv", "cifar10-randconv-l2"


def select_settings(G, sq, y_tr, n_fit, seed, log):
    """Bandwidth for both rows, and lambda for the l2 row, on the hold-out; the record.

    The grid and its rules are table3's and select's: the median distance of
    the fit points times SIGMA_FACTORS; lambda 0 (the exact row) and
    L2_LAM_FACTORS (the l2 row); a choice at a grid end walks one step further
    (select's ``_beyond``: the bandwidth's grid ratio, lambda x10) for up to
    EXTEND rounds; ties go to select's rule (smallest lambda, middle bandwidth).
    """
    m = median_distance_from_inner(G, sq, n_fit, seed)
    sigmas = [m * f for f in SIGMA_FACTORS]
    lams = [0.0] + [float(f) for f in L2_LAM_FACTORS]  # K's diagonal is 1: lam = factor
    y_fit, y_val = y_tr[:n_fit], y_tr[n_fit:]
    bufs, scores = {"K": G.new_empty((n_fit, n_fit))}, []

    def run(sigma, lam_list):
        t = time.perf_counter()
        pts = score_sigma(G, sq, y_fit, y_val, n_fit, sigma, lam_list, bufs)
        scores.extend(pts)
        log(f"  sigma {sigma:.4g}: val error " + ", ".join(
            f"lam {p['params']['lam']:g} {100 * p['val_error']:.2f}%" for p in pts)
            + f" ({time.perf_counter() - t:.1f} s)")

    def row_points(key):
        return [p for p in scores if (p["params"]["lam"] == 0) == (key == EXACT)]

    for s in sigmas:
        run(s, lams)
    for rounds in range(EXTEND + 1):
        best = {key: _tie_break(row_points(key)) for key in (EXACT, L2)}
        tried = [p["params"] for p in scores]
        beyond = {}
        for key, b in best.items():
            for q in _beyond(b["params"], [p["params"] for p in row_points(key)]):
                if q not in tried:
                    beyond.setdefault(q["sigma"], set()).add(q["lam"])
        if not beyond or rounds == EXTEND:
            break
        for sigma, lam_set in beyond.items():
            run(sigma, sorted(lam_set))
    bufs.clear()       # the fit-size K and factor (16 GB at full size) go before the final fits
    return best, {"median_distance": m, "sigma_grid": sigmas, "lam_grid": lams,
                  "walk_rounds": rounds, "points": scores,
                  "at_grid_end": {key: _edge_notes(b["params"], [p["params"]
                                                                 for p in row_points(key)])
                                  for key, b in best.items()}}


# -- final fits ---------------------------------------------------------------------------

def fit_row(acc, y_tr, y_te, sigma, lam, refine, log):
    """Exact (lam = 0) or l2 fit on all training rows; test error, norm, residual, times."""
    torch = _torch()
    b = get_backend("torch", str(acc.G.device))
    times, t = {}, time.perf_counter()
    K = kernel_block(acc.G, acc.sq, acc.sq, sigma)
    K.diagonal().fill_(1.0)
    Y64 = one_hot(y_tr, K.device, torch.float64)
    try:
        sol = engine_solve(K, Y64, lam, refine)
    except NotPositiveDefiniteError as err:
        log(f"  the {K.dtype} factor failed ({err.pivot}); factoring in float64")
        restore_lower(K, np.ones(len(K)))
        K = K.double()
        sol = engine_solve(K, Y64, lam, refine)
    b.synchronize()
    times["factor+solve"] = time.perf_counter() - t
    info = sol.info
    alpha = torch.from_numpy(sol.alpha).to(K.device)
    norm, rel = sol.norm, sol.relative_residual
    train_error = float(np.mean(np.argmax(sol.K_alpha, 1) != y_tr))
    factor_dtype = str(K.dtype)[6:]
    history = info.get("refine_history", [])
    first, steps = (history[0] if history else rel), len(history)
    del K
    t = time.perf_counter()
    K_te = kernel_block(acc.G_test, acc.sq_test, acc.sq, sigma)
    pred = torch.argmax(matmul64(K_te, alpha), 1).cpu().numpy()
    del K_te
    b.synchronize()
    times["predict"] = time.perf_counter() - t
    return {"sigma": sigma, "lam": lam, "factor_dtype": factor_dtype,
            "relative_residual": rel, "relative_residual_before_refinement": first,
            "refinement_steps": steps, "residual_of": "(K + lam I) alpha - Y, float64",
            "converged": sol.converged, "warnings": sol.warnings,
            "factor_gflops": info.get("gflops"), "solver": "kernelfit.engine.solvers.solve_stored",
            "finite": bool(torch.isfinite(alpha).all()), "norm": norm,
            "train_error": train_error, "test_error": float(np.mean(pred != y_te)),
            "seconds": times}


# -- driver --------------------------------------------------------------------------------

def _torch():
    from kernelfit.engine.backend import import_torch
    return import_torch()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", nargs="+",
                   help="folder(s) with x_train.npy, y_train.npy, x_test.npy, y_test.npy (or "
                        "their NAME.partK.npy pieces)")
    p.add_argument("--json", required=True, help="result file (rewritten after every stage)")
    p.add_argument("--filters", type=int, default=PAPER_FILTERS, help="random filters F")
    p.add_argument("--chunk-filters", type=int, default=256,
                   help="filters per streamed chunk (8 columns each)")
    p.add_argument("--n-train", type=int, default=None, help="stratified training subset")
    p.add_argument("--n-test", type=int, default=None, help="stratified test subset")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="hold-out share of the training set for the selection (0.1: 5,000)")
    p.add_argument("--seed", type=int, default=0, help="filters, subsets and hold-out")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    p.add_argument("--gram-dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--refine", type=int, default=3, help="max float64 refinement steps")
    args = p.parse_args(argv)
    for name in ("filters", "chunk_filters"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < args.val_fraction < 1 or args.refine < 0:
        raise InputError("--val-fraction must be in (0, 1) and --refine >= 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    log = Log()
    torch = _torch()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    b = get_backend("torch", device)           # also turns TF32 off for every product
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if b.on_gpu:
        torch.cuda.reset_peak_memory_stats(b.device)
    paper = {r.key: r.paper_error for r in rows()}
    record = {"script": "benchmarks/gpu/cifar_randconv.py", "argv": sys.argv[1:],
              "device": b.describe(), "torch": torch.__version__,
              "python": platform.python_version(), "status": "started", "seconds": {}}
    if b.on_gpu:
        record["device_name"] = torch.cuda.get_device_name(b.device)

    def save(status):
        record["status"] = status
        if b.on_gpu:
            record["peak_device_memory_gb"] = torch.cuda.max_memory_allocated(b.device) / 1e9
        record["peak_host_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        write_json_atomic(args.json, record)

    t = time.perf_counter()
    x_tr, y_tr, x_te, y_te = load_cifar_npy(args.data_dir, args.n_train, args.n_test, args.seed)
    n_val = int(round(args.val_fraction * len(y_tr)))
    if not N_CLASSES <= n_val <= len(y_tr) - N_CLASSES:
        raise InputError(f"a {args.val_fraction:g} hold-out of {len(y_tr)} images leaves "
                         f"{n_val} to validate on: use more images or another --val-fraction")
    order, n_fit = fit_first_order(y_tr, n_val, args.seed)
    x_tr, y_tr = x_tr[order], y_tr[order]
    pre = Preprocessing.parse(PREPROCESSING)
    x_tr, x_te = pre.apply(x_tr, 255), pre.apply(x_te, 255)
    record.update(n_train=len(y_tr), n_test=len(y_te), filters=args.filters,
                  feature_columns=8 * args.filters, chunk_filters=args.chunk_filters,
                  gram_dtype=args.gram_dtype, preprocessing=pre.describe(),
                  validation={"rule": f"stratified hold-out {100 * args.val_fraction:g}% of "
                                      f"the training set (seed {args.seed})",
                              "n_fit": n_fit, "n_val": n_val,
                              "val_indices_sha1": hashlib.sha1(
                                  np.sort(order[n_fit:]).tobytes()).hexdigest()})
    fmap = make_features("randconv", seed=args.seed, n_filters=args.filters).fit(x_tr)
    record["features"] = {"name": fmap.name, **fmap.params,
                          "steps": fmap.preprocessing, "pooling": "quadrant sums (fixed)"}
    record["seconds"]["load_and_fit_features"] = time.perf_counter() - t
    log(f"loaded {len(y_tr):,} train / {len(y_te):,} test images, fitted {fmap.name} "
        f"({args.filters:,} filters) on {device}")

    x_tr_d, x_te_d = torch.from_numpy(x_tr).to(b.device), torch.from_numpy(x_te).to(b.device)
    acc, secs = stream_inner(fmap, x_tr_d, x_te_d, args.chunk_filters, args.gram_dtype, log)
    del x_tr_d, x_te_d
    record["seconds"].update(secs)
    save("gram done")
    log(f"features {secs['features']:.1f} s, gram {secs['gram']:.1f} s")

    t = time.perf_counter()
    with torch.no_grad():
        best, selection = select_settings(acc.G, acc.sq, y_tr, n_fit, args.seed, log)
    b.synchronize()
    record["seconds"]["selection"] = time.perf_counter() - t
    record["selection"] = {**selection, "chosen": {k: v["params"] for k, v in best.items()},
                           "val_error": {k: v["val_error"] for k, v in best.items()}}
    save("selection done")

    record["rows"] = {}
    for key, chosen in best.items():
        t = time.perf_counter()
        p = chosen["params"]
        log(f"{key}: fitting all {len(y_tr):,} with sigma {p['sigma']:.4g}, lam {p['lam']:g}")
        with torch.no_grad():
            res = fit_row(acc, y_tr, y_te, p["sigma"], p["lam"], args.refine, log)
        res.update(paper_error=paper[key], meets_paper=res["test_error"] <= paper[key],
                   val_error=chosen["val_error"], total_seconds=time.perf_counter() - t)
        record["rows"][key] = res
        log(f"{key}: test error {100 * res['test_error']:.2f}% (paper {100 * paper[key]:.0f}%), "
            f"residual {res['relative_residual']:.2e} ({res['factor_dtype']} factor), "
            f"norm {res['norm']:.4g}")
        save(f"{key} done")
    record["seconds"]["total"] = time.perf_counter() - log.t0
    save("done")
    log(f"done: {args.json}")
    return record


if __name__ == "__main__":
    main()
