"""Norm-versus-error studies: one :func:`~kernelfit.pipeline.run.run` per point of a grid.

A sweep is a base :class:`~kernelfit.pipeline.run.RunConfig` and axes, each
a setting and the values it takes (``n_train=1000,2000``,
``randomize=labels:0,labels:0.5``); the points are the cartesian product.
Every point's outcome (its run record, or the error that stopped it) is
written through :class:`~kernelfit.pipeline.results.ResultStore` the
moment it is known, so an interrupted sweep resumes: a point whose record
exists with the same result-changing settings is reused, a failed one is
retried. Failures never vanish: they are rows of the CSV and the table.

``sigma="auto"`` picks the bandwidth on a validation split carved from the
*training* set (:func:`kernelfit.pipeline.select.select`), on the base
setting with clean labels, and holds it fixed over the grid: a corruption or
n_train axis then measures the data, not a re-tuned model. Only axes that
change the feature space or the kernel (``features``, ``kernel``, ...) get
one selection per value, since one bandwidth cannot serve two feature scales.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
import traceback
import typing
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from kernelfit.atomic import write_text_atomic
from kernelfit.errors import InputError, KernelfitError
from kernelfit.options import Options
from kernelfit.pipeline.report import pct
from kernelfit.pipeline.results import (
    NOT_RESULT_SETTINGS,
    ResultStore,
    result_settings,
    settings_key,
    with_data,
)
from kernelfit.pipeline.run import RunConfig, run
from kernelfit.studies.sweep_report import draw_plots, markdown, to_csv

_OPTION_AXES = tuple(f.name for f in fields(Options)
                     if f.name not in NOT_RESULT_SETTINGS | {"overwrite_gram"})
_CONFIG_AXES = tuple(f.name for f in fields(RunConfig)
                     if f.name not in NOT_RESULT_SETTINGS | {"options"})
AXES = _CONFIG_AXES + _OPTION_AXES
# Axes whose every value needs its own bandwidth under sigma="auto".
SELECTION_AXES = ("dataset", "features", "feature_params", "preprocessing", "kernel", "degree",
                  "coef0", "lam", "seed", "depth", "weight_std", "bias_std")
# A relative residual above this (per dtype) marks a point "suspect" in its row.
RESIDUAL_WARN = {"float64": 1e-6, "float32": 1e-3}
_HINTS = {**typing.get_type_hints(RunConfig), **typing.get_type_hints(Options)}


def _choices(name):
    from kernelfit.data import DATASETS
    from kernelfit.engine.kernels import KERNELS
    from kernelfit.engine.plan import SOLVERS
    from kernelfit.features import FEATURES
    return {"dataset": tuple(DATASETS), "features": FEATURES, "kernel": KERNELS,
            "solver": SOLVERS}.get(name)


def parse_value(name: str, text: str):
    """``text`` as the value of setting ``name`` (a RunConfig or Options field).

    Numbers become int/float by the field's type, ``none`` is None where the
    field allows it, ``randomize`` is normalized (``labels:0`` is ``none``),
    ``preprocessing`` steps are joined with ``+`` (``scale+whiten``) and
    ``feature_params`` is ``KEY=VALUE`` pairs joined with ``+``.

    Raises
    ------
    InputError
        For an unknown setting (the message lists the valid ones) or a value
        the setting cannot take.
    """
    if name not in AXES:
        raise InputError(f"unknown sweep axis {name!r}; valid: {', '.join(AXES)}")
    t = text.strip()
    bad = f"{name}={text!r}"
    if name == "randomize":
        from kernelfit.data.randomize import parse_randomization
        return parse_randomization(t).describe()
    if name == "preprocessing":
        from kernelfit.data.preprocess import Preprocessing
        return ",".join(Preprocessing.parse(t.replace("+", ",")).steps) or "none"
    if name == "feature_params":
        out = {}
        for pair in filter(None, t.split("+")):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise InputError(f"{bad}: feature_params values are KEY=VALUE pairs joined "
                                 "with '+', e.g. feature_params=J=1+L=8,J=2+L=8")
            try:                    # numbers and true/false as JSON reads them, else text
                out[key.strip()] = json.loads(value.strip())
            except ValueError:
                out[key.strip()] = value.strip()
        return out
    kinds = typing.get_args(_HINTS[name]) or (_HINTS[name],)
    if type(None) in kinds and t.lower() == "none":
        return None
    for kind in (bool, int, float, str):
        if kind not in kinds:
            continue
        value = _cast(kind, t)
        if value is not None:
            break
    else:
        raise InputError(f"{bad}: expected {' or '.join(k.__name__ for k in kinds)}")
    if isinstance(value, str) and float in kinds and value != "auto":
        raise InputError(f"{bad}: expected a number or 'auto'")
    choices = _choices(name)
    if choices and value not in choices:
        raise InputError(f"{bad}: choose from {', '.join(choices)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "coef0":
        low = 0 if name in ("lam", "seed", "jitter", "refine_steps", "depth", "bias_std") \
            else None
        if (low is None and value <= 0) or (low is not None and value < low):
            raise InputError(f"{bad}: must be {'>= 0' if low is not None else '> 0'}")
    if name in _OPTION_AXES:
        Options(**{name: value})  # Options checks its own fields
    return value


def _cast(kind, t):
    if kind is bool:
        return {"true": True, "yes": True, "false": False, "no": False}.get(t.lower())
    try:
        v = float(t.replace("_", ""))
    except ValueError:
        return t if kind is str and t else None
    if kind is int:
        return int(v) if v.is_integer() else None
    return v if kind is float and math.isfinite(v) else None


@dataclass(frozen=True)
class Axis:
    """One setting and its values; ``labels`` are the values as written (for names, tables)."""

    name: str
    values: tuple
    labels: tuple


def parse_axis(spec: str) -> Axis:
    """``"NAME=V1,V2,..."`` as an :class:`Axis` (values parsed by :func:`parse_value`)."""
    name, sep, rest = spec.partition("=")
    name = name.strip().replace("-", "_")
    labels = tuple(v.strip() for v in rest.split(",")) if sep else ()
    if not name or not labels or not all(labels):
        raise InputError(f"--vary takes NAME=V1,V2,... (e.g. n_train=1000,2000), got {spec!r}")
    values = tuple(parse_value(name, v) for v in labels)
    if "auto" in values:
        raise InputError(f"--vary {name}=auto would select on each point's own training "
                         f"labels (corrupted ones too); use --{name} auto instead: chosen once "
                         "on the clean base setting, then held fixed")
    seen = [json.dumps(v, sort_keys=True) for v in values]
    if len(set(seen)) != len(seen):
        raise InputError(f"--vary {spec!r} lists a value twice (after parsing: {list(values)})")
    return Axis(name, values, labels)


def with_setting(config: RunConfig, name: str, value) -> RunConfig:
    """``config`` with one RunConfig or Options field changed (feature_params are merged)."""
    if name in _OPTION_AXES:
        return replace(config, options=config.options.replace(**{name: value}))
    if name == "feature_params":
        value = {**config.feature_params, **value}
    return replace(config, **{name: value})


@dataclass
class Point:
    """One grid point: where it sits on the axes, its config, and its outcome."""

    name: str
    labels: dict
    config: RunConfig
    settings: dict
    status: str = "pending"        # "ok", "failed"
    reused: bool = False
    record: dict | None = None
    error: str | None = None
    warnings: list = field(default_factory=list)
    selection: dict | None = None
    seconds: float = 0.0


def grid(base: RunConfig, axes: list[Axis]) -> list[tuple[dict, RunConfig]]:
    """(labels by axis, config) for every point of the product, first axis slowest."""
    if not axes:
        raise InputError("a sweep needs at least one --vary NAME=V1,V2,... axis")
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise InputError(f"an axis is given twice: {names}")
    out = []
    for combo in itertools.product(*(range(len(a.values)) for a in axes)):
        config, labels = base, {}
        for a, i in zip(axes, combo, strict=True):
            config = with_setting(config, a.name, a.values[i])
            labels[a.name] = a.labels[i]
        out.append((labels, config))
    return out


def _slug(labels: dict) -> str:
    text = "_".join(f"{k}-{v}" for k, v in labels.items())
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text)[:100]


def select_once(config: RunConfig, *, sigma_grid=None, val_fraction: float = 0.2,
                store: ResultStore | None = None, log=print) -> dict:
    """Choose ``config``'s "auto" sigma / lam on a validation split of its *clean* training set.

    The labels are the true ones whatever ``config.randomize`` says, and no
    test point is looked at. Returns the
    :class:`~kernelfit.pipeline.select.Selection` as a dict (``params``,
    ``rule``, ``scores``...), cached in ``store`` like a sweep point.
    """
    from kernelfit.features import make_features
    from kernelfit.pipeline.run import auto_grid, featurize, prepare, should_stream
    from kernelfit.pipeline.select import select

    clean = replace(config, randomize="none")
    settings = with_data({"on": result_settings(clean), "sigma_grid": sigma_grid,
                          "val_fraction": val_fraction, "split": "training set only"},
                         clean.dataset, clean.data_home)
    name = f"select-{clean.dataset}-{clean.features}-{settings_key(settings)}"
    if store is not None and (saved := store.load(name, settings, log=log,
                                                  label="selection")):
        log(f"selection: reusing {store.path(name)}: {saved['summary']}")
        return {k: v for k, v in saved.items() if k != "settings"}
    data = prepare(clean)
    fmap = make_features(clean.features, seed=clean.seed, **clean.feature_params)
    fmap.fit(data.train_images)
    if should_stream(clean, fmap, len(data.train_labels) + len(data.test_labels)):
        raise InputError(f"cannot select on streamed {clean.features} features (too large "
                         "to hold): give --sigma / --lam values, or --no-stream")
    # Test features are made (and cached for the clean point) but never looked at here.
    X, _ = featurize(clean, fmap, data)
    grid_ = auto_grid(clean, X)    # the same grid `kernelfit run --sigma auto` searches
    if clean.sigma == "auto" and sigma_grid:
        grid_["sigma"] = list(sigma_grid)
    sel = select(X, data.train_labels, kernel=clean.kernel, grid=grid_,
                 val_fraction=val_fraction, seed=clean.seed, options=clean.options)
    out = {**sel.as_dict(), "grid": grid_, "summary": f"{clean.features}: {sel.summary()}"}
    log(f"selection: {out['summary']}")
    if store is not None:
        store.save(name, settings, out)
    return out


@dataclass
class SweepResult:
    """The points in grid order, the files written, and the plots skipped (with why)."""

    axes: list
    points: list
    selections: list = field(default_factory=list)
    files: dict = field(default_factory=dict)
    skipped_plots: dict = field(default_factory=dict)

    @property
    def failed(self) -> list:
        return [p for p in self.points if p.status != "ok"]


def run_sweep(base: RunConfig, axes: list[Axis], out_dir, *, sigma_grid=None,
              val_fraction: float = 0.2, fail_fast: bool = False, plot: bool = True,
              log=print) -> SweepResult:
    """Run every point of the grid (reusing finished ones) and write the CSV, table and plots.

    Parameters
    ----------
    base : RunConfig
        The settings every point starts from. ``sigma="auto"`` / ``lam="auto"``
        are chosen by :func:`select_once` on the base setting with clean
        labels (once per value of the :data:`SELECTION_AXES`) and held fixed.
    axes : list of Axis
        The grid: the cartesian product of the axes' values.
    out_dir : path
        ``points/`` (one JSON per point), ``selection/``, ``sweep.csv``,
        ``sweep.md`` and the PNG plots go here.
    sigma_grid : list of float, optional
        The bandwidths ``sigma="auto"`` tries (default: around the median distance).
    fail_fast : bool
        Stop at the first failed point (the rest are listed as not run).
        Otherwise every point runs and failures are recorded as results.
    log : callable
        Progress lines (``print``; a no-op for quiet).
    """
    out_dir = Path(out_dir)
    store, sel_store = ResultStore(out_dir / "points"), ResultStore(out_dir / "selection")
    auto = base.sigma == "auto" or base.lam == "auto"
    if base.sigma == "auto" and (base.gamma is not None or any(a.name in ("sigma", "gamma")
                                                               for a in axes)):
        raise InputError("--sigma auto selects the bandwidth itself: drop --gamma and any "
                         "--vary sigma/gamma axis (or give --sigma a number)")
    combos = grid(base, axes)
    result = SweepResult(axes=list(axes), points=[])
    selections: dict[str, dict | Exception] = {}
    fingerprints: dict[tuple, dict | Exception] = {}   # (dataset, data_home) -> key entry
    stop = False
    for i, (labels, config) in enumerate(combos, 1):
        tag = f"[{i}/{len(combos)}] " + " ".join(f"{k}={v}" for k, v in labels.items())
        selection = None
        if auto and not stop:
            on = replace(base, **{k: getattr(config, k) for k in SELECTION_AXES
                                  if k in _CONFIG_AXES})
            key = json.dumps(result_settings(on), sort_keys=True)
            if key not in selections:
                try:
                    selections[key] = select_once(on, sigma_grid=sigma_grid,
                                                  val_fraction=val_fraction, store=sel_store,
                                                  log=log)
                    result.selections.append(selections[key])
                except KernelfitError as err:   # the points that need it fail, with why
                    selections[key] = err
                    log(f"selection FAILED: {type(err).__name__}: {err}")
            selection = selections[key]
            if isinstance(selection, dict):
                config = replace(config, **{k: selection["params"][k] for k in ("sigma", "lam")
                                            if getattr(config, k) == "auto"})
        settings = result_settings(config)
        if isinstance(selection, dict):
            settings["selection"] = {k: selection[k] for k in ("params", "rule", "n_fit",
                                                               "n_val")}
        point = Point(f"{_slug(labels)}-{settings_key(settings, 8)}", labels, config, settings,
                      selection=settings.get("selection"))
        result.points.append(point)
        if stop:
            point.status, point.error = "not-run", "not run: an earlier point failed (--fail-fast)"
            continue
        where = (config.dataset, config.data_home)
        if where not in fingerprints:
            fingerprints[where] = _keyed_by_data(config)
        data = fingerprints[where]
        if isinstance(data, dict):
            point.settings = settings = {**settings, **data}
        if isinstance(selection, Exception):
            point.status = "failed"
            point.error = f"selection failed: {type(selection).__name__}: {selection}"
        elif isinstance(data, Exception):
            point.status = "failed"
            point.error = f"its data cannot be read: {type(data).__name__}: {data}"
        else:
            saved = store.load(point.name, settings, log=log, label=tag)
            if saved and saved.get("status") == "ok":
                point.status, point.reused, point.record = "ok", True, saved["record"]
                point.warnings = saved.get("warnings", [])
                point.seconds = saved.get("seconds", 0.0)
                log(f"{tag}: reusing {store.path(point.name)}")
                continue
            if saved:
                log(f"{tag}: retrying (failed before: {saved.get('error')})")
            _run_point(point)
        payload = {k: getattr(point, k) for k in ("labels", "status", "record", "error",
                                                  "warnings", "seconds")}
        store.save(point.name, settings, payload)
        if point.status == "ok":
            r = point.record
            log(f"{tag}: train {100 * r['train_error']:.2f}%  test "
                f"{pct(r['test_error'])}  norm {r['norm']:.4g}  ({point.seconds:.1f} s)"
                + "".join(f"\n    warning: {w}" for w in point.warnings))
        else:
            log(f"{tag}: FAILED: {point.error}")
            stop = fail_fast
    result.files["csv"] = write_text_atomic(out_dir / "sweep.csv", to_csv(result.points, axes))
    result.files["markdown"] = write_text_atomic(out_dir / "sweep.md",
                                                 markdown(result.points, axes,
                                                          result.selections))
    if plot:
        drawn, result.skipped_plots = draw_plots(result.points, axes, out_dir)
        result.files.update(drawn)
    return result


def _keyed_by_data(config: RunConfig) -> dict | Exception:
    """The data fingerprint entry of a point's key, or the error that stops reading the data."""
    try:
        settings = with_data({}, config.dataset, config.data_home)
    except KernelfitError as err:
        return err
    return settings


