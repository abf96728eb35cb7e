"""The synthetic generator: its labels checked against the audio by independent DSP, and its corpus."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from training.audio import load_audio
from training.manifest import BREATH_CLASSES, random_segments, read_manifest
from training.synth import (
    MIC_FLOOR_RMS,
    STAGE_RATE_RANGES_BPM,
    BreathCycles,
    build_synthetic_corpus,
    ie_ratio,
    make_participant,
    synth_recording,
)

SR = 16_000


# --- independent DSP: burst detection from the audio alone ----------------------------------------


def _frame_db(x: np.ndarray, hop: int = 160, win: int = 320) -> np.ndarray:
    """Power of 20 ms frames every 10 ms, lightly smoothed, in dB."""
    n = 1 + (x.size - win) // hop
    idx = np.arange(win)[None] + hop * np.arange(n)[:, None]
    power = np.mean(x[idx].astype(np.float64) ** 2, axis=1)
    return 10 * np.log10(np.convolve(power, np.ones(3) / 3, mode="same") + 1e-20)


def count_bursts(x: np.ndarray) -> int:
    """Sound events: runs of >= 60 ms above a threshold, with 4 dB hysteresis.

    The threshold is 15 dB under the loud frames (95th percentile) but at least 12 dB over the quiet
    ones (5th percentile), so a clip of steady background alone has no events.
    """
    e = _frame_db(x)
    on_db = max(np.percentile(e, 95) - 15, np.percentile(e, 5) + 12)
    count, active, length = 0, False, 0
    for value in e:
        if not active and value > on_db:
            active, length = True, 0
        if active:
            length += 1
            if value < on_db - 4:
                active = False
                count += length >= 6
    return count + (active and length >= 6)


def _centroid_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    return float(np.sum(freqs * spectrum) / np.sum(spectrum))


def _active_rms(x: np.ndarray) -> float:
    e = _frame_db(x)
    return float(np.sqrt(np.mean(10 ** (e[e > np.percentile(e, 95) - 20] / 10))))


PARTICIPANTS = [make_participant(f"t{i}", 100 + i) for i in range(5)]


# --- labels ---------------------------------------------------------------------------------------


def test_count_rule_on_hand_made_cycles():
    # Cycles [0, 4), [4, 6), a pause 6-8, [8, 12).
    cycles = BreathCycles(np.array([0.0, 4.0, 8.0]), np.array([4.0, 2.0, 4.0]), np.array([1.5, 0.8, 1.5]))
    assert cycles.count_in(2.0, 9.0) == pytest.approx(0.5 + 1.0 + 0.25)
    assert cycles.count_in(6.0, 8.0) == 0.0  # the pause belongs to no cycle
    assert cycles.count_in(0.0, 12.0) == pytest.approx(3.0)
    assert cycles.count_in(-5.0, 0.0) == 0.0


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_dsp_burst_count_agrees_with_respiration_count(stage):
    """Each cycle is an inhale and an exhale burst, so bursts / 2 tracks the label. A segment edge can add
    at most half a cycle (a burst fragment counted whole), hence the tolerance of 1 per segment."""
    diffs = []
    for i, person in enumerate(PARTICIPANTS):
        rec = synth_recording(person, stage, 30.0, np.random.default_rng([stage, i]))
        _, count = rec.label(0.0, 30.0)
        assert abs(count_bursts(rec.audio) / 2 - count) <= 1.0
        for start_s, end_s in random_segments(30.0, np.random.default_rng(i)):
            _, seg_count = rec.label(start_s, end_s)
            bursts = count_bursts(rec.audio[round(start_s * SR) : round(end_s * SR)])
            diffs.append(bursts / 2 - seg_count)
    diffs = np.abs(diffs)
    assert diffs.max() <= 1.0
    assert diffs.mean() < 0.45


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_rate_labels_stay_in_the_stage_range_and_equal_the_mean_instantaneous_rate(stage):
    lo, hi = STAGE_RATE_RANGES_BPM[stage]
    for i, person in enumerate(PARTICIPANTS):
        rec = synth_recording(person, stage, 40.0, np.random.default_rng([9, stage, i]))
        assert np.all((rec.cycles.rate_bpm >= lo) & (rec.cycles.rate_bpm <= hi))
        # The instantaneous rate sampled on a 1 ms grid, averaged over each segment.
        grid = np.arange(0.0, 40.0, 0.001) + 0.0005
        which = np.searchsorted(rec.cycles.start_s, grid, side="right") - 1
        inside = grid < rec.cycles.end_s[which]
        inst = np.where(inside, rec.cycles.rate_bpm[which], 0.0)
        for start_s, end_s in random_segments(40.0, np.random.default_rng(i)):
            rr_bpm, count = rec.label(start_s, end_s)
            assert lo <= rr_bpm <= hi
            assert rr_bpm == pytest.approx(60 * count / (end_s - start_s))
            mean_inst = inst[(grid >= start_s) & (grid < end_s)].mean()
            assert rr_bpm == pytest.approx(mean_inst, abs=0.05)


def test_ie_ratio_goes_from_about_two_at_rest_to_1_2_when_heavy():
    assert ie_ratio(10.0, 2.1) == pytest.approx(2.1)
    assert ie_ratio(50.0, 2.1) == pytest.approx(1.2)
    assert 1.2 < ie_ratio(30.0, 2.1) < 2.1
    rec = synth_recording(PARTICIPANTS[0], 1, 30.0, np.random.default_rng(1))
    ie = (rec.cycles.duration_s - rec.cycles.inhale_s) / rec.cycles.inhale_s
    assert 1.5 < ie.mean() < 2.6


def test_no_breath_clip_is_class_none_with_no_bursts():
    person = PARTICIPANTS[1]
    rec = synth_recording(person, None, 12.0, np.random.default_rng(3), rate_bpm=0.0)
    assert rec.label(0.0, 12.0) == (0.0, 0.0)
    assert rec.breath_class(2.0, 8.0) == "none"
    assert count_bursts(rec.audio) == 0
    # only the room floor: 18-40 dB under the person's breath level, never under -80 dBFS
    rms = np.sqrt(np.mean(rec.audio.astype(np.float64) ** 2))
    assert 0.95 * MIC_FLOOR_RMS <= rms <= 1.05 * 10 ** ((person.level_dbfs - 18.0) / 20)
    noisy = synth_recording(
        person, None, 12.0, np.random.default_rng(3), rate_bpm=0.0, noise_kind="fan", snr_db=15
    )
    assert noisy.label(0.0, 12.0) == (0.0, 0.0) and noisy.noisy == 1
    assert count_bursts(noisy.audio) == 0
    # A breathing clip, by contrast, is full of bursts.
    assert count_bursts(synth_recording(person, 1, 12.0, np.random.default_rng(3)).audio) >= 4


def test_pauses_lower_the_rate_and_belong_to_no_cycle():
    person = PARTICIPANTS[2]
    steady = synth_recording(person, None, 60.0, np.random.default_rng(4))
    paused = synth_recording(person, None, 60.0, np.random.default_rng(4), pause_prob=0.5)
    gaps = paused.cycles.start_s[1:] - paused.cycles.end_s[:-1]
    assert gaps.max() >= 3.0 and gaps.min() >= -1e-9
    assert np.all((gaps < 1e-9) | ((gaps >= 3.0) & (gaps <= 10.0)))
    assert paused.label(0, 60)[0] < steady.label(0, 60)[0]
    # A segment lying inside a pause: no breath, no bursts, class none.
    k = int(np.argmax(gaps))
    start_s, end_s = paused.cycles.end_s[k] + 0.2, paused.cycles.start_s[k + 1] - 0.2
    assert end_s - start_s >= 2.0 and end_s <= 60.0
    assert paused.label(start_s, end_s) == (0.0, 0.0)
    assert count_bursts(paused.audio[round(start_s * SR) : round(end_s * SR)]) == 0


def test_requested_rate_is_honoured():
    for rate in (8.0, 20.0, 55.0):
        rec = synth_recording(PARTICIPANTS[3], None, 30.0, np.random.default_rng(5), rate_bpm=rate)
        rr_bpm, _ = rec.label(5.0, 25.0)
        assert rate * 0.85 <= rr_bpm <= rate * 1.15


# --- timbre ---------------------------------------------------------------------------------------


def test_nasal_breathing_is_darker_than_oral():
    for i, person in enumerate(PARTICIPANTS):
        nasal = dataclasses.replace(person, nasal_tendency=1.0, oral_switch_bpm=500.0)
        oral = dataclasses.replace(person, nasal_tendency=0.0)
        c_nasal = _centroid_hz(synth_recording(nasal, 1, 20.0, np.random.default_rng(i)).audio)
        c_oral = _centroid_hz(synth_recording(oral, 1, 20.0, np.random.default_rng(i)).audio)
        assert c_oral > 1.5 * c_nasal, (c_nasal, c_oral)
        assert 200 < c_nasal < 1500


def test_heavy_breathing_is_louder_and_brighter():
    louder, brighter = 0, 0
    for i, person in enumerate(PARTICIPANTS):
        rest = synth_recording(person, 1, 20.0, np.random.default_rng(i)).audio
        heavy = synth_recording(person, 2, 20.0, np.random.default_rng(i)).audio
        louder += _active_rms(heavy) > 1.4 * _active_rms(rest)
        brighter += _centroid_hz(heavy) > _centroid_hz(rest)
    assert louder == len(PARTICIPANTS)
    assert brighter >= len(PARTICIPANTS) - 1


def test_participants_differ_and_are_reproducible():
    assert make_participant("a", 1) == make_participant("a", 1)
    people = [make_participant(f"p{i}", i) for i in range(40)]
    assert len({p.formants_hz for p in people}) == 40
    assert {p.gender for p in people} == {"female", "male"}
    female = np.mean([p.formants_hz[0] for p in people if p.gender == "female"])
    male = np.mean([p.formants_hz[0] for p in people if p.gender == "male"])
    assert female > male


def test_recording_is_deterministic_and_noise_follows_the_request():
    person = PARTICIPANTS[4]
    a = synth_recording(person, 2, 10.0, np.random.default_rng(8), noise_kind="babble", snr_db=12.0)
    b = synth_recording(person, 2, 10.0, np.random.default_rng(8), noise_kind="babble", snr_db=12.0)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.audio.dtype == np.float32 and a.audio.size == 10 * SR
    assert a.noisy == 1
    assert (
        synth_recording(person, 2, 10.0, np.random.default_rng(8), noise_kind="fan", snr_db=35.0).noisy == 0
    )
    assert synth_recording(person, 2, 10.0, np.random.default_rng(8)).noisy == 0
    with pytest.raises(ValueError, match="together"):
        synth_recording(person, 2, 10.0, np.random.default_rng(8), noise_kind="fan")
    with pytest.raises(ValueError, match="not one heard outdoor"):
        synth_recording(person, 2, 10.0, np.random.default_rng(8), "outdoor", "fridge_hum", 20.0)
    with pytest.raises(ValueError, match="stage"):
        synth_recording(person, 5, 10.0, np.random.default_rng(8))


# --- the corpus -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return out, build_synthetic_corpus(out, 60, seed=3, progress=False, workers=1)


def test_corpus_manifest_is_complete_and_split_by_participant(corpus):
    out, segments = corpus
    rows = read_manifest(out)
    assert len(rows) == 60
    assert [r.path for r in rows] == [s.path for s in segments]
    split_of: dict[str, set[str]] = {}
    for r in rows:
        split_of.setdefault(r.participant, set()).add(r.split)
        assert 4.0 <= r.end_s - r.start_s <= 7.0
        assert r.source == "synth" and r.recording and r.gender in ("female", "male")
        assert r.breath_class in BREATH_CLASSES
        if r.stage is not None:
            lo, hi = STAGE_RATE_RANGES_BPM[r.stage]
            assert lo <= r.rr_bpm <= hi
        assert r.rr_bpm == pytest.approx(60 * r.respiration_count / (r.end_s - r.start_s), abs=1e-3)
        assert r.noisy == int(r.snr_db is not None and r.snr_db < 30)
    assert all(len(splits) == 1 for splits in split_of.values())
    assert {s for splits in split_of.values() for s in splits} == {"train", "val", "test"}
    assert {r.stage for r in rows} >= {1, 2, 3, 4}


def test_corpus_audio_matches_its_labels(corpus):
    out, segments = corpus
    for r in segments:
        info = sf.info(str(out / r.path))
        assert info.samplerate == SR and info.subtype == "PCM_16"
        assert r.end_s <= info.duration + 1e-6
    clean_breathing = [r for r in segments if r.snr_db is None and r.rr_bpm > 0][:8]
    assert clean_breathing
    for r in clean_breathing:
        audio = load_audio(out / r.path, start_s=r.start_s, end_s=r.end_s)
        assert abs(count_bursts(audio) / 2 - r.respiration_count) <= 1.0


def test_corpus_is_byte_identical_for_a_seed_whatever_the_workers(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    build_synthetic_corpus(again, 60, seed=3, progress=False, workers=2)
    assert (again / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
    names = sorted(p.name for p in (out / "audio").iterdir())
    assert names == sorted(p.name for p in (again / "audio").iterdir())
    for name in names:
        assert (again / "audio" / name).read_bytes() == (out / "audio" / name).read_bytes()
    other = tmp_path / "other"
    build_synthetic_corpus(other, 20, seed=4, progress=False, workers=1)
    assert (other / "manifest.csv").read_bytes() != (out / "manifest.csv").read_bytes()


def test_corpus_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="n_segments"):
        build_synthetic_corpus(tmp_path, 0, seed=1, progress=False)
