"""Export a checkpoint to a streaming ``.mlpackage``.

``python -m coreml export [--checkpoint CKPT] --out PATH.mlpackage [--variant explicit|stateful]
[--chunk-samples 1600] [--precision float32|float16]``

Path: ``torch.jit.trace`` of a float32 streaming wrapper (:mod:`coreml.streaming`), then
``ct.convert(convert_to="mlprogram")`` (``torch.export``, ``LSTMCell`` and ``jit.script`` fail with
coremltools 9). The front-end (framing, Hann, the DFT as matrix products, power, mel, log) always computes in
float32, also in a float16 package: quiet breath energies underflow in fp16.

Reproducibility: everything in the package derives from the checkpoint and the arguments, except the
conversion date in ``user_defined_metadata["respira.converted_at"]`` (set ``SOURCE_DATE_EPOCH`` to pin
it). The package's ``Manifest.json`` gets identifiers derived from the checkpoint hash instead of
random UUIDs, so two exports of one checkpoint are byte-identical apart from that date.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coreml.streaming import (
    BREATHING_CLASSES,
    OUTPUT_NAMES,
    REASONS,
    SPLIT_STATES,
    STATE_NAMES,
    ExplicitStreamer,
    Geometry,
    StatefulStreamer,
    check_chunk_samples,
    state_shapes,
)
from training import __version__
from training.checkpoint import load_checkpoint
from training.dsp_baseline import DEFAULT_CONFIG as DSP_CONFIG
from training.estimator import MAX_RATE_BPM, EstimatorConfig
from training.frontend import DEFAULT_FRONTEND, FrontEndConfig, check_frontend
from training.models import RRModel

VARIANTS = ("explicit", "stateful")
PRECISIONS = ("float32", "float16")


class ExportError(ValueError):
    """The export cannot be made as asked (message says why)."""


# The op types that compute in fp16 in a float16 package, where they are the model's: the layers with
# weights and their activations. The running normalisation stays float32: its mean of ln energies near
# -10 moves by a fraction of fp16's spacing there per frame, and in fp16 it drifted 0.07 in 11 chunks,
# which the LSTM amplified to 0.2 in its hidden state (measured on a RRuJO recording).
FP16_OP_TYPES = frozenset({"conv", "linear", "lstm", "matmul", "relu", "softmax"})


def _model_op_selector() -> Callable[[Any], bool]:
    """fp16 op selector: only the model itself (normalisation, convolution, LSTM, phase head) computes
    in fp16. The front-end (every op up to the mel ``log``: quiet breath energies underflow in fp16)
    and the rolling estimator (sums of hundreds of products, a period picked by argmax) stay float32.

    The model's ops are the ancestors of the ``phase_probs`` output that are not ancestors of the
    front-end's ``log``; everything else in the graph is the front-end, the DSP or the estimator.
    """
    fp16_ops: set[int] | None = None

    def ancestors(op: Any) -> set[int]:
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

    def selector(op: Any) -> bool:
        nonlocal fp16_ops
        if fp16_ops is None:
            block = op.enclosing_block
            phase = [v.op for v in block.outputs if v.name == "phase_probs" and v.op is not None]
            if not phase:
                raise ExportError("no phase_probs output to find the model's ops by")
            model_side = ancestors(phase[0])
            ops = {id(o): o for o in block.operations}
            logs = [ops[i] for i in model_side if i in ops and ops[i].op_type == "log"]
            front_end = set().union(*(ancestors(o) for o in logs)) if logs else set()
            fp16_ops = model_side - front_end
        return id(op) in fp16_ops and op.op_type in FP16_OP_TYPES

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
    window_s: float | None = None,
) -> Path:
    """Convert ``checkpoint`` (default: the shipped model) and save it to ``out`` (.mlpackage); the rolling
    window is ``window_s`` seconds (default: the checkpoint's calibrated estimator's, 30 s)."""
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
    estimator = EstimatorConfig.from_dict(meta.get("estimator") or {})
    if window_s is not None:
        try:
            estimator = dataclasses.replace(estimator, window_s=float(window_s))
        except ValueError as exc:
            raise ExportError(str(exc)) from exc
    shapes = state_shapes(model, chunk_samples, estimator.window_s)

    audio_type = ct.TensorType(name="audio", shape=(1, chunk_samples), dtype=np.float32)
    example_audio = torch.zeros(1, chunk_samples)
    common = {
        "convert_to": "mlprogram",
        "compute_precision": (
            ct.precision.FLOAT32
            if precision == "float32"
            else ct.transform.FP16ComputePrecision(op_selector=_model_op_selector())
        ),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if variant == "explicit":
            wrapper: torch.nn.Module = ExplicitStreamer(model, chunk_samples, estimator).eval()
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
            wrapper = StatefulStreamer(model, chunk_samples, estimator).eval()
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
        f"{meta['config']['units']}) and the rolling-window estimator, streamed in {chunk_samples}-sample "
        f"chunks of 16 kHz mono audio; every call answers for the last {estimator.window_s:g} s. "
        "Fitness use, not a medical device."
    )
    described = describe(mlmodel, model, variant, precision, chunk_samples, estimator)
    metadata = {
        "respira.frontend": json.dumps(DEFAULT_FRONTEND.to_dict(), sort_keys=True),
        "respira.chunk_samples": str(chunk_samples),
        "respira.variant": variant,
        "respira.precision": precision,
        "respira.states": json.dumps({n: list(s) for n, s in shapes.items()}),
        "respira.state_storage": "float32 inputs/outputs"
        if variant == "explicit"
        else "Core ML states, fp16",
        "respira.heavy_threshold_bpm": str(meta["config"].get("heavy_threshold_bpm")),
        # the estimator's settings calibrated for this checkpoint: how the app turns phase_probs into a
        # rolling rate, "no breathing" or "too noisy" (training/estimator.py)
        "respira.estimator": json.dumps(estimator.to_dict(), sort_keys=True),
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
# frame-level breath output). 3: the rolling-window estimator in the graph (rr_bpm is the window's rate;
# + rr_confidence, rr_reason, breathing; noise_prob is the window's; respiration_count adds up the
# rolling rate; breath_probs, pool_mean and pool_count are gone; the window's ring buffers are states).
INTERFACE_VERSION = "3"


def feature_descriptions(
    model: RRModel, chunk_samples: int, estimator: EstimatorConfig, cfg: FrontEndConfig = DEFAULT_FRONTEND
) -> dict[str, tuple[str, str]]:
    """Unit and description of every output and state of the streaming wrapper, by name.

    Why a function of the model: step and frame lengths, counts per chunk and band counts are the
    model's (``frame_stride`` 5 makes an LSTM step 50 ms), and a description that states a number the
    model does not use (the old "10 ms frames" of ``pool_count``) is worse than none.
    """
    g = Geometry(model, chunk_samples, estimator.window_s, cfg)
    hop_ms = 1000.0 * cfg.hop_length / cfg.sample_rate
    step_ms = hop_ms * model.frame_stride
    frames = chunk_samples // cfg.hop_length
    window = f"the last {estimator.window_s:g} s (all audio since the reset while shorter)"
    warmup = round(1.0 / model.norm_alpha)
    reasons = ", ".join(f"{i} {name}" for i, name in enumerate(REASONS))
    classes = ", ".join(f"{i} {name}" for i, name in enumerate(BREATHING_CLASSES))
    table = {
        "rr_bpm": (
            "breaths/min",
            f"respiratory rate of {window}; 0 when there is none (rr_reason says why)",
        ),
        "rr_confidence": (
            "0-1",
            "how periodic the window's breathing is, scaled by how much of it was heard",
        ),
        "rr_reason": (
            "code",
            f"why rr_bpm is or is not a rate: {reasons} (warming_up: under 4 s of audio since the reset)",
        ),
        "breathing": ("code", f"{classes} (unknown: too noisy to tell, or warming up)"),
        "noise_prob": ("probability", f"P(the audio of {window} is noisy), the model's noise head"),
        "respiration_count": (
            "breath cycles",
            "breath cycles since the reset: the rolling rate added up over the chunks that had one",
        ),
        "phase_probs": (
            "probability",
            f"the chunk's frame-level breath output: P(inhale), P(exhale), P(other) at each of its "
            f"{g.steps_per_chunk} LSTM steps ({step_ms:g} ms each) [1, steps, 3]; each row sums to 1",
        ),
        "audio_tail": (
            "PCM sample",
            f"last {g.tail_samples} samples ({1000 * g.tail_samples / cfg.sample_rate:g} ms) of audio, "
            "overlapped by the next chunk's first feature frames",
        ),
        "conv_context": (
            "normalised log-mel",
            f"last {model.conv_kernel - 1} normalised feature frames ({hop_ms:g} ms each), the causal time "
            "convolution's left context [1, bands, frames]",
        ),
        "lstm_h": (
            "unitless",
            f"LSTM hidden state ({model.units} units, in [-1, 1])",
        ),
        "lstm_c": (
            "unitless",
            f"LSTM cell state ({model.units} units, reaches the hundreds)",
        ),
        "norm_mean": (
            "ln energy",
            f"running mean of each of the {model.n_mels} log-mel bands (streaming normalisation, time "
            f"constant {model.running_norm.time_constant_s:g} s)",
        ),
        "norm_count": (
            "feature frames",
            f"feature frames since the reset; one frame = {hop_ms:g} ms, {frames} per chunk; only the first "
            f"{warmup} matter (afterwards the running mean is exponential)",
        ),
        "dsp_tail": (
            "PCM sample",
            f"last {g.dsp_tail} samples of audio, in front of the next chunk for the DSP's "
            f"{1000 * g.dsp_frame / cfg.sample_rate:g} ms frames",
        ),
        "phase_window": (
            "probability",
            f"the window's phase signal P(inhale) - P(exhale) (row 0) and activity P(inhale) + P(exhale) "
            f"(row 1) at each of its {g.window_steps} LSTM steps, oldest first [1, 2, steps]",
        ),
        "lstm_window": (
            "unitless",
            f"the window's LSTM outputs ({model.units} units x {g.window_steps} steps, oldest first), "
            "whose mean the noise head reads",
        ),
        "band_window": (
            "ln power",
            f"the window's DSP band log powers ln(P + 1e-10), {len(DSP_BANDS)} octave bands x "
            f"{g.window_frames} frames every {1000 * g.dsp_hop / cfg.sample_rate:g} ms, oldest first",
        ),
        "chunks_seen": (
            "chunks",
            f"chunks since the reset, stopping at {g.max_chunks} (when the window is full); says how much "
            "of the window buffers holds audio",
        ),
        "count_whole": ("breath cycles", "whole breath cycles of respiration_count"),
        "count_fraction": ("breath cycles", "the fraction of a cycle of respiration_count, in [0, 1)"),
    }
    for name in SPLIT_STATES:  # each measurement is kept as its fp16 rounding plus the rest
        unit, words = table[name]
        table[name] = (unit, f"{words}; rounded to fp16, the rest in {name}_residual")
        table[f"{name}_residual"] = (
            unit,
            f"{name}'s value minus its fp16 rounding: the state is {name} + this",
        )
    return table


DSP_BANDS = tuple(zip(DSP_CONFIG.band_edges_hz[:-1], DSP_CONFIG.band_edges_hz[1:], strict=True))


def stream_limits(
    model: RRModel, chunk_samples: int, precision: str, variant: str, cfg: FrontEndConfig = DEFAULT_FRONTEND
) -> dict:
    """How long one stream may run before a reset, and the float16 limits, for the metadata.

    Nothing in the graph grows with the stream except ``count_whole`` (``chunks_seen`` stops once the
    window is full; ``norm_count`` stops mattering after the running norm's warm-up; the window
    buffers are fixed). A float16 state holds every whole number up to 2048, so the count is exact for
    2048 breath cycles: 34 minutes at the fastest rate the estimator reports (60 breaths/min).
    """
    fp16 = precision == "float16" or variant == "stateful"
    dtype = np.float16 if fp16 else np.float32
    exact_cycles = 2 ** (np.finfo(dtype).nmant + 1)
    max_s = exact_cycles / MAX_RATE_BPM * 60.0
    warmup_s = (1.0 / model.norm_alpha) / model.frames_per_second
    return {
        "state_arithmetic": "float16" if fp16 else "float32",
        "respiration_count_exact_cycles": int(exact_cycles),
        "norm_count_matters_s": round(warmup_s, 1),
        "max_stream_s": round(max_s, 1),
        "notes": (
            "reset (zero states) before max_stream_s of audio: after it respiration_count may stop "
            "counting whole cycles exactly; rr_bpm and the other outputs read only the rolling window and "
            "hold however long the stream runs. "
            + (
                "fp16: integers are exact only up to 2048 and the largest value is 65504; every state that "
                "holds a measurement (the LSTM state, which reaches the hundreds, the running mean, the "
                "window buffers, the audio tails) is kept as two fp16 states, its rounding and the rest "
                "(NAME_residual), about 22 bits together."
                if fp16
                else "float32: integers are exact up to 2^24."
            )
        ),
    }


def describe(
    mlmodel: Any, model: RRModel, variant: str, precision: str, chunk_samples: int, estimator: EstimatorConfig
) -> dict[str, str]:
    """Write the description of every input, output and state into ``mlmodel``'s spec and return the
    metadata entries that go with them (units, frame/step/chunk, limits, interface version)."""
    table = feature_descriptions(model, chunk_samples, estimator)
    names = [*OUTPUT_NAMES, *STATE_NAMES]
    missing = [n for n in names if n not in table]
    if missing:
        raise ExportError(f"no description for {missing}: add them to coreml.export.feature_descriptions")

    def text(name: str) -> str:
        unit, words = table[name]
        return f"{words} [{unit}]"

    cfg = DEFAULT_FRONTEND
    spec = mlmodel._spec.description  # the states have no public setter; the spec is what is saved
    mlmodel.input_description["audio"] = (
        f"{chunk_samples} samples ({1000 * chunk_samples / cfg.sample_rate:g} ms) of "
        f"{cfg.sample_rate // 1000} kHz mono float32 PCM in [-1, 1]; exactly this many per call"
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
    return {
        "respira.interface_version": INTERFACE_VERSION,
        "respira.units": json.dumps({n: table[n][0] for n in names}, sort_keys=True),
        "respira.sample_rate_hz": str(cfg.sample_rate),
        "respira.chunk_ms": f"{1000 * chunk_samples / cfg.sample_rate:g}",
        "respira.frame_ms": f"{1000 * cfg.hop_length / cfg.sample_rate:g}",
        "respira.step_ms": f"{1000 * cfg.hop_length * model.frame_stride / cfg.sample_rate:g}",
        "respira.window_s": f"{estimator.window_s:g}",
        "respira.window": (
            f"rr_bpm, rr_confidence, rr_reason, breathing, noise_prob: the last {estimator.window_s:g} s "
            "(everything since the reset while shorter); respiration_count: since the reset; "
            "phase_probs: this chunk's steps"
        ),
        "respira.rr_reasons": json.dumps(list(REASONS)),
        "respira.breathing_classes": json.dumps(list(BREATHING_CLASSES)),
        "respira.limits": json.dumps(limits, sort_keys=True),
        "respira.max_stream_s": str(limits["max_stream_s"]),
        # the package cannot hold its own hash; the weights file's can (and an .mlmodelc keeps that file)
        "respira.weights_sha256": _weights_sha256(mlmodel),
    }


def _weights_sha256(mlmodel: Any) -> str:
    path = Path(mlmodel.weights_dir) / "weight.bin"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
