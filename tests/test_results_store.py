"""The resumable result store: keys by result-changing settings, data and version, round-trips,
checksums its records, says why it does not reuse one, ignores junk."""

import hashlib
import json

import pytest

import kernelfit
from kernelfit.options import Options
from kernelfit.pipeline import results
from kernelfit.pipeline.results import (
    ResultStore,
    record_checksum,
    result_settings,
    settings_key,
)
from kernelfit.pipeline.run import RunConfig


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


def test_records_carry_a_checksum_and_the_version(tmp_path):
    store = ResultStore(tmp_path)
    store.save("p", {"sigma": 1.0}, {"test_error": 0.25, "loss": float("nan")})
    saved = json.loads(store.path("p").read_text())
    assert saved["settings"] == {"sigma": 1.0, "kernelfit": kernelfit.__version__}
    body = {k: v for k, v in saved.items() if k != "checksum"}
    assert saved["checksum"] == record_checksum(body)
    # the oracle: sha256 of the same content as canonical JSON, computed here
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert saved["checksum"] == hashlib.sha256(text.encode()).hexdigest()
    assert "checksum" not in store.load("p", {"sigma": 1.0})


def test_why_a_record_is_not_reused(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    key = {"sigma": 1.0, results.DATA_KEY: "a" * 64}
    store.save("p", key, {"test_error": 0.25})
    logs = []
    assert store.load("p", key, log=logs.append)["test_error"] == 0.25 and logs == []
    assert store.load("p", {**key, results.DATA_KEY: "b" * 64}, log=logs.append) is None
    assert logs[-1] == ("p: record was made from other data (fingerprint aaaaaaaaaaaa..., the "
                        "data now bbbbbbbbbbbb...); recomputing")
    assert store.check("p", {**key, "sigma": 2.0}) == (None, "was made with other settings "
                                                             "(sigma)")
    monkeypatch.setattr(results, "__version__", "9.9")
    assert store.check("p", key)[1] == f"was made by kernelfit {kernelfit.__version__}, this is 9.9"
    monkeypatch.undo()
    saved = json.loads(store.path("p").read_text())
    for edit in ({**saved, "test_error": 0.0}, {k: v for k, v in saved.items() if k != "checksum"}):
        store.path("p").write_text(json.dumps(edit))
        assert store.check("p", key)[1].startswith("fails its integrity check")
        assert store.all() == []
    store.path("p").write_text(json.dumps(saved)[:40])
    assert "not a JSON record" in store.check("p", key)[1]
    assert store.check("absent", key) == (None, None)
    # Names ignore the data (the stale record is found and replaced); payloads cannot spoof.
    assert settings_key(key) == settings_key({**key, results.DATA_KEY: "c"})
    with pytest.raises(ValueError, match="checksum"):
        store.save("q", key, {"checksum": "0" * 64})
