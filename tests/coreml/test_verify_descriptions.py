"""Every input, output and state of both package variants is described; the metadata says units,
frame / step / chunk, window, stream limits and versions."""

from __future__ import annotations

import json

import pytest
from test_verify import shipped_package

from coreml.export import feature_descriptions, stream_limits
from coreml.interpreter import load_package
from coreml.streaming import OUTPUT_NAMES, STATE_NAMES
from training.checkpoint import load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize("variant", ["explicit", "stateful"])
def test_no_input_output_or_state_lacks_a_description(variant):
    package = load_package(shipped_package(variant, "float32"))
    features = [*package.inputs, *package.outputs, *package.states]
    assert len(features) >= 1 + len(OUTPUT_NAMES) + len(STATE_NAMES)
    undescribed = [f.name for f in features if len(f.description.strip()) < 10]
    assert not undescribed
    if variant == "stateful":
        assert {s.name for s in package.states} == set(STATE_NAMES)
        assert all("fp16" in s.description for s in package.states)
    else:
        assert all("zeros to reset" in f.description for f in package.inputs if f.name.endswith("_in"))


def test_descriptions_state_the_models_own_step_and_frame_lengths():
    model, _ = load_checkpoint(None)
    table = feature_descriptions(model, 1600)
    assert model.frame_stride == 5
    assert "50 ms" in table["pool_count"][1] and "2 per chunk" in table["pool_count"][1]
    assert "10 ms" in table["norm_count"][1] and "10 per chunk" in table["norm_count"][1]
    assert "10 ms frames" not in table["pool_count"][1]
    package = load_package(shipped_package("explicit", "float32"))
    described = {f.name: f.description for f in package.outputs}
    assert "50 ms" in described["pool_count_out"] and "[LSTM steps]" in described["pool_count_out"]


@pytest.mark.parametrize("variant", ["explicit", "stateful"])
def test_metadata_says_units_window_chunk_limits_and_version(variant):
    meta = load_package(shipped_package(variant, "float32")).user_defined_metadata
    units = json.loads(meta["respira.units"])
    assert set(units) == set(OUTPUT_NAMES) | set(STATE_NAMES)
    assert units["rr_bpm"] == "breaths/min" and units["pool_count"] == "LSTM steps"
    assert (
        meta["respira.chunk_ms"] == "100"
        and meta["respira.step_ms"] == "50"
        and meta["respira.frame_ms"] == "10"
    )
    assert meta["respira.window"] and meta["respira.interface_version"] and meta["respira.package_version"]
    limits = json.loads(meta["respira.limits"])
    assert float(meta["respira.max_stream_s"]) == limits["max_stream_s"] > 0
    assert limits["state_arithmetic"] == ("float16" if variant == "stateful" else "float32")
    assert "65504" in limits["notes"] if variant == "stateful" else "2^24" in limits["notes"]


def test_stream_limits_follow_float16_counting():
    model, _ = load_checkpoint(None)
    fp32 = stream_limits(model, 1600, "float32", "explicit")
    fp16 = stream_limits(model, 1600, "float32", "stateful")
    # a float16 counter adding 2 steps per chunk is exact to 4096 steps (then its spacing is 4): 204.8 s
    assert fp16["pool_count_exact_s"] == 204.8 and fp16["max_stream_s"] == 204.8
    # adding 10 frames per chunk: exact to 4100 frames (4110 is not a multiple of the spacing 4)
    assert fp16["norm_count_exact_s"] == 41.0 and fp16["norm_count_matters_s"] == 4.0
    # float32: 2^24 / 2 steps per chunk, in hours
    assert fp32["max_stream_s"] / 3600 > 40
