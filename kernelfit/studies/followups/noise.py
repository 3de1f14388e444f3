"""`kernelfit study interpolation-noise`: interpolation under label noise (Belkin et al. 2018).

Belkin, Ma & Mandal (ICML 2018, arXiv 1802.01396) argue that what makes
over-fitted deep networks generalize is already visible in kernel machines:
Gaussian and Laplacian classifiers trained to zero training error (they used
EigenPro iterations) test about as well as regularized or early-stopped ones
on real data, also after a share of the training labels is replaced at
random; the RKHS norm of an interpolant of noisy labels must grow with n
(close to exponentially for smooth kernels), so bounds that grow with the norm
cannot explain that; and the non-smooth Laplacian fits random labels in far
fewer iterations than the Gaussian.

Three parts, each sweeps of :func:`kernelfit.studies.sweeps.run_sweep`:

* ``error``: test error against the label-noise level for the interpolant
  (lam = 0, exact Cholesky), the ridge classifier (lam chosen with sigma on a
  validation split of the *clean* training set, held fixed over the noise
  levels, as every ``--sigma auto`` sweep does) and PCG stopped early (t*
  chosen on a validation split of the noisy training set, then refit on all
  points); Gaussian and Laplacian kernels.
* ``norm``: the interpolant's RKHS norm against n, clean and noisy labels, at
  one bandwidth (chosen at the smallest n on clean labels), with the log-log
  slope.
* ``iterations``: conjugate-gradient iterations (``--solver pcg --precond
  none``: no preconditioner, so the count reflects K's own spectrum) to solve
  K alpha = y to ``tol`` for true and for random labels, Gaussian and
  Laplacian: kernelfit's stand-in for the paper's epochs (compare ratios, not
  the paper's epoch counts).
* ``sgd`` (beside the iterations): `kernelfit sgd linear` (mini-batch SGD on
  alpha from 0) on the iterations part's data, each kernel at the bandwidth the
  iterations part chose, true and random labels, one step-size rule for all
  (the provable 1 / L_b, which depends on K only, so both labelings take the
  same step): the first epoch at which the training error is 0, or "not
  within E epochs", and the first epoch at <= 1% training error (:data:`NEAR_FIT`).
  These are the paper's own unit, SGD epochs (they used
  EigenPro, a preconditioned SGD; plain SGD is slower, so again compare
  ratios). One resumable record per run in ``sgd-DATASET/``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from kernelfit.errors import InputError
from kernelfit.options import Options
from kernelfit.params import real, whole
from kernelfit.pipeline.run import RunConfig
from kernelfit.studies.followups.common import (
    BMM18,
    NOT_VERIFIABLE,
    Part,
    StudyResult,
    check_sizes,
    failures,
    line_plot,
    log_slope,
    markdown_table,
    ok_records,
    run_part,
    write_report,
)
from kernelfit.studies.sgd.linear import SGDLinearConfig, sgd_linear
from kernelfit.studies.sgd.linear_record import (
    epochs_to_fit,
    first_epoch,
    fit_text,
    within_text,
)
from kernelfit.studies.sweep_report import corruption

NAME = "interpolation-noise"
METHODS = ("interpolating", "ridge", "early-stopped")
KERNELS = ("gaussian", "laplacian")
#: A training error SGD counts as nearly fitted: one more figure from the same per-epoch
#: history, because the last few points (a mislabelled or atypical digit) can take far
#: longer than the rest, and flip back, so the first exact 0 alone is a noisy comparison.
NEAR_FIT = 0.01
#: The iterations and SGD parts' two labelings: table name -> randomization test.
LABELS = {"true": "none", "random": "random-labels"}


@dataclass
class NoiseStudy:
    """The study's sizes; :meth:`small` and :meth:`full` are the presets."""

    datasets: tuple = ("mnist", "cifar10")
    n_train: int = 5000
    n_test: int = 2000
    noise: tuple = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    norm_sizes: tuple = (1000, 2000, 5000, 10000)
    norm_noise: float = 0.2
    iter_n: int = 5000
    kernels: tuple = KERNELS
    seed: int = 0
    val_fraction: float = 0.1        # pcg's early-stopping hold-out
    tol: float = 1e-3                # the iterations part's stopping residual
    max_iter: int = 1000
    sgd_n: int | None = None         # the SGD part's n (None: iter_n)
    sgd_epochs: int = 300            # E: "not within E epochs" past it
    sgd_batch_size: int = 64

    def __post_init__(self):
        whole("n_train", self.n_train, 2)
        whole("n_test", self.n_test, 1)
        whole("iter_n", self.iter_n, 2)
        whole("seed", self.seed, 0)
        whole("max_iter", self.max_iter, 1)
        whole("sgd_n", self.sgd_n, 2, allow_none=True, hint="None: iter_n")
        whole("sgd_epochs", self.sgd_epochs, 1)
        whole("sgd_batch_size", self.sgd_batch_size, 1, high=self.sgd_n or self.iter_n,
              hint="at most the SGD part's n")
        real("val_fraction", self.val_fraction, 0, 1, lo_open=True, hi_open=True)
        real("tol", self.tol, 0, 1, lo_open=True, hi_open=True)
        real("norm_noise", self.norm_noise, 0, 1, lo_open=True)
        check_sizes("norm_sizes", list(self.norm_sizes), 2)
        levels = [real("noise level", p, 0, 1) for p in self.noise]
        if len(levels) < 2 or levels != sorted(set(levels)):
            raise InputError(f"noise levels must be at least two increasing values in [0, 1], "
                             f"got {list(self.noise)}")
        for k in self.kernels:
            if k not in KERNELS:
                raise InputError(f"the noise study compares {', '.join(KERNELS)}; got {k!r}")
        if not self.datasets:
            raise InputError("give at least one dataset")

    @classmethod
    def small(cls, **kw) -> NoiseStudy:
        """Digits (embedded), a few hundred points: under a minute on 2 cores."""
        return cls(**{**dict(datasets=("digits",), n_train=400, n_test=400,
                             noise=(0.0, 0.25, 0.5), norm_sizes=(100, 200, 400), iter_n=400,
                             norm_noise=0.5, sgd_epochs=100), **kw})

    @classmethod
    def full(cls, **kw) -> NoiseStudy:
        return cls(**kw)

    # -- the sweeps ------------------------------------------------------------------
    def _base(self, dataset: str, kernel: str, n: int) -> RunConfig:
        return RunConfig(dataset=dataset, n_train=n, n_test=self.n_test, seed=self.seed,
                         kernel=kernel, sigma="auto", options=Options(progress=False))

    def parts(self) -> list[Part]:
        levels = ",".join(f"labels:{p:g}" for p in self.noise)
        out = []
        for ds in self.datasets:
            for k in self.kernels:
                base = self._base(ds, k, self.n_train)
                methods = {
                    "interpolating": base,
                    "ridge": replace(base, lam="auto"),
                    "early-stopped": replace(base, solver="pcg", options=base.options.replace(
                        val_fraction=self.val_fraction)),
                }
                for m, cfg in methods.items():
                    out.append(Part(f"error-{ds}-{k}-{m}", cfg, [f"randomize={levels}"], m))
                nb = self._base(ds, k, min(self.norm_sizes))
                out.append(Part(f"norm-{ds}-{k}", nb, [
                    "n_train=" + ",".join(map(str, self.norm_sizes)),
                    f"randomize=none,labels:{self.norm_noise:g}"]))
            ib = replace(self._base(ds, "gaussian", self.iter_n), solver="pcg",
                         options=Options(progress=False, val_fraction=0.0, tol=self.tol,
                                         max_iter=self.max_iter, precond="none"))
            out.append(Part(f"iterations-{ds}", ib, ["kernel=" + ",".join(self.kernels),
                                                     "randomize=" + ",".join(LABELS.values())]))
        return out

    def sgd_configs(self, dataset: str, sigmas: dict) -> list[SGDLinearConfig]:
        """The SGD part of ``dataset``: each kernel of ``sigmas`` (kernel -> the bandwidth
        its iterations part chose), true and random labels, the provable step (lr=None)."""
        return [SGDLinearConfig(dataset=dataset, n_train=self.sgd_n or self.iter_n,
                                n_test=self.n_test, seed=self.seed, kernel=k, sigma=sigmas[k],
                                epochs=self.sgd_epochs, batch_size=self.sgd_batch_size,
                                randomize=test)
                for k in self.kernels if k in sigmas for test in LABELS.values()]


