"""Export a checkpoint to a streaming ``.mlpackage``.

``python -m coreml export [--checkpoint CKPT] --out PATH.mlpackage [--variant explicit|stateful]
[--chunk-samples 1600] [--precision float32|float16]``

Path: ``torch.jit.trace`` of a float32 streaming wrapper (:mod:`coreml.streaming`), then
``ct.convert(convert_to="mlprogram")`` (``torch.export``, ``LSTMCell`` and ``jit.script`` fail with
coremltools 9). The front-end (framing, Hann, DFT as convolution, power, mel, log) always computes in
float32, also in a float16 package: quiet breath energies underflow in fp16.

Reproducibility: everything in the package derives from the checkpoint and the arguments, except the
conversion date in ``user_defined_metadata["respira.converted_at"]`` (set ``SOURCE_DATE_EPOCH`` to pin
it). The package's ``Manifest.json`` gets identifiers derived from the checkpoint hash instead of
random UUIDs, so two exports of one checkpoint are byte-identical apart from that date.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch

from coreml.streaming import (
    OUTPUT_NAMES,
    STATE_NAMES,
    ExplicitStreamer,
    StatefulStreamer,
    check_chunk_samples,
    state_shapes,
)
from training import __version__
from training.checkpoint import load_checkpoint
from training.frontend import DEFAULT_FRONTEND, check_frontend
from training.manifest import BREATH_CLASSES

VARIANTS = ("explicit", "stateful")
PRECISIONS = ("float32", "float16")

STATE_DESCRIPTIONS = {
    "audio_tail": "last 240 samples of audio (15 ms) that the next chunk's first frames overlap",
    "conv_context": "last 2 normalised feature frames, the causal time convolution's left context",
    "lstm_h": "LSTM hidden state",
    "lstm_c": "LSTM cell state",
    "pool_mean": "mean of the LSTM outputs since the last reset",
    "pool_count": "number of model steps (frame_stride feature frames of 10 ms each) since the last reset",
    "norm_mean": "running mean of each log-mel band (the streaming normalisation)",
    "norm_count": "number of feature frames (10 ms each) since the last reset",
}
OUTPUT_DESCRIPTIONS = {
    "rr_bpm": "respiratory rate since the last reset, breaths per minute",
    "respiration_count": "breath cycles heard since the last reset",
    "breath_probs": "probabilities of breathing classes (none, normal, heavy)",
    "noise_prob": "probability that the audio since the last reset is noisy",
}


class ExportError(ValueError):
    """The export cannot be made as asked (message says why)."""


def _frontend_op_selector():
    """fp16 op selector keeping the front-end (every op up to and including ``log``) in float32."""
    keep_fp32: set[int] | None = None

    def ancestors(op) -> set[int]:
        seen: set[int] = set()
        stack = [op]
        while stack:
            current = stack.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            for value in current.inputs.values():
                for v in value if isinstance(value, (list, tuple)) else [value]:
                    if getattr(v, "op", None) is not None:
                        stack.append(v.op)
        return seen

    def selector(op) -> bool:
        nonlocal keep_fp32
        if keep_fp32 is None:
            logs = [o for o in op.enclosing_block.operations if o.op_type == "log"]
            keep_fp32 = set().union(*(ancestors(o) for o in logs)) if logs else set()
        return id(op) not in keep_fp32

    return selector


def _converted_at() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        if epoch
        else datetime.datetime.now(datetime.timezone.utc)
    )
    return moment.replace(microsecond=0).isoformat()


def _pin_manifest_ids(package: Path, seed: str) -> None:
    """Replace the random item identifiers in Manifest.json with ones derived from ``seed``."""
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    mapping = {}
    for old, entry in manifest.get("itemInfoEntries", {}).items():
        digest = hashlib.sha256(f"{seed}/{entry.get('path', '')}".encode()).hexdigest()
        mapping[old] = str(uuid.UUID(digest[:32])).upper()
    manifest["itemInfoEntries"] = {mapping[k]: v for k, v in manifest["itemInfoEntries"].items()}
    if manifest.get("rootModelIdentifier") in mapping:
        manifest["rootModelIdentifier"] = mapping[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _checkpoint_location(checkpoint: Path | str | None, out: Path) -> dict[str, str]:
    """Where ``verify`` finds the checkpoint without ``--checkpoint``: its path relative to the package's
    folder (so a folder moved whole still works, and no home directory is written into the package);
    nothing for the shipped model, which verify falls back to."""
    if checkpoint is None:
        return {}
    relative = os.path.relpath(Path(checkpoint).resolve(), out.resolve().parent)
    return {"respira.checkpoint_path": Path(relative).as_posix()}


def export_package(
    out: Path | str,
    checkpoint: Path | str | None = None,
    variant: str = "explicit",
    chunk_samples: int = 1600,
    precision: str = "float32",
) -> Path:
    """Convert ``checkpoint`` (default: the shipped model) and save it to ``out`` (.mlpackage)."""
    import coremltools as ct

    out = Path(out)
    if variant not in VARIANTS:
        raise ExportError(f"variant must be one of {VARIANTS}, not {variant!r}")
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if out.suffix != ".mlpackage":
        raise ExportError(f"{out}: the output must end in .mlpackage")
    try:
        check_chunk_samples(chunk_samples)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    model, meta = load_checkpoint(checkpoint)
    check_frontend(DEFAULT_FRONTEND, meta["frontend"], f"checkpoint {meta['path']}")
    shapes = state_shapes(model)

    audio_type = ct.TensorType(name="audio", shape=(1, chunk_samples), dtype=np.float32)
    example_audio = torch.zeros(1, chunk_samples)
    common = {
        "convert_to": "mlprogram",
        "compute_precision": (
            ct.precision.FLOAT32
            if precision == "float32"
            else ct.transform.FP16ComputePrecision(op_selector=_frontend_op_selector())
        ),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if variant == "explicit":
            wrapper = ExplicitStreamer(model).eval()
            example = (example_audio, *(torch.zeros(s) for s in shapes.values()))
            traced = torch.jit.trace(wrapper, example)
            inputs = [audio_type] + [
                ct.TensorType(name=f"{n}_in", shape=s, dtype=np.float32) for n, s in shapes.items()
            ]
            outputs = [ct.TensorType(name=n, dtype=np.float32) for n in OUTPUT_NAMES] + [
                ct.TensorType(name=f"{n}_out", dtype=np.float32) for n in STATE_NAMES
            ]
            mlmodel = ct.convert(
                traced, inputs=inputs, outputs=outputs, minimum_deployment_target=ct.target.iOS16, **common
            )
        else:
            wrapper = StatefulStreamer(model).eval()
            traced = torch.jit.trace(wrapper, (example_audio,), check_trace=False)
            states = [
                ct.StateType(wrapped_type=ct.TensorType(shape=s, dtype=np.float16), name=n)
                for n, s in shapes.items()
            ]
            outputs = [ct.TensorType(name=n, dtype=np.float32) for n in OUTPUT_NAMES]
            mlmodel = ct.convert(
                traced,
                inputs=[audio_type],
                outputs=outputs,
                states=states,
                minimum_deployment_target=ct.target.iOS18,
                **common,
            )

    summary = meta.get("summary", {})
    mlmodel.author = "Respira contributors"
    mlmodel.license = "MIT"
    mlmodel.version = __version__
    mlmodel.short_description = (
        f"Respiratory rate from breath audio ({meta['config']['model_type'].upper()}-"
        f"{meta['config']['units']}), streamed in {chunk_samples}-sample chunks of 16 kHz mono audio. "
        "Outputs describe all audio since the last reset (zero states). Fitness use, not a medical device."
    )
    mlmodel.input_description["audio"] = (
        f"{chunk_samples} samples ({chunk_samples / 16:.0f} ms) of 16 kHz mono float32 PCM in [-1, 1]"
    )
    for name in STATE_NAMES:
        if variant == "explicit":
            mlmodel.input_description[f"{name}_in"] = f"{STATE_DESCRIPTIONS[name]}; zeros to reset"
            mlmodel.output_description[f"{name}_out"] = f"{STATE_DESCRIPTIONS[name]}; feed back as {name}_in"
    for name, text in OUTPUT_DESCRIPTIONS.items():
        mlmodel.output_description[name] = text
    metadata = {
        "respira.frontend": json.dumps(DEFAULT_FRONTEND.to_dict(), sort_keys=True),
        "respira.chunk_samples": str(chunk_samples),
        "respira.variant": variant,
        "respira.precision": precision,
        "respira.states": json.dumps({n: list(s) for n, s in shapes.items()}),
        "respira.state_storage": "float32 inputs/outputs"
        if variant == "explicit"
        else "Core ML states, fp16",
        "respira.breath_classes": json.dumps(list(BREATH_CLASSES)),
        "respira.heavy_threshold_bpm": str(meta["config"].get("heavy_threshold_bpm")),
        "respira.model": json.dumps(meta["model"], sort_keys=True),
        "respira.training_data": json.dumps(summary.get("data", {}), sort_keys=True),
        "respira.metrics": json.dumps(
            summary.get("metrics", {"val_ccc_rr": summary.get("val_ccc_rr")}), sort_keys=True
        ),
        "respira.checkpoint_sha256": meta["sha256"],
        **_checkpoint_location(checkpoint, out),
        "respira.package_version": __version__,
        "respira.converted_at": _converted_at(),
    }
    mlmodel.user_defined_metadata.update(metadata)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(out))
    _pin_manifest_ids(out, f"{meta['sha256']}/{variant}/{precision}/{chunk_samples}")
    return out