def _run_point(point: Point) -> None:
    """Fit one point; any error becomes the point's result instead of ending the sweep."""
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            point.record = run(point.config).to_dict()
        except Exception as err:  # noqa: BLE001 -- recorded, reported, exit status set
            point.status, point.error = "failed", f"{type(err).__name__}: {err}"
            if not isinstance(err, KernelfitError):  # not on purpose: keep where it came from
                point.error += "\n" + traceback.format_exc(limit=-3).strip()
    point.seconds = time.perf_counter() - t
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)  # not ours
        else:
            point.warnings.append(f"{w.category.__name__}: {w.message}")
    if point.record is None:
        return
    r = point.record
    point.warnings += [w for w in r.get("warnings", []) if w not in point.warnings]
    numbers = [r["train_error"], r["norm"], r["relative_residual"]] + (
        [r["test_error"]] if r["test_error"] is not None else [])
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
        point.status, point.error = "failed", f"non-finite result: {numbers}"
        return
    point.status = "ok"
    limit = RESIDUAL_WARN.get(r["dtype"], 1e-3)
    if r["relative_residual"] > limit:
        point.warnings.append(f"relative residual {r['relative_residual']:.2e} > {limit:g} "
                              f"for {r['dtype']}: the solve is not exact")
    if r["lam"] == 0 and r["train_error"] > 0:
        point.warnings.append(f"lam = 0 but train error {100 * r['train_error']:.2f}%: "
                              "the interpolant does not interpolate")