def run_study(study: NoiseStudy, out_dir, *, plot: bool = True, log=print) -> StudyResult:
    """Run (or resume) every sweep, then write ``interpolation-noise.{csv,md}`` and plots."""
    res = StudyResult(NAME)
    error_rows, norm_rows, iter_rows = [], [], []
    for part in study.parts():
        points = run_part(part, out_dir, log=log)
        res.failed += failures(points)
        kind, ds = part.name.split("-")[0], part.base.dataset
        for labels, r in ok_records(points):
            row = dict(part=part.name, dataset=ds, kernel=r["kernel"]["name"],
                       sigma=r["kernel"].get("sigma"), n_train=r["n_train"],
                       noise=corruption(r["randomization"]), lam=r["lam"],
                       solver=r["solver"], iterations=r["iterations"],
                       train_error=r["train_error"], test_error=r["test_error"],
                       norm=r["norm"], relative_residual=r["relative_residual"])
            if kind == "error":
                row["method"] = part.tag
                error_rows.append(row)
            elif kind == "norm":
                norm_rows.append(row)
            else:
                row["labels"] = labels_name(labels["randomize"])
                iter_rows.append(row)
    sgd_records = _sgd_part(study, iter_rows, out_dir, res, log)
    res.rows = error_rows + norm_rows + iter_rows
    sections = [_error_section(error_rows), _norm_section(norm_rows, res),
                _iterations_section(iter_rows, study)]
    if res.failed:
        sections.append("Failed points:\n\n" + "\n".join(f"- {f}" for f in res.failed))
    res.files.update(write_report(out_dir, NAME, res.rows, [_header(study)] + sections))
    if plot:
        res.files.update(_plots(error_rows, norm_rows, out_dir))
        res.files.update(_sgd_plots(sgd_records, out_dir))
    return res


