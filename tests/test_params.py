"""The shared setting checks (kernelfit.params) and value formats (kernelfit.formats)."""

import json
import math

import numpy as np
import pytest

from kernelfit.atomic import write_json_atomic
from kernelfit.errors import InputError
from kernelfit.formats import human_bytes, jsonable
from kernelfit.params import one_of, real, whole


@pytest.mark.parametrize("v", [3, np.int64(3), np.int32(3)])
def test_whole_accepts_python_and_numpy_integers(v):
    assert whole("n", v, 1) == 3 and type(whole("n", v, 1)) is int


@pytest.mark.parametrize("v", [True, 2.0, "2", None, 0, 11])
def test_whole_refuses_bools_floats_text_none_and_out_of_range(v):
    with pytest.raises(InputError, match=r"n must be an integer >= 1 and <= 10, got"):
        whole("n", v, 1, high=10)


def test_whole_none_only_when_allowed_and_the_message_says_so():
    assert whole("d", None, 1, allow_none=True) is None
    with pytest.raises(InputError, match=r"d must be an integer >= 1 or None \(None: all\)"):
        whole("d", 0, 1, allow_none=True, hint="None: all")


@pytest.mark.parametrize("v, ok", [(0.0, False), (1e-300, True), (1.0, True),
                                   (np.float32(0.5), True), (math.inf, False),
                                   (math.nan, False), (True, False), ("1", False)])
def test_real_positive(v, ok):
    if ok:
        assert real("sigma", v, 0, lo_open=True) == float(v)
    else:
        with pytest.raises(InputError, match="sigma must be a positive finite number, got"):
            real("sigma", v, 0, lo_open=True)


def test_real_bounds_open_and_closed():
    assert real("f", 0, 0, 1, hi_open=True) == 0.0
    with pytest.raises(InputError, match=r"f must be a finite number in \[0, 1\), got 1"):
        real("f", 1, 0, 1, hi_open=True)
    with pytest.raises(InputError, match=r"t must be a finite number in \(0, 1\)"):
        real("t", 0.0, 0, 1, lo_open=True, hi_open=True)
    assert real("lr", None, 0, lo_open=True, allow_none=True) is None


def test_one_of():
    assert one_of("dtype", "float32", ("float32", "float64")) == "float32"
    with pytest.raises(InputError, match=r"dtype must be one of 'float32', 'float64', got 'f16'"):
        one_of("dtype", "f16", ("float32", "float64"))


def test_human_bytes_picks_the_unit_that_shows_the_size():
    assert human_bytes(40e6) == "40.0 MB" and human_bytes(2.5e9) == "2.5 GB"
    assert human_bytes(512) == "512 B" and human_bytes(3e3) == "3.0 kB"


def test_records_are_strict_json_and_read_back(tmp_path):
    rec = {"err": np.float32(0.25), "n": np.int64(7), "shape": (2, 3), 4: np.arange(2),
           "bad": [math.nan, math.inf, -math.inf]}
    path = write_json_atomic(tmp_path / "r.json", rec)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict token {c}"))
    assert back == {"err": 0.25, "n": 7, "shape": [2, 3], "4": [0, 1],
                    "bad": ["nan", "inf", "-inf"]}
    assert [float(x) for x in back["bad"]][1:] == [math.inf, -math.inf]
    assert jsonable(back) == back
