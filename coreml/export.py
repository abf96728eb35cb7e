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
import math
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
            wrapper: torch.nn.Module = ExplicitStreamer(model).eval()
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
    described = describe(mlmodel, model, variant, precision, chunk_samples)
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
        # the estimator's settings calibrated for this checkpoint: how the app turns phase_probs into a
        # rolling rate, "no breathing" or "too noisy" (training/estimator.py)
        "respira.estimator": json.dumps(meta.get("estimator") or {}, sort_keys=True),
        "respira.model": json.dumps(meta["model"], sort_keys=True),
        "respira.training_data": json.dumps(summary.get("data", {}), sort_keys=True),
        "respira.metrics": json.dumps(
            summary.get("metrics", {"val_ccc_rr": summary.get("val_ccc_rr")}), sort_keys=True
        ),
        "respira.checkpoint_sha256": meta["sha256"],
        **_checkpoint_location(checkpoint, out),
        **described,
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


# -- descriptions, units and limits: one table, kept apart from the graph code ---------------------------

# Bump when an input, output or state changes name, shape or meaning. 2: + phase_probs (the chunk's
# frame-level breath output).
INTERFACE_VERSION = "2"


def feature_descriptions(model, chunk_samples: int, cfg=DEFAULT_FRONTEND) -> dict[str, tuple[str, str]]:
    """Unit and description of every output and state of the streaming wrapper, by name.

    Why a function of the model: step and frame lengths, counts per chunk and band counts are the
    model's (``frame_stride`` 5 makes an LSTM step 50 ms), and a description that states a number the
    model does not use (the old "10 ms frames" of ``pool_count``) is worse than none.
    """
    hop_ms = 1000.0 * cfg.hop_length / cfg.sample_rate
    step_ms = hop_ms * model.frame_stride
    frames = chunk_samples // cfg.hop_length
    steps = frames // model.frame_stride
    tail = cfg.win_length - cfg.hop_length
    warmup = round(1.0 / model.norm_alpha)
    since = "since the last reset (zero states)"
    return {
        "rr_bpm": ("breaths/min", f"respiratory rate of all audio {since}"),
        "respiration_count": ("breath cycles", f"breath cycles heard {since} (fractional)"),
        "breath_probs": ("probability", f"P(none), P(normal), P(heavy) breathing, audio {since}; sums to 1"),
        "noise_prob": ("probability", f"P(the audio {since} is noisy)"),
        "phase_probs": (
            "probability",
            f"the chunk's frame-level breath output: P(inhale), P(exhale), P(other) at each of its {steps} "
            f"LSTM steps ({step_ms:g} ms each) [1, steps, 3]; each row sums to 1",
        ),
        "audio_tail": (
            "PCM sample",
            f"last {tail} samples ({1000 * tail / cfg.sample_rate:g} ms) of audio, overlapped by the next "
            "chunk's first frames",
        ),
        "conv_context": (
            "normalised log-mel",
            f"last {model.conv_kernel - 1} normalised feature frames ({hop_ms:g} ms each), the causal time "
            "convolution's left context [1, bands, frames]",
        ),
        "lstm_h": ("unitless", f"LSTM hidden state ({model.units} units, in [-1, 1])"),
        "lstm_c": ("unitless", f"LSTM cell state ({model.units} units, unbounded; reaches the hundreds)"),
        "pool_mean": ("unitless", f"mean of the LSTM outputs over every step {since}"),
        "pool_count": (
            "LSTM steps",
            f"LSTM steps {since}; one step = {model.frame_stride} feature frames = {step_ms:g} ms, "
            f"{steps} per chunk",
        ),
        "norm_mean": (
            "ln energy",
            f"running mean of each of the {model.n_mels} log-mel bands (streaming normalisation, time "
            f"constant {model.running_norm.time_constant_s:g} s)",
        ),
        "norm_count": (
            "feature frames",
            f"feature frames {since}; one frame = {hop_ms:g} ms, {frames} per chunk; only the first "
            f"{warmup} matter (afterwards the running mean is exponential)",
        ),
    }