def labels_name(spec: str) -> str:
    """"true" or "random": the table's name of a randomization spec of :data:`LABELS`."""
    return "random" if spec != LABELS["true"] else "true"


def _sgd_part(study: NoiseStudy, iter_rows, out_dir, res: StudyResult, log) -> list[dict]:
    """Run (or reuse) the SGD runs and put their epochs to fit on the iterations rows."""
    records = []
    for ds in study.datasets:
        # the bandwidth the CG iterations ran at (chosen once on clean labels), so both
        # methods fit the same K
        sigmas = {r["kernel"]: r["sigma"] for r in iter_rows
                  if r["dataset"] == ds and r["labels"] == "true"}
        for c in study.sgd_configs(ds, sigmas):
            try:
                records.append(sgd_linear(c, Path(out_dir) / f"sgd-{ds}", progress=False,
                                          log=log))
            except InputError as e:       # a diverged or impossible run: reported, not fatal
                res.failed.append(f"{c.name()}: {str(e).splitlines()[0]}")
    fits = {}
    for rec in records:
        c = rec["config"]
        key = (c["dataset"], c["kernel"], labels_name(rec["randomization"]))
        fits[key] = epochs_to_fit(rec)
        near = first_epoch(rec["history"], lambda h: h["train_error"] <= NEAR_FIT)
        for row in iter_rows:
            if (row["dataset"], row["kernel"], row["labels"]) == key:
                row.update(sgd_n=rec["n_train"], sgd_lr=rec["lr"],
                           sgd_epochs_run=rec["epochs_run"], sgd_epochs_to_fit=fits[key],
                           sgd_fit=fit_text(rec), sgd_fitted=fits[key] is not None,
                           sgd_epochs_to_near_fit=near,
                           sgd_near_fit=within_text(near, rec["epochs_run"]),
                           sgd_train_error=rec["train_error"], sgd_test_error=rec["test_error"])
    res.measures["sgd_epochs_to_fit"] = fits
    return records


