"""Background noise synthesised from first principles, so corpora need nothing downloaded.

Each kind imitates what a near-field microphone hears around a person exercising: the paper's
pseudo-stationary appliances (fan, air conditioner, fridge hum), wind, traffic, treadmill/footstep
impacts, music and speech babble. They are rough physical sketches, not recordings: what matters for
training is that each has the spectral and temporal character that makes it confusable (or not) with
breath noise, e.g. steady broadband hiss (fan), low rumble (traffic, wind), lines at mains harmonics
(hum), periodic thumps at running cadence (footsteps), harmonic notes (music), syllabic formant
sounds (babble).

Every generator returns float32 mono at ``sample_rate`` with RMS :data:`NOISE_RMS` (-20 dBFS); callers
set the level (``augment.mix_at_snr``). All randomness comes from the ``rng`` passed in, so the same
generator state gives the same noise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.fft
import scipy.signal

from training.frontend import SAMPLE_RATE_HZ

NOISE_RMS = 0.1
NOISE_ENVIRONMENTS: dict[str, tuple[str, ...]] = {
    "fan": ("indoor",),
    "air_conditioner": ("indoor",),
    "fridge_hum": ("indoor",),
    "wind": ("outdoor",),
    "traffic": ("outdoor",),
    "footsteps": ("indoor", "outdoor"),  # treadmill belt indoors, pavement outdoors
    "music": ("indoor", "outdoor"),
    "babble": ("indoor", "outdoor"),
}
NOISE_KINDS: tuple[str, ...] = tuple(NOISE_ENVIRONMENTS)
# The paper's pseudo-stationary noises.
APPLIANCE_KINDS: tuple[str, ...] = ("fan", "air_conditioner", "fridge_hum")


def kinds_for(environment: str) -> tuple[str, ...]:
    """Noise kinds plausible in ``environment`` (indoor | outdoor)."""
    kinds = tuple(k for k, envs in NOISE_ENVIRONMENTS.items() if environment in envs)
    if not kinds:
        raise ValueError(f"unknown environment {environment!r}; expected indoor or outdoor")
    return kinds


# ---------------------------------------------------------------------------------------------------------
# Building blocks


def spectral_noise(
    num_samples: int,
    magnitude: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    sample_rate: float = SAMPLE_RATE_HZ,
) -> np.ndarray:
    """Gaussian noise whose amplitude spectrum is ``magnitude(freqs_hz)``, normalised to unit RMS.

    Filtering white noise in the frequency domain (random complex spectrum times the response, one
    inverse FFT) lets each sound's spectrum be written down in closed form, and costs one FFT however
    intricate the response is. The result is circular, which is harmless for noise.
    """
    n_fft = scipy.fft.next_fast_len(max(num_samples, 2), real=True)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate).astype(np.float32)
    spectrum = rng.standard_normal(2 * freqs.size, dtype=np.float32).view(np.complex64)
    spectrum *= np.asarray(magnitude(freqs), dtype=np.float32)
    spectrum[0] = 0.0
    out = scipy.fft.irfft(spectrum, n_fft)[:num_samples]
    return (out / max(float(np.sqrt(np.mean(np.square(out, dtype=np.float64)))), 1e-12)).astype(np.float32)


def highpass(freqs: np.ndarray, cutoff_hz: float, order: int = 2) -> np.ndarray:
    """Butterworth-like high-pass magnitude."""
    ratio = np.maximum(freqs, 1e-3) / cutoff_hz
    return ratio**order / np.sqrt(1.0 + ratio ** (2 * order))


def lowpass(freqs: np.ndarray, cutoff_hz: float, order: int = 2) -> np.ndarray:
    """Butterworth-like low-pass magnitude."""
    return 1.0 / np.sqrt(1.0 + (freqs / cutoff_hz) ** (2 * order))


def resonance_db(freqs: np.ndarray, centre_hz: float, bandwidth_hz: float, gain_db: float) -> np.ndarray:
    """A resonant peak in dB (Lorentzian): ``gain_db`` at the centre, half of it at centre +- bandwidth/2."""
    return gain_db / (1.0 + ((freqs - centre_hz) / (0.5 * bandwidth_hz)) ** 2)


def upsample_linear(curve: np.ndarray, factor: int, num_samples: int) -> np.ndarray:
    """Linear interpolation of ``curve`` (one value every ``factor`` samples) to ``num_samples`` samples.

    Same result as ``np.interp`` on a uniform grid, but as two array operations instead of a search per
    sample (several times faster on minute-long signals).
    """
    curve = np.asarray(curve, dtype=np.float32)
    needed = -(-num_samples // factor) + 1
    if curve.size < needed:
        curve = np.pad(curve, (0, needed - curve.size), mode="edge")
    ramp = np.arange(factor, dtype=np.float32) / factor
    steps = curve[: needed - 1, None] + np.diff(curve[:needed])[:, None] * ramp[None, :]
    return steps.reshape(-1)[:num_samples]


def slow_random(
    num_samples: int, rng: np.random.Generator, sample_rate: int, cutoff_hz: float, control_hz: float = 50.0
) -> np.ndarray:
    """A smooth random curve with zero mean, unit standard deviation and content below ``cutoff_hz``.

    Drawn at a low control rate and linearly interpolated, which is far cheaper than shaping noise at
    the audio rate; used for modulations, drifts and gusts. ``control_hz`` must divide ``sample_rate``.
    """
    factor = max(1, round(sample_rate / control_hz))
    n_ctrl = -(-num_samples // factor) + 2
    curve = spectral_noise(n_ctrl, lambda f: np.exp(-0.5 * (f / cutoff_hz) ** 2), rng, sample_rate / factor)
    return upsample_linear(curve, factor, num_samples)


_TABLE_SIZE = 16384


def periodic_wave(
    phase_cycles: np.ndarray, harmonic_amps: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Evaluate sum_k a_k sin(2 pi k phase + theta_k) by lookup in a one-period wavetable.

    A lookup costs the same for any number of harmonics; with 16384 entries the phase error of the
    nearest entry is below 1/32768 of a cycle, far under anything audible in a background.
    """
    grid = np.arange(_TABLE_SIZE) / _TABLE_SIZE
    k = np.arange(1, len(harmonic_amps) + 1)[:, None]
    thetas = rng.uniform(0, 2 * np.pi, size=(len(harmonic_amps), 1))
    table = (np.asarray(harmonic_amps)[:, None] * np.sin(2 * np.pi * k * grid[None] + thetas)).sum(axis=0)
    index = (np.asarray(phase_cycles) * _TABLE_SIZE).astype(np.int64) & (_TABLE_SIZE - 1)
    return table.astype(np.float32)[index]


