"""Noise augmentation: the SNR rule measured back, and corpus augmentation of the training split only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from training.audio import AudioError, load_audio
from training.augment import (
    SNR_BANDS_DB,
    active_power,
    augment_corpus,
    combine_snr_db,
    draw_snr_db,
    mix_at_snr,
)
from training.manifest import ManifestError, Segment, audio_path, read_manifest, write_manifest
from training.noise import make_noise
from training.synth import make_participant, synth_recording

SR = 16_000


def _gated_bursts(
    rng: np.random.Generator, amplitude: float, burst_s: float, gap_s: float, n: int
) -> np.ndarray:
    """Constant-level noise bursts (RMS ``amplitude``) separated by digital silence."""
    x = np.zeros(round((burst_s + gap_s) * n * SR), dtype=np.float32)
    period, burst = round((burst_s + gap_s) * SR), round(burst_s * SR)
    for k in range(n):
        x[k * period : k * period + burst] = amplitude * rng.standard_normal(burst)
    return x


def _reference_active_power(x: np.ndarray) -> float:
    """The documented rule, written out independently: 20 ms frames, active = within 20 dB of the p95."""
    frame = SR // 50
    powers = np.mean(x[: x.size // frame * frame].astype(np.float64).reshape(-1, frame) ** 2, axis=1)
    return float(powers[powers >= np.percentile(powers, 95) / 100].mean())


@pytest.mark.parametrize("snr_db", [10.0, 15.0, 25.0, 35.0])
def test_snr_measured_back_on_known_active_parts(snr_db):
    rng = np.random.default_rng(int(snr_db))
    clean = _gated_bursts(rng, 0.05, burst_s=0.8, gap_s=2.2, n=6)
    noise = make_noise("fan", 20.0, rng)
    mixed = mix_at_snr(clean, noise, snr_db)
    assert mixed.shape == clean.shape
    added = mixed.astype(np.float64) - clean
    measured = 10 * np.log10(0.05**2 / np.mean(added**2))  # the bursts' power is known by construction
    assert measured == pytest.approx(snr_db, abs=0.5)


def test_snr_on_breath_follows_the_documented_rule_and_ignores_silence():
    person = make_participant("snr", 5)
    breath = synth_recording(person, 1, 20.0, np.random.default_rng(2)).clean
    noise = make_noise("babble", 20.0, np.random.default_rng(3))
    mixed = mix_at_snr(breath, noise, 18.0)
    added = mixed.astype(np.float64) - breath
    measured = 10 * np.log10(_reference_active_power(breath) / np.mean(added**2))
    assert measured == pytest.approx(18.0, abs=0.5)
    # Longer rests between the same breaths do not change how loud the breaths are said to be.
    rng = np.random.default_rng(4)
    short = _gated_bursts(rng, 0.02, burst_s=1.0, gap_s=1.0, n=5)
    long = np.concatenate([short, np.zeros(10 * SR, dtype=np.float32)])
    assert 10 * np.log10(active_power(long) / active_power(short)) == pytest.approx(0.0, abs=0.1)
    # Whereas a plain average would call it 3 dB quieter.
    assert 10 * np.log10(np.mean(short.astype(np.float64) ** 2) / np.mean(long.astype(np.float64) ** 2)) > 2.9


def test_mix_loops_short_noise_and_refuses_silence():
    rng = np.random.default_rng(0)
    clean = _gated_bursts(rng, 0.05, 0.5, 0.5, 4)
    short_noise = rng.standard_normal(SR // 3).astype(np.float32)
    mixed = mix_at_snr(clean, short_noise, 20.0)
    assert mixed.size == clean.size
    added = mixed - clean
    np.testing.assert_allclose(added[: SR // 3], added[SR // 3 : 2 * (SR // 3)], rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="clean signal is silent"):
        mix_at_snr(np.zeros(SR, dtype=np.float32), short_noise, 20.0)
    with pytest.raises(ValueError, match="noise is silent"):
        mix_at_snr(clean, np.zeros(SR, dtype=np.float32), 20.0)


def test_snr_draws_cover_the_papers_bands():
    rng = np.random.default_rng(0)
    draws = np.array([draw_snr_db(rng) for _ in range(600)])
    assert draws.min() >= 10.0 and draws.max() <= 40.0
    for lo, hi in SNR_BANDS_DB:
        assert 150 < np.sum((draws >= lo) & (draws < hi)) < 250
    assert combine_snr_db(None, 20.0) == 20.0
    assert combine_snr_db(20.0, 20.0) == pytest.approx(20.0 - 10 * np.log10(2))


# --- corpus augmentation --------------------------------------------------------------------------


@pytest.fixture
def small_corpus(tmp_path):
    """Six segments, two per split, one of them in a 44.1 kHz stereo WAV (as a real recording might be)."""
    src = tmp_path / "src"
    (src / "audio").mkdir(parents=True)
    rows = []
    for i, split in enumerate(["train", "train", "val", "val", "test", "test"]):
        person = make_participant(f"p{i // 2}", i // 2)
        rec = synth_recording(person, 1 + i % 4, 9.0, np.random.default_rng(i))
        if i == 1:
            import soxr

            stereo = soxr.resample(rec.audio, SR, 44_100)
            sf.write(src / "audio" / f"r{i}.wav", np.stack([stereo, stereo], axis=1), 44_100)
            name = f"audio/r{i}.wav"
        else:
            name = f"audio/r{i}.flac"
            sf.write(src / name, rec.audio, SR, format="FLAC", subtype="PCM_16")
        rr, count = rec.label(2.0, 7.5)
        rows.append(
            Segment(
                path=name,
                start_s=2.0,
                end_s=7.5,
                rr_bpm=rr,
                respiration_count=count,
                breath_class="heavy" if rr > 30 else "normal",
                stage=1 + i % 4,
                participant=person.participant_id,
                gender=person.gender,
                environment="outdoor" if i % 2 else "indoor",
                source="rec",
                split=split,
                recording=f"r{i}",
            )
        )
    write_manifest(rows, src)
    return src


def test_augment_corpus_adds_noisy_copies_of_training_rows_only(small_corpus, tmp_path):
    out = tmp_path / "out"
    rows = augment_corpus(small_corpus, out, copies=2, seed=7, progress=False)
    assert rows == read_manifest(out)
    original = read_manifest(small_corpus)
    passed, added = rows[: len(original)], rows[len(original) :]
    # Every original row passes through unchanged, its audio referenced where it lies.
    for before, after in zip(original, passed, strict=True):
        assert dataclasses.replace(after, path=before.path) == before
        assert audio_path(out, after).resolve() == audio_path(small_corpus, before).resolve()
    assert len(added) == 2 * 2  # two training rows, two copies each
    assert {a.participant for a in added} <= {r.participant for r in original if r.split == "train"}
    for a in added:
        assert a.split == "train" and a.source == "rec+aug"
        assert 10.0 <= a.snr_db <= 40.0 and a.noisy == int(a.snr_db < 30)
        assert (out / a.path).is_file() and a.start_s == 0.0 and a.end_s == pytest.approx(5.5)
        source_row = next(r for r in original if r.recording == a.recording.split("+")[0])
        for field in ("rr_bpm", "respiration_count", "breath_class", "stage", "participant", "environment"):
            assert getattr(a, field) == getattr(source_row, field)
        # The added noise sits at the recorded SNR against the source's active parts.
        clean = load_audio(audio_path(small_corpus, source_row), start_s=2.0, end_s=7.5)
        noisy = load_audio(out / a.path)
        assert noisy.size == clean.size
        measured = 10 * np.log10(active_power(clean) / np.mean((noisy.astype(np.float64) - clean) ** 2))
        assert measured == pytest.approx(a.snr_db, abs=0.5)
    # Same seed, same result; the output can be augmented again without re-augmenting the copies.
    again = augment_corpus(small_corpus, tmp_path / "again", copies=2, seed=7, progress=False)
    assert [(r.snr_db, r.noisy) for r in again] == [(r.snr_db, r.noisy) for r in rows]
    for a, b in zip(added, again[len(original) :], strict=True):
        assert (out / a.path).read_bytes() == (tmp_path / "again" / b.path).read_bytes()
    twice = augment_corpus(out, tmp_path / "twice", copies=1, seed=8, progress=False)
    assert len(twice) == len(rows) + 2


def test_augment_corpus_bad_input_is_refused_and_loses_nothing(small_corpus, tmp_path):
    with pytest.raises(ValueError, match="copies"):
        augment_corpus(small_corpus, tmp_path / "x", copies=-1, seed=0, progress=False)
    with pytest.raises(ValueError, match="new folder"):
        augment_corpus(small_corpus, small_corpus, copies=1, seed=0, progress=False)
    with pytest.raises(ManifestError, match="no manifest"):
        augment_corpus(tmp_path / "nowhere", tmp_path / "y", copies=1, seed=0, progress=False)
    out = tmp_path / "z"
    augment_corpus(small_corpus, out, copies=1, seed=0, progress=False)
    before = (out / "manifest.csv").read_bytes()
    (small_corpus / "audio" / "r0.flac").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match=r"r0\.flac"):
        augment_corpus(small_corpus, out, copies=1, seed=0, progress=False)
    assert (out / "manifest.csv").read_bytes() == before
    rows = read_manifest(small_corpus)
    write_manifest([dataclasses.replace(rows[1], start_s=20.0, end_s=25.0), *rows[2:]], small_corpus)
    with pytest.raises(AudioError, match=r"r1\.wav: segment 20-25s is outside the recording"):
        augment_corpus(small_corpus, out, copies=1, seed=0, progress=False)
    assert (out / "manifest.csv").read_bytes() == before