def _header(study: NoiseStudy) -> str:
    return (f"# Interpolation under label noise\n\nAfter {BMM18}.\n\n"
            f"Datasets {', '.join(study.datasets)}; n = {study.n_train:,} training points "
            f"(norm part: {', '.join(f'{n:,}' for n in study.norm_sizes)}), "
            f"{study.n_test:,} test points, seed {study.seed}. Label noise p: each training "
            "label replaced, with probability p, by a uniformly random class (test labels "
            "clean). Bandwidth: chosen on a validation split of the clean training set, "
            "held fixed over noise levels.\n")


def _error_section(rows) -> str:
    """One line per (dataset, kernel, noise): the three classifiers side by side."""
    table = {}
    for r in rows:
        key = (r["dataset"], r["kernel"], r["noise"])
        t = table.setdefault(key, dict(dataset=key[0], kernel=key[1], noise=key[2]))
        m = r["method"]
        t[f"{m}_test_error"] = r["test_error"]
        if m == "interpolating":
            t["interpolating_train_error"] = r["train_error"]
        if m == "ridge":
            t["lam"] = r["lam"]
        if m == "early-stopped":
            t["t_star"] = r["iterations"]
    lines = sorted(table.values(), key=lambda t: (t["dataset"], t["kernel"], t["noise"]))
    for t in lines:
        t["published"] = NOT_VERIFIABLE
    cols = [("dataset", "data"), ("kernel", "kernel"), ("noise", "noise p"),
            ("interpolating_train_error", "interp. train"),
            ("interpolating_test_error", "interp. test"), ("ridge_test_error", "ridge test"),
            ("lam", "lam*"), ("early-stopped_test_error", "early-stop test"),
            ("t_star", "t*"), ("published", "published (BMM18 Fig. 2-3)")]
    return ("## Test error against label noise\n\n" + markdown_table(lines, cols) +
            "\nPublished: BMM18 show, for MNIST, CIFAR-10 and other sets with added label "
            "noise, interpolating Gaussian and Laplacian classifiers within a small margin of "
            "regularized/early-stopped ones; their per-level numbers are read off plots, "
            f"so each is marked {NOT_VERIFIABLE!r} here.\n")


def _norm_section(rows, res: StudyResult) -> str:
    groups = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["kernel"], r["noise"]), []).append(r)
    lines = []
    for (ds, k, p), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["n_train"])
        slope = log_slope([r["n_train"] for r in rs], [r["norm"] for r in rs])
        for r in rs:
            lines.append(dict(dataset=ds, kernel=k, noise=p, n_train=r["n_train"],
                              norm=r["norm"], test_error=r["test_error"], slope=slope))
        res.summary.append(f"norm ~ n^{slope:.2f} ({ds}, {k}, noise {p:g})")
    cols = [("dataset", "data"), ("kernel", "kernel"), ("noise", "noise p"),
            ("n_train", "n"), ("norm", "RKHS norm"), ("test_error", "test error"),
            ("slope", "d log norm / d log n")]
    return ("## RKHS norm of the interpolant against n\n\n" + markdown_table(lines, cols) +
            "\nPublished: BMM18 (Section 3, Theorem 1 and its figure of norms against n) "
            "prove that with label noise the norm of a Gaussian-kernel interpolant grows "
            "nearly exponentially in n^(1/d); measured slopes: "
            f"{NOT_VERIFIABLE}. Compare the slopes of noisy against clean labels.\n")


def _ours(rows) -> str:
    """kernelfit's figures in words: per (dataset, kernel), true against random labels."""
    out = []
    for ds, k in sorted({(r["dataset"], r["kernel"]) for r in rows}):
        by = {r["labels"]: r for r in rows if (r["dataset"], r["kernel"]) == (ds, k)}
        if {"true", "random"} <= set(by) and "sgd_fit" in by["true"] and "sgd_fit" in by["random"]:
            t, r = by["true"], by["random"]
            out.append(f"{ds} {k}: SGD epochs to fit {t['sgd_fit']} (true) vs "
                       f"{r['sgd_fit']} (random labels), to <= {NEAR_FIT:.0%} train error "
                       f"{t['sgd_near_fit']} vs {r['sgd_near_fit']}"
                       f"; CG iterations "
                       f"{by['true']['iterations']} vs {by['random']['iterations']}")
    return "".join(f"- {line}\n" for line in out)


