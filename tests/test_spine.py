"""The spine: one resolution per fit, one mapping from options to settings, declared streaming.

Each of the first five tests is the regression test of a bug the old spine had
(issue 17, bugs 1-5); the last ones check the rules that keep it one spine.
"""

import argparse
import ast
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kernelfit.cli import build_parser
from kernelfit.errors import InputError
from kernelfit.experiments.run import RunConfig, fit_run
from kernelfit.options import Options


# -- bug 1: --solver pcg / cg on a GPU machine ---------------------------------------------
def test_pcg_on_a_machine_with_cuda_plans_on_the_host(monkeypatch):
    """backend "auto" resolves knowing the solver: the CG solvers stay on NumPy."""
    import kernelfit.backend as bmod
    from kernelfit.backend import NumpyBackend

    class FakeCuda(NumpyBackend):
        """A "GPU" backend: what the planner reads says CUDA."""

        name = "torch"
        on_gpu = True
        device_name = "cuda:0"

        def __init__(self, device=None):
            super().__init__()

        def free_memory(self):
            return 80 * 2**30

    monkeypatch.setattr(bmod, "_auto", lambda device: ("torch", "cuda"))
    monkeypatch.setattr(bmod, "TorchBackend", FakeCuda)
    bmod.get_backend.cache_clear()
    try:
        assert bmod.get_backend("auto").on_gpu          # the fake device is what auto finds
        for solver in ("pcg", "cg"):
            rec = fit_run(RunConfig(n_train=200, n_test=50, solver=solver)).record
            assert (rec.backend, rec.plan["backend"], rec.plan["storage"]) == \
                ("numpy", "numpy", "host")
    finally:
        bmod.get_backend.cache_clear()


# -- bugs 2 and 3: sweep maps every run setting, its own hold-out has its own name ----------
def _parse(*argv):
    return build_parser().parse_args(list(argv))


def test_sweep_scratch_reaches_the_options(tmp_path):
    from kernelfit.cli.sweep_cmd import base_config

    for flag in ("--scratch-dir", "--scratch"):
        config = base_config(_parse("sweep", flag, str(tmp_path), "--vary", "n_train=100"))
        assert config.options.scratch_dir == str(tmp_path)


def test_sweep_hold_out_for_sigma_is_not_pcgs_early_stopping():
    from kernelfit.cli.sweep_cmd import base_config

    args = _parse("sweep", "--solver", "pcg", "--sigma", "auto", "--vary", "n_train=100")
    assert base_config(args).options.val_fraction == 0.0          # pcg stops on tol
    assert args.sigma_val_fraction == 0.2                          # sigma's own hold-out
    args = _parse("sweep", "--solver", "pcg", "--val-fraction", "0.1", "--vary", "n_train=1")
    assert base_config(args).options.val_fraction == 0.1


def _sample(action) -> list[str]:
    """Command-line tokens that set ``action`` to a value other than its default."""
    flag = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        return [flag if action.default is not True else f"--no-{flag[2:]}"]
    if action.nargs == 0:                                   # store_true
        return [flag]
    if action.choices:
        return [flag, next(c for c in action.choices if c != action.default)]
    special = {"dataset": "npz:/tmp/spine.npz", "randomize": "labels:0.5",
               "preprocessing": "scale,flatten", "scheduler": "tcp://127.0.0.1:8786",
               "device": "cpu", "data_home": "/tmp/spine-home", "scratch_dir": "/tmp/spine",
               "feature_param": "J=2", "memory_limit": "3GB", "device_memory": "2GB",
               "sigma": "0.75", "tol": "0.25", "val_fraction": "0.3", "jitter": "1e-6"}
    return [flag, special.get(action.dest, "7")]


def _run_options():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices["run"]._actions
            if a.option_strings
            and a.dest not in ("help", "json", "save_model", "quiet", "force")]


@pytest.mark.parametrize("action", _run_options(), ids=lambda a: a.option_strings[0])
def test_every_run_option_reaches_a_sweeps_settings(action):
    """Each `kernelfit run` option, given to `kernelfit sweep`, lands in the same setting."""
    from kernelfit.cli.settings import run_config
    from kernelfit.cli.sweep_cmd import base_config

    tokens = _sample(action)
    run_args = _parse("run", *tokens)
    expected = run_config(run_args)
    assert expected != run_config(_parse("run")), f"{tokens} changed no setting of a run"
    got = base_config(_parse("sweep", *tokens, "--vary", "n_train=100"))
    # the same settings, but for the points' progress bars, which a sweep turns off
    assert replace(got, options=got.options.replace(progress=True)) == expected


def test_an_option_a_command_does_not_take_is_refused(capsys):
    with pytest.raises(SystemExit):
        _parse("sweep", "--save-model", "m.kfm", "--vary", "n_train=100")
    assert "unrecognized arguments: --save-model" in capsys.readouterr().err


