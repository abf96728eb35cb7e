"""Random and corrupted bytes into the audio loader and the corpus importers: only documented errors out.

`load_audio` either returns finite mono float32 audio or raises AudioError; the importers either return
a report (skipping what they cannot use, naming it) or raise CorpusImportError. Any other exception
(a UnicodeDecodeError from a CSV, a MemoryError from a lying header, a crash in a decoder) is a bug:
a batch tool would die on one bad file instead of reporting it. Cases come from a seeded generator, so
every run feeds the same bytes and a failure names the case that reproduces it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_fixtures import breath_wav, make_breathmy

from training.audio import AudioError, load_audio
from training.importers import CorpusImportError, ImportReport, import_corpus

SEED = 20260521
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".mp3", ".m4a", ".bin")


def valid_audio_bytes(fmt: str, rng: np.random.Generator) -> bytes:
    """A short real recording in `fmt` (WAV, FLAC, OGG), to corrupt."""
    rate = int(rng.choice([8_000, 16_000, 44_100]))
    channels = int(rng.integers(1, 3))
    x = 0.2 * rng.standard_normal((rate * 2, channels)).astype(np.float32)
    buffer = io.BytesIO()
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}[fmt]
    sf.write(buffer, x, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def corrupt(data: bytes, rng: np.random.Generator) -> bytes:
    """One of the ways files break: cut short, bytes flipped, header overwritten, garbage spliced in."""
    raw = bytearray(data)
    kind = int(rng.integers(0, 5))
    if kind == 0:  # truncated anywhere, header included
        return bytes(raw[: int(rng.integers(0, len(raw)))])
    if kind == 1:  # a few random bytes flipped
        for i in rng.integers(0, len(raw), size=int(rng.integers(1, 32))):
            raw[i] ^= int(rng.integers(1, 256))
        return bytes(raw)
    if kind == 2:  # header region overwritten (sizes, rates, channel counts lie)
        end = min(len(raw), 64)
        raw[:end] = rng.integers(0, 256, end, dtype=np.uint8).tobytes()
        return bytes(raw)
    if kind == 3:  # a header field set to extremes (0 or all ones) at a random offset in the header
        offset = int(rng.integers(4, min(len(raw) - 4, 60)))
        raw[offset : offset + 4] = bytes([0] * 4) if rng.random() < 0.5 else b"\xff" * 4
        return bytes(raw)
    start = int(rng.integers(0, len(raw)))  # garbage spliced into the middle
    return bytes(raw[:start]) + rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()


def audio_cases(n_random: int, n_corrupt: int) -> Iterator[tuple[str, str, bytes]]:
    """(case id, suffix, bytes): random bytes under every suffix, then corrupted real files."""
    rng = np.random.default_rng(SEED)
    for i in range(n_random):
        suffix = AUDIO_SUFFIXES[i % len(AUDIO_SUFFIXES)]
        size = int(rng.choice([1, 12, 44, 512, 20_000]))
        yield f"random-{i}", suffix, rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    for i in range(n_corrupt):
        fmt = ("WAV", "FLAC", "OGG")[i % 3]
        data = corrupt(valid_audio_bytes(fmt, rng), rng)
        yield f"corrupt-{fmt.lower()}-{i}", f".{fmt.lower()}", data


def only(errors: tuple[type[Exception], ...], call: Callable[[], object], case: str) -> object | None:
    """The result of `call`, or None when it raised one of `errors`; anything else fails naming `case`."""
    try:
        return call()
    except errors:
        return None
    except Exception as exc:  # the point of the test: nothing else may escape
        pytest.fail(f"{case}: {type(exc).__name__} escaped instead of {errors[0].__name__}: {exc}")


def test_audio_loader_raises_only_audio_error(tmp_path: Path) -> None:
    loaded = refused = 0
    for case, suffix, data in audio_cases(n_random=35, n_corrupt=60):
        path = tmp_path / f"{case}{suffix}"
        path.write_bytes(data)
        audio = only((AudioError,), lambda path=path: load_audio(path), case)
        if audio is None:
            refused += 1
            continue
        loaded += 1
        assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.ndim == 1, case
        assert np.isfinite(audio).all() and len(audio) >= 16_000, case
    assert refused > 0 and loaded > 0  # both outcomes were exercised (bit flips in samples still load)


def test_audio_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(SEED).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match=r"noise\.wav"):
        load_audio(path)


# ---- importers ------------------------------------------------------------------------------------------


def random_text(rng: np.random.Generator, n: int) -> bytes:
    """Bytes that are mostly CSV-ish text, with invalid UTF-8, NULs, quotes and huge fields mixed in."""
    pieces = [b"path", b"subject", b"device", b"rr_bpm", b"sex", b",", b"\n", b"\r\n", b'"', b"\x00"]
    pieces += [
        b"..",
        b"/",
        b"a.wav",
        b"12",
        b"-3",
        b"nan",
        b"1e309",
        b"\xff\xfe",
        b"\xc3",
        b"x" * 200_000,
        b" ",
    ]
    return b"".join(pieces[int(i)] for i in rng.integers(0, len(pieces), n))


def rrujo_cases(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """RRuJO-layout folders whose recordings.csv and audio files are random or corrupted."""
    rng = np.random.default_rng(SEED + 1)
    good = breath_wav(tmp_path / "source.wav", 15.0, duration_s=9.0).read_bytes()
    header = b"path,subject,device,rr_bpm,sex\n"
    for i in range(24):
        root = tmp_path / f"rrujo-{i}"
        (root / "audio").mkdir(parents=True)
        rows = []
        for j in range(3):
            name = f"audio/r{j}.wav"
            data = good if j == 0 else corrupt(good, rng)
            (root / name).write_bytes(data)
            rows.append(f"{name},s{j},dev,{12 + j},f\n".encode())
        kind = i % 4
        if kind == 0:  # random bytes as the whole table
            table = rng.integers(0, 256, int(rng.integers(0, 2000)), dtype=np.uint8).tobytes()
        elif kind == 1:  # CSV-like garbage after a good header
            table = header + random_text(rng, int(rng.integers(1, 60)))
        elif kind == 2:  # good rows with one spliced row of garbage
            table = header + b"".join(rows) + random_text(rng, 20)
        else:  # good table, bytes flipped
            table = corrupt(header + b"".join(rows), rng)
        (root / "recordings.csv").write_bytes(table)
        yield f"rrujo-{i}", root


def check_import(layout: str, case: str, root: Path, out: Path) -> ImportReport | None:
    report = only((CorpusImportError,), lambda: import_corpus(layout, root, out, seed=0), case)
    if report is not None:
        assert isinstance(report, ImportReport) and report.segments, case
        assert (out / "manifest.csv").is_file(), case
    return report  # type: ignore[return-value]


def test_rrujo_importer_raises_only_corpus_import_error(tmp_path: Path) -> None:
    outcomes = [
        check_import("rrujo", case, root, tmp_path / "out" / case) for case, root in rrujo_cases(tmp_path)
    ]
    assert any(r is None for r in outcomes) and any(r is not None for r in outcomes)


def test_breathmy_importer_raises_only_corpus_import_error(tmp_path: Path) -> None:
    """A BreathMY folder whose files get random names and random or corrupted contents."""
    rng = np.random.default_rng(SEED + 2)
    outcomes = []
    for i in range(8):
        root = tmp_path / f"breathmy-{i}"
        files = make_breathmy(root)["good"]
        for path in files[1:]:
            if rng.random() < 0.6:
                path.write_bytes(corrupt(path.read_bytes(), rng))
        for k in range(3):  # names that almost match the pattern, with random bytes inside
            stem = ["12RR_30cm_2023_05_01_", "99RR_0cm_2023_02_30_", "1e3RR_30cm_2023_05_01_"][k]
            (root / "D_A" / f"{stem}s{i}{k}.wav").write_bytes(random_text(rng, 30))
        outcomes.append(check_import("breathmy", f"breathmy-{i}", root, tmp_path / "out" / str(i)))
    assert any(r is not None for r in outcomes)
    # the folder itself wrong: not a folder, or no D_x folders in it
    (tmp_path / "file").write_bytes(b"\x00\xff")
    for root in (tmp_path / "file", tmp_path / "missing", tmp_path / "out"):
        with pytest.raises(CorpusImportError):
            import_corpus("breathmy", root, tmp_path / "out-bad", seed=0)
