"""The resumable result store: keys by result-changing settings, round-trips, ignores junk."""

from kernelfit.experiments.results import ResultStore, result_settings, settings_key
from kernelfit.experiments.run import RunConfig
from kernelfit.options import Options


def test_display_options_do_not_change_the_key():
    a = result_settings(RunConfig(options=Options(progress=True, n_jobs=1)))
    b = result_settings(RunConfig(options=Options(progress=False, n_jobs=2)))
    assert a == b
    c = result_settings(RunConfig(sigma=3.0))
    assert c != a and settings_key(c) != settings_key(a)


def test_store_round_trip_and_mismatch(tmp_path):
    store = ResultStore(tmp_path)
    settings = {"sigma": 1.0}
    assert store.load("p", settings) is None
    store.save("p", settings, {"test_error": 0.25})
    assert store.load("p", settings)["test_error"] == 0.25
    assert store.load("p", {"sigma": 2.0}) is None
    (tmp_path / "junk.json").write_text("{not json")
    assert [r["test_error"] for r in store.all()] == [0.25]