def _exact_count_s(increment: int, dtype, chunk_s: float) -> float:
    """Seconds of audio for which a counter that adds ``increment`` per chunk stays exact in ``dtype``
    (a float16 counter stops or skips once its spacing exceeds what it adds)."""
    mantissa = np.finfo(dtype).nmant
    exponent = mantissa + 1  # every integer up to 2^(mantissa + 1) is representable
    while True:
        spacing = 2 ** (exponent - mantissa)  # between 2^exponent and 2^(exponent + 1)
        first = -(-(2**exponent) // increment)
        for k in range(first, first + spacing + 1):
            total = k * increment
            if total >= 2 ** (exponent + 1):
                break
            if total % spacing:
                return (k - 1) * chunk_s
        exponent += 1


def stream_limits(model, chunk_samples: int, precision: str, variant: str, cfg=DEFAULT_FRONTEND) -> dict:
    """How long one stream may run before a reset, and the float16 limits, for the metadata."""
    fp16 = precision == "float16" or variant == "stateful"
    dtype = np.float16 if fp16 else np.float32
    chunk_s = chunk_samples / cfg.sample_rate
    frames = chunk_samples // cfg.hop_length
    pool_s = _exact_count_s(frames // model.frame_stride, dtype, chunk_s)
    norm_s = _exact_count_s(frames, dtype, chunk_s)
    warmup_s = (1.0 / model.norm_alpha) / model.frames_per_second
    # norm_count matters only during the running norm's warm-up; pool_count (the pooled mean's weight
    # and respiration_count's minutes) matters for the whole stream
    max_s = min(pool_s, norm_s if norm_s < warmup_s else math.inf)
    return {
        "state_arithmetic": "float16" if fp16 else "float32",
        "pool_count_exact_s": round(pool_s, 1),
        "norm_count_exact_s": round(norm_s, 1),
        "norm_count_matters_s": round(warmup_s, 1),
        "max_stream_s": round(max_s, 1),
        "notes": (
            "reset (zero states) before max_stream_s of audio: after it a step counter is no longer exact "
            "and respiration_count and the pooled mean drift. "
            + (
                "fp16: integers are exact only up to 2048, the largest value is 65504, and the LSTM cell "
                "state (which reaches the hundreds) is held to 1/16 near 120 and 1/4 near 300."
                if fp16
                else "float32: integers are exact up to 2^24."
            )
        ),
    }


def describe(mlmodel, model, variant: str, precision: str, chunk_samples: int) -> dict[str, str]:
    """Write the description of every input, output and state into ``mlmodel``'s spec and return the
    metadata entries that go with them (units, frame/step/chunk, limits, interface version)."""
    table = feature_descriptions(model, chunk_samples)
    names = [*OUTPUT_NAMES, *STATE_NAMES]
    missing = [n for n in names if n not in table]
    if missing:
        raise ExportError(f"no description for {missing}: add them to coreml.export.feature_descriptions")

    def text(name: str) -> str:
        unit, words = table[name]
        return f"{words} [{unit}]"

    spec = mlmodel._spec.description  # the states have no public setter; the spec is what is saved
    mlmodel.input_description["audio"] = (
        f"{chunk_samples} samples ({1000 * chunk_samples / DEFAULT_FRONTEND.sample_rate:g} ms) of 16 kHz "
        "mono float32 PCM in [-1, 1]; exactly this many per call"
    )
    for name in OUTPUT_NAMES:
        mlmodel.output_description[name] = text(name)
    for name in STATE_NAMES:
        if variant == "explicit":
            mlmodel.input_description[f"{name}_in"] = (
                f"{text(name)}; the previous call's {name}_out, zeros to reset"
            )
            mlmodel.output_description[f"{name}_out"] = f"{text(name)}; feed back as {name}_in"
    for state in spec.state:
        state.shortDescription = f"{text(state.name)}; kept by Core ML in fp16, reset with a new MLState"
    limits = stream_limits(model, chunk_samples, precision, variant)
    cfg = DEFAULT_FRONTEND
    return {
        "respira.interface_version": INTERFACE_VERSION,
        "respira.units": json.dumps({n: table[n][0] for n in names}, sort_keys=True),
        "respira.sample_rate_hz": str(cfg.sample_rate),
        "respira.chunk_ms": f"{1000 * chunk_samples / cfg.sample_rate:g}",
        "respira.frame_ms": f"{1000 * cfg.hop_length / cfg.sample_rate:g}",
        "respira.step_ms": f"{1000 * cfg.hop_length * model.frame_stride / cfg.sample_rate:g}",
        "respira.window": (
            "rr_bpm, respiration_count, breath_probs, noise_prob: all audio since the last reset (zero "
            "states); phase_probs: this chunk's steps"
        ),
        "respira.limits": json.dumps(limits, sort_keys=True),
        "respira.max_stream_s": str(limits["max_stream_s"]),
        # the package cannot hold its own hash; the weights file's can (and an .mlmodelc keeps that file)
        "respira.weights_sha256": _weights_sha256(mlmodel),
    }


def _weights_sha256(mlmodel) -> str:
    path = Path(mlmodel.weights_dir) / "weight.bin"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