def _normalise(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return (x * (NOISE_RMS / max(rms, 1e-12))).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# The kinds


def _fan(n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Broadband, pinkish air noise, slowly modulated (airflow) plus a faint blade-rate flutter."""
    corner = rng.uniform(400, 1500)
    tilt = rng.uniform(0.3, 0.7)
    x = spectral_noise(n, lambda f: highpass(f, 40) * lowpass(f, 6500, 4) / (1 + f / corner) ** tilt, rng, sr)
    t = np.arange(n, dtype=np.float32) / sr
    slow = 1.0 + rng.uniform(0.08, 0.2) * slow_random(n, rng, sr, cutoff_hz=rng.uniform(0.1, 0.5))
    flutter = 1.0 + rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * rng.uniform(12, 30) * t)
    return x * slow * flutter


def _air_conditioner(n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Low-passed compressor/duct rumble plus the hiss of air through the vents."""
    rumble_hz = rng.uniform(80, 200)
    hiss_hz = rng.uniform(1500, 3000)
    hiss_gain = 10 ** (rng.uniform(-30, -22) / 20)  # per bin; the hiss band is ~30x wider

    def shape(f: np.ndarray) -> np.ndarray:
        hiss = highpass(f, hiss_hz, 2) * lowpass(f, 6500, 4)
        return highpass(f, 20) * lowpass(f, rumble_hz, 2) + hiss_gain * hiss

    x = spectral_noise(n, shape, rng, sr)
    return x * (1.0 + 0.05 * slow_random(n, rng, sr, cutoff_hz=0.1))


def _fridge_hum(n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Mains hum: lines at multiples of 50 or 60 Hz whose frequency drifts slightly, over a faint hiss."""
    mains_hz = float(rng.choice([50.0, 60.0]))
    n_harmonics = 10
    amps = rng.uniform(0.3, 1.0, n_harmonics) / np.arange(1, n_harmonics + 1) ** 0.7
    amps[1] *= 2.0  # magnetostriction: the second harmonic (100/120 Hz) is usually the loudest
    drift = 1.0 + rng.uniform(0.001, 0.003) * slow_random(n, rng, sr, cutoff_hz=0.05)
    phase = np.cumsum(mains_hz * drift, dtype=np.float64) / sr
    hum = periodic_wave(phase, amps, rng)
    floor = spectral_noise(n, lambda f: highpass(f, 30) * lowpass(f, 1000, 1), rng, sr)
    hum = hum / np.sqrt(np.mean(np.square(hum)))
    return hum + 10 ** (rng.uniform(-30, -20) / 20) * floor


def _wind(n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Gusty low-frequency buffeting; gusts also brighten it a little (rustle)."""
    corner = rng.uniform(60, 200)
    rumble = spectral_noise(n, lambda f: highpass(f, 8) * lowpass(f, corner, 2), rng, sr)
    rustle = spectral_noise(n, lambda f: highpass(f, 300, 2) * lowpass(f, 2000, 2), rng, sr)
    gust = np.exp(rng.uniform(0.6, 1.0) * slow_random(n, rng, sr, cutoff_hz=rng.uniform(0.15, 0.4)))
    return gust * rumble + 0.1 * gust**2 * rustle


def _traffic(n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Distant traffic rumble plus vehicles swelling past (engine and tyre noise)."""
    duration_s = n / sr
    rumble_hz = rng.uniform(100, 250)
    rumble = spectral_noise(n, lambda f: highpass(f, 20) * lowpass(f, rumble_hz, 2), rng, sr)
    rumble *= 1.0 + 0.1 * slow_random(n, rng, sr, cutoff_hz=0.1)
    tyre_hz = rng.uniform(400, 1000)
    tyres = spectral_noise(
        n,
        lambda f: highpass(f, 60, 2) * lowpass(f, 1200, 3) * 10 ** (resonance_db(f, tyre_hz, 500, 6) / 20),
        rng,
        sr,
    )
    t = np.arange(n, dtype=np.float32) / sr
    env = np.zeros(n, dtype=np.float32)
    for _ in range(rng.poisson(max(duration_s / 8.0, 0.5)) + 1):
        centre, width = rng.uniform(-2, duration_s + 2), rng.uniform(1.5, 4.0)
        lo, hi = np.searchsorted(t, [centre - 4 * width, centre + 4 * width])
        env[lo:hi] += rng.uniform(0.3, 1.2) * np.exp(-0.5 * ((t[lo:hi] - centre) / width) ** 2)
    return rumble + env * tyres


def _footsteps(n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Foot impacts at running/walking cadence: a damped low thump plus a click, over belt/motor noise."""
    cadence_hz = rng.uniform(1.4, 3.0)  # 84-180 steps per minute
    period_s = 1.0 / cadence_hz
    n_steps = int(n / sr / period_s) + 2
    times = rng.uniform(0, period_s) + period_s * np.arange(n_steps) + rng.normal(0, 0.01 * period_s, n_steps)
    idx = np.round(times * sr).astype(int)
    keep = (idx >= 0) & (idx < n)
    impulses = np.zeros(n, dtype=np.float32)
    gains = (1.0 + 0.15 * (np.arange(n_steps) % 2)) * rng.uniform(0.8, 1.2, n_steps)  # left/right feet
    impulses[idx[keep]] = gains[keep]
    t = np.arange(int(0.25 * sr)) / sr
    thump = np.sin(2 * np.pi * rng.uniform(50, 110) * t) * np.exp(-t / rng.uniform(0.02, 0.05))
    click = rng.standard_normal(t.size) * np.exp(-t / 0.002) * rng.uniform(0.1, 0.4)
    impacts = scipy.signal.oaconvolve(impulses, (thump + click).astype(np.float32))[:n]
    impacts /= max(float(np.sqrt(np.mean(np.square(impacts)))), 1e-12)
    belt = spectral_noise(n, lambda f: highpass(f, 40) * lowpass(f, 600, 2), rng, sr)
    return impacts + 10 ** (rng.uniform(-25, -12) / 20) * belt


def _music(n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Harmonic notes from a scale with attack/decay envelopes: a melody, a bass line and a chord pad."""
    beat_s = 60.0 / rng.uniform(80, 140)
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    root = int(rng.integers(55, 67))
    out = np.zeros(n, dtype=np.float32)
    voices = [  # (octave offset, beats per note choices, harmonic count, decay s, level)
        (0, (0.5, 1.0, 1.0, 2.0), 6, 0.4, 1.0),
        (-24, (2.0,), 4, 0.8, 0.8),
        (-12, (4.0,), 5, 2.0, 0.5),
    ]
    for octave, note_beats, n_harm, decay_s, level in voices:
        starts, freqs = [0], []
        while starts[-1] < n:
            degree = scale[rng.integers(0, len(scale))] + 12 * int(rng.integers(0, 2))
            freqs.append(440.0 * 2 ** ((root + octave + degree - 69) / 12))
            starts.append(starts[-1] + int(rng.choice(note_beats) * beat_s * sr))
        lengths = np.diff(starts)
        inst_freq = np.repeat(np.array(freqs), lengths)[:n]
        phase = np.cumsum(inst_freq, dtype=np.float64) / sr
        amps = rng.uniform(0.5, 1.0, n_harm) / np.arange(1, n_harm + 1)
        wave = periodic_wave(phase, amps, rng)
        env = np.zeros(n, dtype=np.float32)
        for start, length in zip(starts[:-1], lengths, strict=True):
            t = np.arange(min(int(length), n - start)) / sr
            env[start : start + t.size] = np.minimum(t / 0.015, 1.0) * np.exp(-t / decay_s)
        out += level * wave * env
    return out


# Vowel formants (F1, F2, F3) in Hz, roughly an adult average; babble blends talkers before filtering.
_VOWELS = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240))


def _formant_sos(formants: tuple[int, int, int], sr: int) -> np.ndarray:
    """Cascade of two-pole resonators (Klatt style, unity gain at DC) for one vowel."""
    sections = []
    for f_hz, bw_hz in zip(formants, (80, 100, 150), strict=True):
        r = np.exp(-np.pi * bw_hz / sr)
        a1, a2 = -2 * r * np.cos(2 * np.pi * f_hz / sr), r * r
        sections.append([1 + a1 + a2, 0, 0, 1, a1, a2])
    return np.array(sections)


def _babble(n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Several talkers: glottal pulse trains with pitch contours, gated into syllables (3-6 per second)
    grouped into phrases, each syllable voiced through one vowel's formants."""
    n_talkers = int(rng.integers(2, 6))
    factor = sr // 100  # syllable gates are drawn at 100 Hz
    n_ctrl = -(-n // factor) + 1
    t_ctrl = np.arange(n_ctrl) / 100.0
    samples = np.arange(n)
    per_vowel = np.zeros((len(_VOWELS), n), dtype=np.float32)
    for _ in range(n_talkers):
        f0 = rng.uniform(95, 135) if rng.random() < 0.5 else rng.uniform(175, 240)
        contour = f0 * (1.0 + 0.12 * slow_random(n, rng, sr, cutoff_hz=2.0))
        n_harm = int(7000 // (f0 * 1.4))
        source = periodic_wave(np.cumsum(contour, dtype=np.float64) / sr, 1.0 / np.arange(1, n_harm + 1), rng)
        gate = np.zeros(n_ctrl, dtype=np.float32)
        vowel = np.zeros(n_ctrl, dtype=np.int64)
        pos = rng.uniform(0, 1.0)
        while pos < t_ctrl[-1]:
            phrase_end = pos + rng.uniform(1.0, 3.0)
            while pos < phrase_end:
                syllable_s = rng.uniform(0.15, 0.3)
                lo, hi = np.searchsorted(t_ctrl, [pos, pos + syllable_s])
                gate[lo:hi] = rng.uniform(0.5, 1.0) * np.sin(np.pi * (t_ctrl[lo:hi] - pos) / syllable_s) ** 2
                vowel[lo:hi] = rng.integers(0, len(_VOWELS))
                pos += syllable_s
            pos += rng.uniform(0.2, 0.8)
        # Each sample of one talker belongs to one vowel, so this scatter has no repeated index.
        voiced = rng.uniform(0.5, 1.0) * source * upsample_linear(gate, factor, n)
        per_vowel[np.repeat(vowel, factor)[:n], samples] += voiced
    out = np.zeros(n, dtype=np.float32)
    for v, formants in enumerate(_VOWELS):
        out += scipy.signal.sosfilt(_formant_sos(formants, sr), per_vowel[v]).astype(np.float32)
    return np.diff(out, prepend=0.0).astype(np.float32)  # lip radiation: +6 dB/octave


_GENERATORS: dict[str, Callable[[int, np.random.Generator, int], np.ndarray]] = {
    "fan": _fan,
    "air_conditioner": _air_conditioner,
    "fridge_hum": _fridge_hum,
    "wind": _wind,
    "traffic": _traffic,
    "footsteps": _footsteps,
    "music": _music,
    "babble": _babble,
}


def make_noise(
    kind: str, duration_s: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE_HZ
) -> np.ndarray:
    """``duration_s`` seconds of noise ``kind`` (one of :data:`NOISE_KINDS`), RMS :data:`NOISE_RMS`."""
    if kind not in _GENERATORS:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {', '.join(NOISE_KINDS)}")
    n = round(duration_s * sample_rate)
    if n <= 0:
        raise ValueError(f"noise duration must be positive, not {duration_s!r} s")
    return _normalise(_GENERATORS[kind](n, rng, sample_rate)[:n])
