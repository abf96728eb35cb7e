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
from training.estimator import EstimatorConfig

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
    model, meta = load_checkpoint(None)
    estimator = EstimatorConfig.from_dict(meta["estimator"])
    table = feature_descriptions(model, 1600, estimator)
    assert model.frame_stride == 5
    assert "50 ms" in table["phase_probs"][1] and "2 LSTM steps" in table["phase_probs"][1]
    assert "10 ms" in table["norm_count"][1] and "10 per chunk" in table["norm_count"][1]
    assert (
        "600 LSTM steps" in table["phase_window"][1] and "1198 frames every 25 ms" in table["band_window"][1]
    )
    assert "30 s" in table["rr_bpm"][1] and "301" in table["chunks_seen"][1]
    package = load_package(shipped_package("explicit", "float32"))
    described = {f.name: f.description for f in package.outputs}
    assert "1198 frames" in described["band_window_out"] and "[ln power]" in described["band_window_out"]
    assert "no_breathing" in described["rr_reason"] and "[code]" in described["rr_reason"]


@pytest.mark.parametrize("variant", ["explicit", "stateful"])
def test_metadata_says_units_window_chunk_limits_and_version(variant):
    meta = load_package(shipped_package(variant, "float32")).user_defined_metadata
    units = json.loads(meta["respira.units"])
    assert set(units) == set(OUTPUT_NAMES) | set(STATE_NAMES)
    assert units["rr_bpm"] == "breaths/min" and units["chunks_seen"] == "chunks"
    assert (
        meta["respira.chunk_ms"] == "100"
        and meta["respira.step_ms"] == "50"
        and meta["respira.frame_ms"] == "10"
        and meta["respira.window_s"] == "30"
    )
    assert json.loads(meta["respira.rr_reasons"]) == ["rate", "no_breathing", "too_noisy", "warming_up"]
    assert json.loads(meta["respira.estimator"])["min_confidence"] > 0
    assert (
        meta["respira.window"]
        and meta["respira.interface_version"] == "3"
        and meta["respira.package_version"]
    )
    limits = json.loads(meta["respira.limits"])
    assert float(meta["respira.max_stream_s"]) == limits["max_stream_s"] > 0
    assert limits["state_arithmetic"] == ("float16" if variant == "stateful" else "float32")
    assert "65504" in limits["notes"] if variant == "stateful" else "2^24" in limits["notes"]


def test_stream_limits_follow_float16_counting():
    """Only the breath count grows with the stream: a float16 state holds whole cycles to 2048, which
    at the fastest rate reported (60 breaths/min) is 2048 s; float32 to 2^24 cycles."""
    model, _ = load_checkpoint(None)
    fp32 = stream_limits(model, 1600, "float32", "explicit")
    fp16 = stream_limits(model, 1600, "float32", "stateful")
    assert fp16["respiration_count_exact_cycles"] == 2048 and fp16["max_stream_s"] == 2048.0
    assert fp16["norm_count_matters_s"] == 4.0
    assert fp32["respiration_count_exact_cycles"] == 2**24 and fp32["max_stream_s"] / 86400 > 100
