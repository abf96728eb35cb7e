"""The DSP baseline recovers known rates of generated breathing, stays calm on non-breathing input,
and keeps its accuracy on a fixed sample of real RRuJO recordings."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from training.dsp_baseline import dsp_run, estimate_rr_dsp
from training.manifest import Segment

FS = 16_000
RRUJO = Path(__file__).resolve().parents[3] / "shared" / "data" / "rrujo"


def band_noise(n: int, low_hz: float, high_hz: float, rng: np.random.Generator) -> np.ndarray:
    sos = signal.butter(4, [low_hz, high_hz], btype="band", fs=FS, output="sos")
    return signal.sosfilt(sos, rng.standard_normal(n))


def breathing(
    rate_bpm: float,
    duration_s: float,
    rng: np.random.Generator,
    snr_db: float | None = None,
    same_band: bool = False,
) -> np.ndarray:
    """Breath-like audio: per cycle an inhale burst (300-2500 Hz) and a softer, longer exhale burst
    (150-1200 Hz, or the inhale's band with ``same_band``), Hann-shaped, at a random phase; white
    noise added at ``snr_db`` below the breathing power."""
    n = int(duration_s * FS)
    period_s = 60.0 / rate_bpm
    inhale = band_noise(n, 300, 2500, rng)
    exhale = inhale[::-1].copy() if same_band else band_noise(n, 150, 1200, rng)
    bursts = (
        (0.0, min(0.35 * period_s, 2.0), 1.0, inhale),
        (min(0.45 * period_s, 2.5), min(0.4 * period_s, 2.5), 0.6, exhale),
    )
    x = np.zeros(n)
    cycle_start = rng.uniform(-period_s, 0.0)
    while cycle_start < duration_s:
        for offset_s, length_s, amplitude, source in bursts:
            first = round((cycle_start + offset_s) * FS)
            window = np.hanning(int(length_s * FS)) * amplitude
            lo, hi = max(first, 0), min(first + len(window), n)
            if hi > lo:
                x[lo:hi] += window[lo - first : hi - first] * source[lo:hi]
        cycle_start += period_s
    if snr_db is not None:
        x += rng.standard_normal(n) * math.sqrt(np.mean(x**2) / 10 ** (snr_db / 10))
    return (0.1 * x / np.abs(x).max()).astype(np.float32)


@pytest.mark.parametrize("rate_bpm", [6, 10, 15, 22, 30, 38, 45])
@pytest.mark.parametrize("snr_db", [None, 10.0])
def test_recovers_known_rate_within_1_bpm(rate_bpm, snr_db):
    audio = breathing(rate_bpm, 60.0, np.random.default_rng(rate_bpm), snr_db)
    est = estimate_rr_dsp(audio)
    assert est.rr_bpm == pytest.approx(rate_bpm, abs=1.0)
    assert est.confidence > 0.4


@pytest.mark.parametrize("rate_bpm", [8, 20, 40])
def test_inhale_and_exhale_in_the_same_band(rate_bpm):
    """Only loudness and timing tell inhale from exhale here; the octave check must still hold."""
    audio = breathing(rate_bpm, 60.0, np.random.default_rng(100 + rate_bpm), 10.0, same_band=True)
    assert estimate_rr_dsp(audio).rr_bpm == pytest.approx(rate_bpm, abs=1.0)


@pytest.mark.parametrize("rate_bpm", [25, 40])
def test_short_segment(rate_bpm):
    audio = breathing(rate_bpm, 7.0, np.random.default_rng(7), 10.0)
    assert estimate_rr_dsp(audio).rr_bpm == pytest.approx(rate_bpm, abs=1.0)


def test_other_sample_rate_and_narrow_band():
    """Like a stethoscope recorded at 2 kHz: nothing above 1 kHz, given at 8 kHz."""
    audio = breathing(12, 40.0, np.random.default_rng(3), 10.0)
    narrow = signal.sosfiltfilt(signal.butter(8, 900, fs=FS, output="sos"), audio)
    est = estimate_rr_dsp(signal.resample_poly(narrow, 1, 2), sample_rate=8000)
    assert est.rr_bpm == pytest.approx(12, abs=1.0)


def test_non_breathing_input_gives_low_confidence():
    rng = np.random.default_rng(0)
    breath = estimate_rr_dsp(breathing(15, 20.0, np.random.default_rng(1), 10.0))
    for noise in (rng.standard_normal(20 * FS) * 0.01, rng.standard_normal(20 * FS) * 1e-7):
        est = estimate_rr_dsp(noise)
        assert math.isfinite(est.rr_bpm)
        assert est.confidence < 0.25 < breath.confidence
    for flat in (np.zeros(10 * FS), np.full(10 * FS, 0.3)):
        est = estimate_rr_dsp(flat)
        assert math.isnan(est.rr_bpm) and est.confidence == 0.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 4 s"):
        estimate_rr_dsp(np.zeros(2 * FS))
    with pytest.raises(ValueError, match="mono"):
        estimate_rr_dsp(np.zeros((2, 5 * FS)))
    audio = np.zeros(5 * FS)
    audio[100] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        estimate_rr_dsp(audio)


def test_dsp_run_segments_and_whole_recordings(tmp_path):
    rates = {"a.wav": 12.0, "b.wav": 30.0}
    segments = []
    for i, (name, rate) in enumerate(rates.items()):
        sf.write(tmp_path / name, breathing(rate, 30.0, np.random.default_rng(i), 15.0), FS)
        for start in (0.0, 10.0, 20.0):
            segments.append(
                Segment(name, start, start + 10.0, rate, rate / 6, "normal", split="test", recording=name)
            )
    segments.append(Segment("missing.wav", 0.0, 5.0, 15.0, 1.25, "normal", split="test", recording="m"))
    segments.append(Segment("a.wav", 0.0, 5.0, 12.0, 1.0, "normal", split="val"))  # other split: not run
    run = dsp_run(segments, tmp_path, split="test")
    assert run.model_type == "dsp" and run.split == "test" and len(run.rows) == 7
    for row in run.rows[:6]:
        assert row.rr_pred_bpm == pytest.approx(row.rr_bpm, abs=1.5)
    assert math.isnan(run.rows[6].rr_pred_bpm)  # unreadable file: missing, not a crash
    assert run.recording_rr_pred_bpm["a.wav"] == pytest.approx(12.0, abs=1.0)
    assert run.recording_rr_pred_bpm["b.wav"] == pytest.approx(30.0, abs=1.0)
    assert math.isnan(run.recording_rr_pred_bpm["m"])


@pytest.mark.skipif(not (RRUJO / "recordings.csv").is_file(), reason="RRuJO data not present")
def test_real_rrujo_recordings_regression():
    """A fixed sample (60 of the 210 whole recordings, chest stethoscopes, 8-20 breaths/min).

    On all 210 the baseline reaches MAE 0.73 with 92% within 1 breath/min; its errors are octave
    errors (half or double the rate), hence the check on the share within 1 bpm and the median.
    """
    from training.audio import load_audio

    with (RRUJO / "recordings.csv").open() as f:
        rows = list(csv.DictReader(f))
    sample = rows[0::7] + rows[2::7]
    errors = np.array(
        [abs(estimate_rr_dsp(load_audio(RRUJO / r["path"])).rr_bpm - float(r["rr_bpm"])) for r in sample]
    )
    assert np.mean(errors <= 1.0) >= 0.85
    assert np.median(errors) <= 0.3


def test_detrend_and_the_fir_lowpass():
    """The clean-up of step 2 in numpy: a straight line is removed exactly, and the low-pass keeps a
    breathing-rate wave (0.3 Hz) while damping heart sounds (2 Hz) at the 40 Hz envelope rate."""
    from training.dsp_baseline import detrend, lowpass_kernel

    t = np.arange(400) / 40.0
    rows = np.stack([3.0 + 0.5 * t, np.sin(2 * np.pi * 0.3 * t) + 0.2 * t])
    flat = detrend(rows)
    assert np.allclose(flat[0], 0.0, atol=1e-9)
    assert abs(float(np.polyfit(t, flat[1], 1)[0])) < 1e-9
    kernel = lowpass_kernel(1.0, 40.0)
    assert len(kernel) == 81 and np.isclose(kernel.sum(), 1.0) and np.allclose(kernel, kernel[::-1])

    def gain(freq_hz: float) -> float:
        wave = np.sin(2 * np.pi * freq_hz * t)
        return float(np.convolve(wave, kernel, mode="same")[100:300].std() / wave[100:300].std())

    assert gain(0.3) > 0.95 and gain(2.0) < 0.05
