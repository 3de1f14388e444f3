"""One result record per run: a dataclass, written as JSON, printed as a table.

Records are written whole or not at all (temporary file + rename), and many
records collect into a Markdown table for the experiments.
"""

from __future__ import annotations

import platform
import resource
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .atomic import write_json_atomic


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def versions() -> dict:
    import scipy
    import sklearn

    import kernelfit
    return {"kernelfit": kernelfit.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "sklearn": sklearn.__version__}


@dataclass
class RunRecord:
    """Everything one fit produced, as DESIGN.md lists it."""

    dataset: str
    n_train: int
    n_test: int
    kernel: dict
    solver: str
    dtype: str
    lam: float
    train_error: float
    test_error: float | None
    norm: float
    relative_residual: float
    features: str = "raw"
    feature_params: dict = field(default_factory=dict)
    feature_dim: int | None = None
    preprocessing: list = field(default_factory=list)
    randomization: str = "none"
    backend: str = "numpy"
    jitter: float = 0.0
    iterations: int = 0
    timings: dict = field(default_factory=dict)
    gflops: dict = field(default_factory=dict)
    peak_rss_bytes: int = 0
    seed: int | None = None
    versions: dict = field(default_factory=versions)
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> RunRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def write_json(self, path) -> Path:
        """Write the record atomically: a reader never sees half a file."""
        return write_json_atomic(path, self.to_dict())

    def table(self) -> str:
        """A readable terminal table of the headline figures and the stage times."""
        kern = ", ".join(f"{k}={_fmt(v)}" for k, v in self.kernel.items() if k != "name")
        rows = [
            ("dataset", f"{self.dataset}  (n_train={self.n_train:,}, n_test={self.n_test:,})"),
            ("features", f"{self.features}" + (f"  (dim {self.feature_dim:,})"
                                               if self.feature_dim else "")),
            ("kernel", f"{self.kernel.get('name')}  ({kern})"),
            ("solver", f"{self.solver}, {self.dtype}, lambda={_fmt(self.lam)}"
                       + (f", jitter={_fmt(self.jitter)}" if self.jitter else "")),
            ("train error", _pct(self.train_error)),
            ("test error", _pct(self.test_error)),
            ("norm", f"{self.norm:.4g}"),
            ("residual", f"{self.relative_residual:.2e}"),
        ]
        if self.randomization != "none":
            rows.insert(2, ("randomization", self.randomization))
        if self.iterations:
            rows.append(("iterations", str(self.iterations)))
        if self.timings:
            rows.append(("time", "  ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())))
        if self.gflops:
            rows.append(("GFLOP/s", "  ".join(f"{k} {v:.0f}" for k, v in self.gflops.items())))
        rows.append(("peak memory", f"{self.peak_rss_bytes / 2**20:,.0f} MiB"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def markdown_table(records, columns=("dataset", "features", "kernel", "n_train", "n_test",
                                     "train_error", "test_error", "norm")) -> str:
    """Records as a Markdown table (errors in %, kernels as name + scale)."""
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    lines = []
    for r in records:
        d = r.to_dict() if isinstance(r, RunRecord) else r
        cells = []
        for c in columns:
            v = d.get(c)
            if c in ("train_error", "test_error") and v is not None:
                cells.append(f"{100 * v:.2f}%")
            elif c == "kernel" and isinstance(v, dict):
                sigma = f" (sigma={v['sigma']:.3g})" if "sigma" in v else ""
                cells.append(v.get("name", "") + sigma)
            else:
                cells.append(_fmt(v))
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
