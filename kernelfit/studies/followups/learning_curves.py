"""`kernelfit study learning-curves`: test error against n, and its exponent (Spigler et al.).

Spigler, Geiger & Wyart (arXiv 1905.10843; J. Stat. Mech. 2020) measure how
the test error of kernel regression and classification decays with the
number of training points, error ~ n^-beta, on MNIST and CIFAR-10 with
Gaussian and Laplacian kernels, and find beta about 0.4 for MNIST and about
0.1 for CIFAR-10, nearly the same for both kernels and for both tasks; they
relate beta to the data's effective dimension and smoothness through a
teacher-student model.

Here: the minimum-norm interpolant (lam = 0) of one-hot labels at every n of
a grid, several seeds (each draws its own training subset), the kernel's
default scale 1 / (d Var X) held fixed over n (their learning curves also fix
the bandwidth). beta is fitted per seed by least squares on log error against
log n, for the zero-one error and for the square loss on the one-hot targets;
the table gives the mean and the standard deviation over seeds, and the fit of
the seed-averaged curve. Their task (binary labels from class groups) and
bandwidths were not checked against the paper here; compare signs and orders
of magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernelfit.errors import InputError
from kernelfit.options import Options
from kernelfit.params import whole
from kernelfit.pipeline.run import RunConfig
from kernelfit.studies.followups.common import (
    NOT_VERIFIABLE,
    SGW19,
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

NAME = "learning-curves"
KERNELS = ("gaussian", "laplacian")
#: The exponents as SGW19's abstract states them (both kernels, both tasks).
PUBLISHED_BETA = {"mnist": "about 0.4 (SGW19 abstract and Fig. 1)",
                  "cifar10": "about 0.1 (SGW19 abstract and Fig. 1)"}


@dataclass
class LearningCurveStudy:
    datasets: tuple = ("mnist", "cifar10")
    kernels: tuple = KERNELS
    sizes: tuple = (500, 1000, 2000, 4000, 8000, 16000)
    n_test: int = 2000
    seeds: tuple = (0, 1, 2)

    def __post_init__(self):
        check_sizes("sizes", list(self.sizes), 2)
        if len(self.sizes) < 2:
            raise InputError("a learning curve needs at least two sizes")
        whole("n_test", self.n_test, 1)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"seeds must be distinct, got {list(self.seeds)}")
        for s in self.seeds:
            whole("seed", s, 0)
        for k in self.kernels:
            if k not in KERNELS:
                raise InputError(f"learning curves compare {', '.join(KERNELS)}; got {k!r}")
        if not self.datasets:
            raise InputError("give at least one dataset")

    @classmethod
    def small(cls, **kw) -> LearningCurveStudy:
        return cls(**{**dict(datasets=("digits",), sizes=(100, 200, 400, 800), n_test=500,
                             seeds=(0, 1, 2)), **kw})

    @classmethod
    def full(cls, **kw) -> LearningCurveStudy:
        return cls(**kw)

    def parts(self) -> list[Part]:
        out = []
        for ds in self.datasets:
            for k in self.kernels:
                base = RunConfig(dataset=ds, n_train=self.sizes[0], n_test=self.n_test,
                                 kernel=k, options=Options(progress=False))
                out.append(Part(f"curve-{ds}-{k}", base,
                                ["n_train=" + ",".join(map(str, self.sizes)),
                                 "seed=" + ",".join(map(str, self.seeds))], f"{ds}, {k}"))
        return out


def run_study(study: LearningCurveStudy, out_dir, *, plot: bool = True,
              log=print) -> StudyResult:
    res = StudyResult(NAME)
    curves = {}
    for part in study.parts():
        points = run_part(part, out_dir, log=log)
        res.failed += failures(points)
        for _, r in ok_records(points):
            row = dict(dataset=part.base.dataset, kernel=part.base.kernel, n_train=r["n_train"],
                       seed=r["seed"], sigma=r["kernel"].get("sigma"),
                       train_error=r["train_error"], test_error=r["test_error"],
                       test_sq_loss=r.get("test_sq_loss"), norm=r["norm"])
            res.rows.append(row)
            curves.setdefault((part.base.dataset, part.base.kernel), []).append(row)
    fits = [_fit(ds, k, rows) for (ds, k), rows in curves.items()]
    res.measures["fits"] = fits
    for f in fits:
        res.summary.append(f"{f['dataset']}, {f['kernel']}: beta = {f['beta']:.3f} "
                           f"+- {f['beta_std']:.3f} (0-1 error), {f['beta_sq']:.3f} "
                           f"+- {f['beta_sq_std']:.3f} (square loss)")
    sections = [_header(study), _curve_table(curves), _fit_table(fits)]
    if res.failed:
        sections.append("Failed points:\n\n" + "\n".join(f"- {f}" for f in res.failed))
    res.files.update(write_report(out_dir, NAME, res.rows + fits, sections))
    if plot:
        res.files.update(_plots(curves, fits, out_dir))
    return res


def _fit(ds: str, k: str, rows) -> dict:
    """beta per seed (minus the log-log slope), then its mean and spread over seeds."""
    out = dict(dataset=ds, kernel=k, published_beta=PUBLISHED_BETA.get(ds, NOT_VERIFIABLE))
    for key, name in (("test_error", "beta"), ("test_sq_loss", "beta_sq")):
        per_seed = []
        for s in sorted({r["seed"] for r in rows}):
            rs = sorted((r for r in rows if r["seed"] == s), key=lambda r: r["n_train"])
            per_seed.append(-log_slope([r["n_train"] for r in rs], [r[key] for r in rs]))
        vals = np.array([b for b in per_seed if math.isfinite(b)])
        out[name] = float(vals.mean()) if len(vals) else math.nan
        out[name + "_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        sizes = sorted({r["n_train"] for r in rows})
        mean = [np.mean([r[key] for r in rows if r["n_train"] == n]) for n in sizes]
        out[name + "_of_mean"] = -log_slope(sizes, mean)
    return out


def _header(study: LearningCurveStudy) -> str:
    return (f"# Learning curves\n\nAfter {SGW19}.\n\nDatasets {', '.join(study.datasets)}; "
            f"n = {', '.join(f'{n:,}' for n in study.sizes)}; {study.n_test:,} test points; "
            f"seeds {', '.join(map(str, study.seeds))}; the minimum-norm interpolant "
            "(lam = 0) of one-hot labels at the kernel's default scale 1 / (d Var X).\n")


def _curve_table(curves) -> str:
    lines = []
    for (ds, k), rows in sorted(curves.items()):
        for n in sorted({r["n_train"] for r in rows}):
            rs = [r for r in rows if r["n_train"] == n]
            err = np.array([r["test_error"] for r in rs])
            sq = np.array([r["test_sq_loss"] for r in rs])
            lines.append(dict(dataset=ds, kernel=k, n_train=n, seeds=len(rs),
                              test_error=float(err.mean()), sd=100 * float(err.std()),
                              test_sq_loss=float(sq.mean())))
    cols = [("dataset", "data"), ("kernel", "kernel"), ("n_train", "n"), ("seeds", "seeds"),
            ("test_error", "test error (0-1), mean"), ("sd", "sd (points)"),
            ("test_sq_loss", "test square loss, mean")]
    return "## Test error against n\n\n" + markdown_table(lines, cols)


def _fit_table(fits) -> str:
    cols = [("dataset", "data"), ("kernel", "kernel"), ("beta", "beta (0-1)"),
            ("beta_std", "sd over seeds"), ("beta_of_mean", "beta of the mean curve"),
            ("beta_sq", "beta (square loss)"), ("beta_sq_std", "sd"),
            ("published_beta", "published beta")]
    return ("## Fitted exponents, error ~ n^-beta\n\n" + markdown_table(fits, cols) +
            "\nPublished: SGW19 measure beta on MNIST and CIFAR-10 with Gaussian and "
            "Laplacian kernels; the per-kernel values and their uncertainties are "
            f"{NOT_VERIFIABLE} here (only the rounded values of the abstract are quoted).\n")


def _plots(curves, fits, out_dir) -> dict:
    files = {}
    for ds in sorted({d for d, _ in curves}):
        series = {}
        for (d, k), rows in sorted(curves.items()):
            if d != ds:
                continue
            f = next(f for f in fits if f["dataset"] == d and f["kernel"] == k)
            sizes = sorted({r["n_train"] for r in rows})
            mean = [np.mean([r["test_error"] for r in rows if r["n_train"] == n])
                    for n in sizes]
            sd = [np.std([r["test_error"] for r in rows if r["n_train"] == n]) for n in sizes]
            series[f"{k}: beta = {f['beta']:.2f} +- {f['beta_std']:.2f}"] = (sizes, mean, sd)
        files[f"learning_curve_{ds}"] = line_plot(
            Path(out_dir) / f"learning_curve_{ds}.png", series, xlabel="n (training points)",
            ylabel="test error", logx=True, logy=True,
            title=f"{ds}: learning curves of the interpolant (SGW19: {PUBLISHED_BETA.get(ds, '')})")
    return files
