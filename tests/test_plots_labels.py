"""The study figures: every y-axis labelled, errors in percent as in the tables, times readable.

Each figure is built from a small real run (or, for `compare`, from rows
that hold what its records hold) and inspected as a matplotlib Figure.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from kernelfit import plots  # noqa: E402


def _unlabelled(fig) -> list[str]:
    """The axes of ``fig`` whose y-axis has no label (named by their title)."""
    return [ax.get_title() or repr(ax) for ax in fig.axes if not ax.get_ylabel().strip()]


@pytest.mark.parametrize("low, high", [(0.3, 4000.0), (1.0, 1.0), (0.0123, 0.0456), (2, 5),
                                       (7e-4, 3.1e5), (100.0, 1e5), (100.0, 99999.0)])
def test_log_ticks_bracket_the_values_in_1_2_5_or_decade_steps(low, high):
    ticks = plots.log_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high
    # nothing wasted: the next tick inwards would no longer bracket the values
    assert len(ticks) == 1 or (ticks[1] > low and ticks[-2] < high)
    for t in ticks:
        mantissa = t / 10 ** math.floor(math.log10(t) + 1e-12)
        assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-9, t
    ratios = np.divide(ticks[1:], ticks[:-1])
    if high / low < plots.DENSE_TICKS_SPAN:
        assert np.all(np.isclose(ratios, 2) | np.isclose(ratios, 2.5)), ratios
    else:       # a wide span: decades only, or the labels would overlap
        assert np.allclose(ratios, 10), ratios


def test_log_ticks_refuse_what_a_log_axis_cannot_show():
    from kernelfit.errors import InputError
    for low, high in [(0, 1), (-1, 1), (2, 1), (1, math.inf)]:
        with pytest.raises(InputError, match="linear"):
            plots.log_ticks(low, high)


def _compare_rows():
    base = {"dataset": "digits", "n_train": 300, "n_test": 200, "randomization": "none",
            "norm": None, "size": "-", "detail": "-"}
    return [{**base, "method": "kernel interpolant (gaussian)", "train_error": 0.0,
             "test_error": 0.05, "norm": 12.0, "seconds": 0.34},
            {**base, "method": "mlp1x512 (SGD)", "train_error": 0.125, "test_error": 0.2,
             "seconds": 4100.0},
            {**base, "method": "mlp3x512 (SGD)", "train_error": 0.5, "test_error": None,
             "seconds": 35.0}]


def test_compare_figure_percent_bars_and_a_readable_time_axis():
    from matplotlib.patches import Rectangle

    from kernelfit.studies.compare import figure

    rows = _compare_rows()
    fig = figure(rows)
    errors, times = fig.axes
    assert _unlabelled(fig) == []
    assert "(%)" in errors.get_ylabel() and "(s" in times.get_ylabel()
    # the bars are the table's percentages; no test error is no bar (the table's "-")
    train, test = errors.containers
    assert [b.get_height() for b in train] == [100 * r["train_error"] for r in rows]
    heights = [b.get_height() for b in test]
    assert heights[:2] == [100 * r["test_error"] for r in rows[:2]] and math.isnan(heights[2])
    assert [t.get_text() for t in errors.texts][-1] == "n/a"
    assert {t.get_text() for t in errors.get_legend().get_texts()} == {"train error",
                                                                       "test error"}
    assert "randomization: none (true labels)" in errors.get_title()
    # times: points on a log axis, no bars, plain labels at 1-2-5 steps that hold every point
    assert times.get_yscale() == "log"
    assert not [p for p in times.patches if isinstance(p, Rectangle)]
    points = [line.get_ydata()[0] for line in times.lines]
    assert points == [r["seconds"] for r in rows]
    ticks = list(times.get_yticks())
    assert ticks == plots.log_ticks(min(points), max(points))
    fig.canvas.draw()
    labels = [t.get_text() for t in times.get_yticklabels()]
    assert labels == [f"{t:g} s" for t in ticks]
    assert all("10^" not in s and "times" not in s for s in labels)
    lo, hi = times.get_ylim()
    assert lo <= min(points) and hi >= max(points)
    # every point says its time; every method is named on the axis
    assert [t.get_text() for t in times.texts] == ["0.34 s", "4,100 s", "35 s"]
    assert [t.get_text() for t in times.get_xticklabels()] == [r["method"] for r in rows]


def test_sgd_linear_error_panel_is_in_percent_like_its_table():
    from kernelfit.errors import AccuracyWarning
    from kernelfit.pipeline.report import pct
    from kernelfit.studies.sgd import linear, linear_report
    from kernelfit.studies.sgd.linear import SGDLinearConfig

    config = SGDLinearConfig(dataset="digits", n_train=60, n_test=30, epochs=3, batch_size=8,
                             precondition_rank=10)
    with pytest.warns(AccuracyWarning, match="not converged"):     # 3 epochs: said so
        record = linear.run_sgd_linear(config, progress=False)
    fig = linear_report.figure([record])
    assert _unlabelled(fig) == []
    panel = fig.axes[0]
    assert "(%)" in panel.get_ylabel()
    h = record["history"]
    train, test, exact = panel.lines[:3]
    np.testing.assert_allclose(train.get_ydata(), [100 * m["train_error"] for m in h])
    np.testing.assert_allclose(test.get_ydata(), [100 * m["test_error"] for m in h])
    np.testing.assert_allclose(exact.get_ydata(), 100 * record["test_error_exact"])
    # the last point is what the summary table prints for the run
    table = linear_report.summary_table([record])
    assert pct(record["test_error"]) in table
    assert f"{test.get_ydata()[-1]:.2f}%" == pct(record["test_error"])
    assert panel.get_ylim()[1] > 1.0      # a percent scale, not fractions


def test_expressivity_figure_labels_both_axes():
    from kernelfit.studies.expressivity import ExpressivityConfig, figure, run_expressivity

    fig = figure(run_expressivity(ExpressivityConfig(n=40, d=3)))
    assert _unlabelled(fig) == [] and len(fig.axes) == 2


def test_every_sweep_plot_labels_its_y_axes(tmp_path, monkeypatch):
    from kernelfit.pipeline.run import RunConfig
    from kernelfit.studies.sweeps import parse_axis, run_sweep

    drawn = {}
    real_save = plots.save_figure

    def keep(fig, path, **kw):
        drawn[path.name] = (_unlabelled(fig), [ax.get_ylabel() for ax in fig.axes])
        return real_save(fig, path, **kw)

    monkeypatch.setattr(plots, "save_figure", keep)
    base = RunConfig(n_train=100, n_test=100, feature_cache=False)
    for sub, specs in (("a", ["n_train=100,200", "randomize=none,labels:0.5"]),
                       ("b", ["features=raw,gabor"])):
        run_sweep(base, [parse_axis(s) for s in specs], tmp_path / sub, log=lambda *_: None)
    assert set(drawn) == {"error_vs_corruption.png", "norm_vs_n.png", "norm_vs_error.png"}
    for name, (unlabelled, labels) in drawn.items():
        assert unlabelled == [], (name, labels)
    assert "error (%)" in drawn["error_vs_corruption.png"][1]