def _iterations_section(rows, study: NoiseStudy) -> str:
    for r in rows:
        r["published"] = NOT_VERIFIABLE
    rows = sorted(rows, key=lambda r: (r["dataset"], r["kernel"], r["labels"]))
    cols = [("dataset", "data"), ("kernel", "kernel"), ("labels", "labels"),
            ("n_train", "n"), ("iterations", "CG iterations"),
            ("train_error", "train error"), ("relative_residual", "residual"),
            ("sgd_n", "SGD n"), ("sgd_fit", "SGD epochs to fit"),
            ("sgd_near_fit", f"SGD epochs to <= {NEAR_FIT:.0%} train error"),
            ("sgd_train_error", "SGD train error (last epoch)"),
            ("published", "published epochs (BMM18 Sec. 5)")]
    return ("## Iterations to fit true and random labels\n\n" + markdown_table(rows, cols) +
            "\nCG: unpreconditioned conjugate gradient to the residual tolerance. SGD: "
            "`kernelfit sgd linear` from alpha = 0, step 1 / L_b (the same rule, and the same "
            f"step, for true and random labels), batch {study.sgd_batch_size}, at most "
            f"{study.sgd_epochs} epochs; epochs to fit: the first epoch at which the training "
            "error (argmax of the outputs) is 0.\n\n"
            "Published: BMM18 (abstract, read) show that the non-smooth Laplacian kernel fits "
            "random labels easily with a version of SGD (EigenPro), while fitting noisy data "
            "takes the smooth Gaussian many more epochs; their figures of epochs against "
            "label noise show random labels taking more epochs than true ones (epoch counts "
            f"{NOT_VERIFIABLE}: read off plots). Ours (plain SGD, and CG beside it):\n\n"
            + _ours(rows))


def _sgd_plots(records, out_dir) -> dict:
    """Train error against epoch, per dataset: every (kernel, labels) run on one panel."""
    files = {}
    for ds in sorted({r["config"]["dataset"] for r in records}):
        series = {}
        for r in records:
            if r["config"]["dataset"] == ds:
                # epoch 0 is alpha = 0 (chance error): from epoch 1 on, for the log axis
                h = [m for m in r["history"] if m["epoch"] > 0]
                name = f"{r['config']['kernel']}, {labels_name(r['randomization'])} labels"
                series[name] = ([m["epoch"] for m in h], [m["train_error"] for m in h])
        files[f"sgd_train_error_{ds}"] = line_plot(
            f"{out_dir}/sgd_train_error_{ds}.png", series, xlabel="epoch", logx=True,
            ylabel="training error", percent=True,
            title=f"{ds}: SGD epochs to fit true vs random labels (BMM18)")
    return files


def _plots(error_rows, norm_rows, out_dir) -> dict:
    files = {}
    for ds in sorted({r["dataset"] for r in error_rows}):
        series = {}
        for r in sorted(error_rows, key=lambda r: r["noise"]):
            if r["dataset"] == ds:
                s = series.setdefault(f"{r['kernel']}, {r['method']}", ([], []))
                s[0].append(100 * r["noise"])
                s[1].append(r["test_error"])
        files[f"error_vs_noise_{ds}"] = line_plot(
            f"{out_dir}/error_vs_noise_{ds}.png", series, xlabel="label noise (%)",
            ylabel="test error", percent=True,
            title=f"{ds}: interpolating vs regularized vs early-stopped (BMM18)")
    for ds in sorted({r["dataset"] for r in norm_rows}):
        series = {}
        for r in sorted(norm_rows, key=lambda r: r["n_train"]):
            if r["dataset"] == ds:
                s = series.setdefault(f"{r['kernel']}, noise {r['noise']:g}", ([], []))
                s[0].append(r["n_train"])
                s[1].append(r["norm"])
        files[f"norm_vs_n_{ds}"] = line_plot(
            f"{out_dir}/norm_vs_n_{ds}.png", series, xlabel="n (training points)",
            ylabel="RKHS norm of the interpolant", logx=True, logy=True,
            title=f"{ds}: the interpolant's norm grows with n under noise (BMM18)")
    return files
