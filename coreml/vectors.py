"""Test vectors for the app's XCTest: ``python -m coreml vectors PKG --audio FILE --out DIR``.

An iPhone app cannot run torch, and we cannot run Core ML here. What both sides can read is raw
float32: this writes, for one audio file streamed as one stream, the chunks fed to the package and the
outputs and states expected after each chunk (from the torch streaming wrapper, the reference that
``coreml verify`` uses), with the tolerance of each, so that an XCTest on a Mac replays the chunks
through Core ML and compares (``docs/ios.md`` shows that test).

Layout of ``DIR``:

- ``vectors.json``: format tag, the package (file name, SHA-256 of the package folder, SHA-256 of its
  ``weights/weight.bin`` and of the checkpoint, both also in the package metadata), the audio, the
  chunk length, the pass rule, and for the input and each output and state: its raw file, its shape
  ``[chunks, ...one call's shape]``, and its tolerance with the reason;
- one ``.f32`` file per array: little-endian IEEE float32, row-major (C order), no header.

The package SHA-256 is a tree hash (see :func:`package_sha256`): the package cannot hold its own hash,
and the app bundle holds a compiled ``.mlmodelc``, not the ``.mlpackage``.

Before writing, the interpreter replays the chunks and must pass (:func:`replay`): vectors the package
itself fails would only move the failure to the Mac.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from coreml.verify import (
    LOG_POWER_FLOOR_NEPERS,
    LOG_POWER_STATES,
    MIN_PSNR_DB,
    RUN_MIN_PSNR_DB,
    Check,
    PackageStreamer,
    Tolerance,
    VerifyError,
    compare,
    looped,
    open_session,
    stream_values,
    tolerance,
    verify_chunks,
)
from training.audio import load_audio
from training.checkpoint import file_sha256
from training.frontend import SAMPLE_RATE_HZ

FORMAT = "respira-coreml-vectors/1"


def package_sha256(package: Path | str) -> str:
    """SHA-256 over the package folder: for each file in sorted relative-path order (POSIX separators),
    ``path + "\\0" + sha256(content) hex + "\\n"``. Any changed byte, added or removed file changes it."""
    package = Path(package)
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.is_file()):
        relative = path.relative_to(package).as_posix()
        digest.update(f"{relative}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def _write_f32(path: Path, values: np.ndarray) -> None:
    path.write_bytes(np.ascontiguousarray(values, dtype="<f4").tobytes())


def read_f32(path: Path | str, shape: list[int] | tuple[int, ...]) -> np.ndarray:
    """A raw little-endian float32 file as an array of ``shape``; refuses a size that does not fit."""
    raw = Path(path).read_bytes()
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) != 4 * count:
        raise VerifyError(f"{path}: {len(raw)} bytes, but shape {list(shape)} needs {4 * count}")
    return np.frombuffer(raw, "<f4").reshape(shape).astype(np.float32)


def write_vectors(
    package_path: Path | str,
    audio_path: Path | str,
    out: Path | str,
    checkpoint: Path | str | None = None,
    seconds: float = 60.0,
) -> dict:
    """Stream ``audio_path`` (looped to ``seconds`` if shorter, cut to ``seconds`` if longer) and write
    the vectors to ``out``; returns what was written to ``vectors.json``."""
    session = open_session(package_path, checkpoint)
    chunk = session.chunk_samples
    chunks, plays = looped(load_audio(audio_path, SAMPLE_RATE_HZ), chunk, seconds)
    chunks = chunks[: max(1, round(seconds * SAMPLE_RATE_HZ / chunk))]
    expected = stream_values(session.reference(), chunks)
    kinds = session.kinds()
    checks, _ = verify_chunks(session, chunks, reference_values=expected)
    failures = [c for c in checks if not c.passed]
    if failures:
        raise VerifyError(
            f"{package_path} fails against torch on {audio_path} ({', '.join(c.name for c in failures)}): "
            "run `python -m coreml verify` first; no vectors written"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = session.package.user_defined_metadata
    arrays: dict[str, dict[str, Any]] = {}
    _write_f32(out / "input_audio.f32", chunks.reshape(len(chunks), 1, chunk))
    for name, values in expected.items():
        tol = tolerance(name)
        file_name = f"{kinds[name]}_{name}.f32"
        _write_f32(out / file_name, values)
        arrays[name] = {
            "file": file_name,
            "shape": list(values.shape),
            "kind": kinds[name],
            "step_max_abs_error": tol.step_abs,
            "step_max_median_error": tol.step_median,
            "tolerance_reason": tol.measured,
            "psnr_peak": tol.psnr_peak,
            # ln-power states: both sides are clamped at (the chunk's largest expected value - this)
            # before comparing (coreml.verify.LOG_POWER_STATES: an empty band holds only round-off)
            "compare_above_max_minus": LOG_POWER_FLOOR_NEPERS if name in LOG_POWER_STATES else None,
        }
    document = {
        "format": FORMAT,
        "package": {
            "file": Path(package_path).name,
            "sha256": package_sha256(package_path),
            "sha256_rule": "sorted files: relative path + NUL + sha256(content) hex + LF, hashed",
            "weights_sha256": hashlib.sha256(
                (Path(package_path) / "Data/com.apple.CoreML/weights/weight.bin").read_bytes()
            ).hexdigest(),
            "checkpoint_sha256": session.checkpoint_meta["sha256"],
            "variant": meta.get("respira.variant"),
            "precision": meta.get("respira.precision"),
            "interface_version": meta.get("respira.interface_version"),
        },
        "audio": {
            "file": Path(audio_path).name,
            "sha256": file_sha256(audio_path),
            "plays": plays,
            "seconds": chunks.size / SAMPLE_RATE_HZ,
        },
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "chunk_samples": chunk,
        "chunks": len(chunks),
        "byte_order": "little",
        "dtype": "float32",
        "layout": "row-major; first axis: the chunk; values after each call; states zero before the first",
        "rule": "abs" if session.strict else "psnr",
        "rule_text": (
            "for every output and state, in two modes. step (each call starts from the expected states "
            "after the chunk before; zeros for the first): "
            + (
                "|got - expected| <= step_max_abs_error for every element after every chunk, and the "
                "median over the chunks of each chunk's max |got - expected| <= step_max_median_error"
                if session.strict
                else f"PSNR >= min_psnr_db ({MIN_PSNR_DB:g} dB) over all chunks"
            )
            + f". run (the package streams on its own from zeros): PSNR >= run_min_psnr_db "
            f"({RUN_MIN_PSNR_DB:g} dB) over all chunks. PSNR peak = psnr_peak or else max |expected|"
        ),
        "min_psnr_db": MIN_PSNR_DB,
        "run_min_psnr_db": RUN_MIN_PSNR_DB,
        "inputs": {"audio": {"file": "input_audio.f32", "shape": [len(chunks), 1, chunk]}},
        "outputs": {n: a for n, a in arrays.items() if a["kind"] == "output"},
        "states": {n: a for n, a in arrays.items() if a["kind"] == "state"},
    }
    (out / "vectors.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return {**document, "seconds": chunks.size / SAMPLE_RATE_HZ}


def load_vectors(folder: Path | str) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    """``(vectors.json, chunks [n, chunk], expected values by name)`` from a vectors folder."""
    folder = Path(folder)
    document = json.loads((folder / "vectors.json").read_text())
    if document.get("format") != FORMAT:
        raise VerifyError(f"{folder}: not {FORMAT} vectors (format {document.get('format')!r})")
    audio = document["inputs"]["audio"]
    chunks = read_f32(folder / audio["file"], audio["shape"]).reshape(document["chunks"], -1)
    expected = {
        name: read_f32(folder / spec["file"], spec["shape"])
        for name, spec in {**document["outputs"], **document["states"]}.items()
    }
    return document, chunks, expected


def replay(folder: Path | str, model: Any, description: Any | None = None, mode: str = "step") -> list[Check]:
    """Replay the vectors through ``model`` (the interpreter, or coremltools' ``MLModel`` with the
    interpreter's ``description``) and judge every output and state by the vectors' own rule: what the
    XCTest does on a Mac.

    ``mode="step"``: before each chunk the model's state is set to the expected state after the chunk
    before (zeros for the first); ``"run"``: the model streams on its own from zeros.
    """
    document, chunks, expected = load_vectors(folder)
    streamer = PackageStreamer(description if description is not None else model, model)
    if mode == "step":
        got: dict[str, list[np.ndarray]] = {}
        streamer.reset()
        for index, chunk in enumerate(chunks):
            if index:
                streamer.set_states({n: expected[n][index - 1] for n in streamer.state_names})
            streamer.push(chunk)
            for name, value in {**streamer.outputs(), **streamer.states()}.items():
                got.setdefault(name, []).append(np.array(value, np.float64))
        values = {n: np.stack(v) for n, v in got.items()}
    else:
        values = stream_values(streamer, chunks)
    specs = {**document["outputs"], **document["states"]}
    kinds: Mapping[str, str] = {n: s["kind"] for n, s in specs.items()}
    tolerances = {
        n: Tolerance(
            float(s["step_max_abs_error"]),
            float(s["step_max_median_error"]),
            s["tolerance_reason"],
            s["psnr_peak"],
        )
        for n, s in specs.items()
    }
    return compare(expected, values, kinds, document["rule"] == "abs", mode, tolerances)