# -- bug 4: streaming is a capability ------------------------------------------------------
def test_streaming_a_map_without_column_chunks_is_refused():
    from kernelfit.features import make_features

    for name in ("raw", "gabor", "scattering"):
        assert not make_features(name).streamable
    with pytest.raises(InputError, match="cannot be streamed"):
        fit_run(RunConfig(n_train=100, n_test=20, features="gabor", stream=True))


def test_a_large_non_streamable_run_is_never_streamed(monkeypatch):
    import kernelfit.experiments.run as runmod

    monkeypatch.setattr(runmod, "STREAM_ABOVE_BYTES", 0)         # everything is "large"
    monkeypatch.setattr("kernelfit.gram_stream.build_gram_streamed",
                        lambda *a, **k: pytest.fail("a raw-pixel run was streamed"))
    rec = fit_run(RunConfig(n_train=100, n_test=20)).record
    assert rec.solver == "cholesky" and not rec.plan["streamed"]


# -- bug 5: one plan per fit, and the record reports it ------------------------------------
def test_plan_fit_runs_once_per_run_and_the_record_reports_that_plan(monkeypatch):
    import kernelfit.experiments.run_plan as run_plan
    import kernelfit.model as model
    from kernelfit.plan import plan_fit

    calls = []

    def counted(*a, **k):
        calls.append(k.get("solver"))
        return plan_fit(*a, **k)

    monkeypatch.setattr(run_plan, "plan_fit", counted)
    monkeypatch.setattr(model, "plan_fit", counted)
    fitted = fit_run(RunConfig(n_train=150, n_test=30))
    assert len(calls) == 1
    ran = fitted.estimator.plan_
    assert fitted.record.plan == {k: v for k, v in ran.as_dict().items() if k != "options"}
    assert fitted.record.plan["dtype"] == fitted.record.dtype == "float64"


def test_an_estimator_plans_itself_once_and_refuses_a_plan_for_another_fit(monkeypatch):
    from kernelfit import KernelInterpolant
    from kernelfit.plan import plan_fit

    X, y = np.random.default_rng(0).standard_normal((40, 3)), np.arange(40.0)
    m = KernelInterpolant(sigma=2.0).fit(X, y)
    assert (m.plan_.n, m.plan_.d, m.plan_.dtype, m.plan_.options.dtype) == \
        (40, 3, "float64", "float64")
    with pytest.raises(InputError, match="plan the fit it describes"):
        KernelInterpolant(sigma=2.0).fit_planned(X, y, plan_fit(41, 3, 1))
    given = plan_fit(40, 3, 1, options=Options(dtype="float32"))
    m = KernelInterpolant(sigma=2.0).fit_planned(X, y, given)
    assert m.plan_ is given and m.X_fit_.dtype == np.float32


# -- the rules that keep it one spine ------------------------------------------------------
ENGINE = Path(__file__).resolve().parents[1] / "kernelfit"
NOT_ENGINE = {"experiments", "data", "pipeline", "studies", "distributed"}


def _numeric(node) -> bool:
    """A literal number, or an expression / tuple / dict made of literal numbers only."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    if isinstance(node, ast.UnaryOp):
        return _numeric(node.operand)
    if isinstance(node, ast.BinOp):
        return _numeric(node.left) and _numeric(node.right)
    if isinstance(node, (ast.Tuple, ast.List)):
        return bool(node.elts) and all(_numeric(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return bool(node.values) and all(_numeric(v) for v in node.values)
    return False


# Numerical tolerances and file-format versions, not sizes: each is a property of an
# algorithm or a format, kept beside it.
NOT_SIZES = {"RESIDUAL_LIMIT", "AUTO_JITTER", "PROGRESS_FORMAT", "COND_EPS_LIMIT", "SWAMP_FACTOR",
             "STALL_RATIO", "DEFAULT_WEIGHT_STD"}  # the last: a kernel parameter's default


def test_every_engine_size_constant_lives_in_sizes():
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        rel = path.relative_to(ENGINE)
        if path.name == "sizes.py" or NOT_ENGINE & set(rel.parts):
            continue
        for node in ast.parse(path.read_text()).body:
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AnnAssign) and node.value
                       else [])
            for t in targets:
                if (isinstance(t, ast.Name) and t.id not in NOT_SIZES
                        and _numeric(node.value)):
                    found.append(f"{rel}:{node.lineno} {t.id}")
    assert not found, f"numeric module-level constants outside sizes.py: {found}"


def test_sizes_imports_nothing_of_the_project():
    tree = ast.parse((ENGINE / "sizes.py").read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith(("kernelfit", ".")) or m == ""]
