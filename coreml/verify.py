"""Check a saved package against torch, chunk by chunk: ``python -m coreml verify PKG --audio FILE...``.

Each file is streamed as one stream, without resets, through:

- the torch streaming wrapper (:class:`coreml.streaming.ExplicitStreamer`, the very module that was
  traced into the package) in float32: the reference;
- the numpy interpreter of the saved package (:mod:`coreml.interpreter`): what the bytes on disk compute;
- on macOS, Core ML's own ``MLModel.predict`` on the same chunks (prediction exists only there).

After EVERY chunk, EVERY output and EVERY state the package declares is compared with the reference.
The names come from the package (its outputs; its ``NAME_in`` / ``NAME_out`` pairs or its ``MLState``
states) and from :mod:`coreml.streaming`, so outputs and states added to the graph are compared without
any change here; a package whose names differ from the wrapper's is refused. Each file is streamed for
at least :data:`MIN_STREAM_S` seconds: a shorter one is looped (played again whole) and the report says
so. A trailing part shorter than one chunk is not streamed: the app waits for a full chunk.

Two comparisons, both after every chunk:

- ``step``: before each chunk torch is given the package's current state, and both make one call. The
  difference is one call's float32 round-off, so the bounds are tight and a 1 % change to any single
  weight tensor of the package fails (``tests/coreml/test_verify.py`` perturbs each in turn).
- ``run``: torch and the package each stream on their own from zeros. Round-off accumulates here (the
  LSTM cell state integrates its input for minutes, reaching |c| ~ 1000 on noise-gated audio) and a
  recurrent state can amplify it, by an amount that depends on the model and the audio, so run mode is
  judged by PSNR >= :data:`RUN_MIN_PSNR_DB` dB for every package (see there for the measurement); it
  shows that nothing drifts grossly or is wired wrongly between calls.

Pass rules:

- step mode, float32 package with float32 states (the explicit-state variant): per output and state,
  the worst element of the worst chunk, and the median over the chunks of each chunk's worst element,
  stay within the bounds of :data:`TOLERANCES`: 10x what was measured with the shipped model on real
  and synthetic audio (the table says what). Streams shorter than :data:`MIN_CHUNKS` chunks are
  refused (the median needs them).
- step mode, a float16 package, or any package whose states are stored in fp16 (Core ML ``MLState``s
  are): per output and state, PSNR >= :data:`MIN_PSNR_DB` dB, PSNR = 10 log10(peak^2 / MSE) over all
  chunks, peak = the largest |reference| value (1 for probabilities). For fp16 states the reference
  rounds its states to fp16 after each call exactly as Core ML stores them, so a counter that stops in
  fp16 (see the package's ``respira.limits``) stops in the reference too. PSNR >= 35 dB is an error of
  about 1.8 % of the peak: it cannot see a 1 % weight change, which is why the float32 package is the
  one that proves the weights.

Core ML on macOS runs with ``ComputeUnit.CPU_ONLY`` for float32 packages (the bounds are CPU float32
figures; the GPU and Neural Engine compute in fp16) and ``ALL`` otherwise, in both modes, judged by the
same rules; a mismatch fails verify. Core ML's own round-off against the interpreter's is not measured
(no Mac here).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coreml import streaming
from coreml.interpreter import InterpretedModel, load_package
from training.audio import load_audio
from training.checkpoint import load_checkpoint
from training.estimator import DEFAULT_ESTIMATOR, EstimatorConfig
from training.frontend import DEFAULT_FRONTEND, SAMPLE_RATE_HZ, check_frontend
from training.models import RRModel

MIN_STREAM_S = 60.0
MIN_PSNR_DB = 35.0
# Run mode (each side streams on its own from zeros) is judged by PSNR, for every package: a recurrent
# state amplifies float32 round-off in ways that depend on the model and the audio, so no bound
# measured on one model holds for the next. Measured: the shipped model retrained with a cosine decay
# (same code, other weights) streamed 60 s of white noise with its torch and interpreter runs drifting
# apart from chunk 136 on (lstm_h off by 0.36, rr_bpm by 0.57 breaths/min; PSNR 31.5 dB), while every
# step-mode value stayed within 4.6e-4 of torch. Step mode, with the tight bounds of TOLERANCES, is
# what proves the weights and the state updates (it compares the states after every call too); run mode
# catches gross drift between calls: 20 dB is an RMS error of 10 % of the peak.
RUN_MIN_PSNR_DB = 20.0


class VerifyError(ValueError):
    """The package and the checkpoint or audio cannot be compared (message says why)."""


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Largest ``|package - torch|`` allowed for one output or state of a float32 package, and why.

    Two comparisons, two bounds. ``step``: the package and torch start each chunk from the same state
    (the package's own), so the difference is one call's float32 round-off and the bound is tight.
    ``run`` mode is judged by :data:`RUN_MIN_PSNR_DB` instead (see there); the ``measured`` text keeps
    what run mode gave with the shipped model, for information.

    The step bounds are two: the worst element of the worst chunk, and the median over the chunks of
    each chunk's worst element. Float32 parity noise is spiky: a frame that is loud in one
    band and 60-80 dB quieter in others (the first chunk, whose frames overlap the zero tail; a noise
    gate opening; a band-limited recording) passes the DFT's round-off through ``log(energy + 1e-6)``
    into that call's output, and such spikes set the max bound. In step mode most chunks agree to a
    few float32 ulps (rr_bpm is bit-identical in most), so the median bound is tight, and a changed
    weight, which shifts every chunk, fails it even where it stays under the spikes.
    """

    step_abs: float  # max |error| of any element after any chunk, step mode
    step_median: float  # median over the chunks of each chunk's max |error|, step mode
    measured: str  # what was measured, with the shipped model, that the bounds sit above
    # peak for PSNR (None: the largest |reference| value): the largest value an output can take, so a
    # stream in which the reference never answers a rate still has a scale (60 breaths/min, 1, code 3)
    psnr_peak: float | None = None


# Measured 2026-11-28 (interpreter against torch, the shipped tclstm32: frame_stride 5, running norm;
# explicit float32 package of interface version 3 with the rolling estimator, 1600-sample chunks), each
# file streamed 60 s from zeros: 4 RRuJO recordings (rrinervas 8 and 18 breaths/min, thinklabs 10 and
# 18; stethoscopes, 4.5 and 8 kHz resampled to 16 kHz: the bands above their Nyquist sit near the log
# floor), 3 synthetic recordings (training.synth: no breathing, stages 1 and 2), white noise, the
# exercise bike, and breathing behind a noise gate (digital silence between breaths, 57 % of samples),
# which gives the largest errors of the model's states. Bounds: 10x the largest max / median seen
# (medians over every prefix of >= MIN_CHUNKS chunks), rounded up to 1-2-5; exact values (counts, the
# audio copies, the codes) get 0. rr_reason and breathing are codes: in step mode the package and torch
# agreed on every chunk of every file once the estimator stopped counting near-empty bands
# (training.periodicity.FLAT_BAND_STD; before, the two disagreed on 4.5 kHz recordings). Each row: step
# max, step median, then what was measured. To measure again (a new graph, output or state):
# `python -m coreml verify PKG --json --audio FILES...` prints max_abs_error and median_error per name
# and mode for each file; take 10x the largest, rounded up to 1-2-5.
TOLERANCES: dict[str, Tolerance] = {
    "rr_bpm": Tolerance(5e-03, 2e-03, "step max 3.0e-04 (rrinervas), median 1.2e-04; scale 60", 60.0),
    "rr_confidence": Tolerance(
        2e-02,
        2e-06,
        "step max 1.1e-06, median 1.8e-07; scale 1 (the small random model of tests/coreml/test_export.py: "
        "1.4e-03 in one chunk of 130, a peak whose height the parabola refines from a near-flat top)",
        1.0,
    ),
    "rr_reason": Tolerance(0e00, 0e00, "step max 0, median 0 (a code)", 3.0),
    "breathing": Tolerance(0e00, 0e00, "step max 0, median 0 (a code)", 3.0),
    "noise_prob": Tolerance(1e-02, 1e-06, "step max 8.5e-04 (gated), median 6.0e-08; scale 0.899", 1.0),
    "respiration_count": Tolerance(5e-05, 2e-06, "step max 3.8e-06, median 1.6e-07; scale 35.9"),
    "phase_probs": Tolerance(2e-02, 2e-06, "step max 1.5e-03 (gated), median 7.5e-08; scale 0.991", 1.0),
    "audio_tail": Tolerance(0e00, 0e00, "step max 0, median 0 (a copy of the audio)"),
    "conv_context": Tolerance(1e-03, 2e-04, "step max 6.2e-05, median 3.4e-06; scale 4"),
    "lstm_h": Tolerance(5e-02, 2e-05, "step max 2.6e-03 (gated), median 3.0e-07; scale 1"),
    "lstm_c": Tolerance(5e-02, 2e-04, "step max 3.8e-03 (gated), median 7.6e-06; scale 797"),
    "norm_mean": Tolerance(2e-03, 1e-05, "step max 1.4e-04, median 9.5e-07; scale 13.8"),
    "norm_count": Tolerance(0e00, 0e00, "step max 0, median 0 (a count)"),
    "dsp_tail": Tolerance(0e00, 0e00, "step max 0, median 0 (a copy of the audio)"),
    "phase_window": Tolerance(2e-02, 2e-06, "step max 1.5e-03 (gated), median 1.2e-07; scale 0.999"),
    "lstm_window": Tolerance(5e-02, 5e-06, "step max 2.6e-03 (gated), median 3.6e-07; scale 1"),
    "band_window": Tolerance(
        1e-03, 1e-04, "step max 8.2e-05, median 6.7e-06 (ln power, above the floor); scale 20"
    ),
    "chunks_seen": Tolerance(0e00, 0e00, "step max 0, median 0 (a count)"),
    "count_whole": Tolerance(5e-05, 2e-06, "compared as count_whole + count_fraction: see respiration_count"),
    "count_fraction": Tolerance(
        5e-05, 2e-06, "compared as count_whole + count_fraction: see respiration_count"
    ),
}
# a residual state is compared joined with its value (SPLIT_PAIRS): the bounds of the state it completes
TOLERANCES.update(
    {
        f"{name}_residual": dataclasses.replace(
            TOLERANCES[name], measured=f"compared as {name} + its residual"
        )
        for name in streaming.SPLIT_STATES
    }
)
# An output or state not in the table yet (the graph grew): compared at these bounds, and the report
# flags it as "unmeasured" so that someone measures it and adds a row.
DEFAULT_TOLERANCE = Tolerance(1e-4, 1e-6, "not measured: default for a name missing from the table")
# The median bounds are measured as the largest median over prefixes of at least this many chunks of
# each stream, so they hold for any stream at least this long; shorter ones are refused.
MIN_CHUNKS = 30


# States holding ln(power) per band: a band the recording has no energy in (above a stethoscope's
# Nyquist rate) holds ln of float32 round-off, which differs between any two computations by whole
# nepers and means nothing (the estimator floors every band at 1e-6 of the loudest, 13.8 nepers down).
# They are compared with every value below LOG_POWER_FLOOR_NEPERS under the chunk's largest clamped
# there, in both the reference and the package, so what is compared is what the estimator can see.
LOG_POWER_STATES = frozenset({"band_window", "band_window_residual"})
LOG_POWER_FLOOR_NEPERS = 20.0


def _above_floor(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axes = tuple(range(1, reference.ndim))
    floor = reference.max(axis=axes, keepdims=True) - LOG_POWER_FLOOR_NEPERS
    return np.maximum(reference, floor), np.maximum(test, floor)


# The breath count is kept as whole cycles plus a fraction (so an fp16 state counts exactly): when one
# side carries a cycle a call before the other, the parts differ by 1 while the count agrees. Both parts
# are compared as the count they make together.
# The same for the recurrent states kept as an fp16-rounded value plus its residual
# (coreml.streaming.SPLIT_STATES): when the two sides round to neighbouring fp16 values, the parts differ
# by an fp16 step and the state they make agrees.
SPLIT_PAIRS = (("count_whole", "count_fraction"), *((n, f"{n}_residual") for n in streaming.SPLIT_STATES))


def _joined_counts(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(values)
    for pair in SPLIT_PAIRS:
        first, second = (values.get(n) for n in pair)
        if first is not None and second is not None and np.shape(first) == np.shape(second):
            total = np.asarray(first, np.float64) + np.asarray(second, np.float64)
            out.update({n: total for n in pair})
    return out


def tolerance(name: str) -> Tolerance:
    return TOLERANCES.get(name, DEFAULT_TOLERANCE)


def psnr_db(reference: np.ndarray, test: np.ndarray, peak: float | None = None) -> float:
    """10 log10(peak^2 / MSE); peak = max |reference| unless given. inf when equal."""
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    mse = float(np.mean((reference - test) ** 2)) if reference.size else 0.0
    peak = float(np.max(np.abs(reference), initial=0.0)) if peak is None else peak
    if mse == 0:
        return math.inf
    if not math.isfinite(mse) or peak == 0:
        return -math.inf
    return 10.0 * math.log10(peak**2 / mse)


# -- the three streamers ---------------------------------------------------------------------------------


def _base(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.endswith(suffix) else name


class PackageStreamer:
    """Streams chunks through a package, explicit or stateful, and reads back every state.

    ``model`` is anything with Core ML's calling convention: ``predict(inputs, state=None)`` and, for
    stateful packages, ``make_state()`` whose result has ``read_state(name)``. That is both our
    :class:`~coreml.interpreter.InterpretedModel` and coremltools' ``MLModel`` on macOS. The package's
    own description (``description``, an :class:`InterpretedModel`) says which inputs are states: every
    input but ``audio`` ends in ``_in`` and is fed the matching ``*_out`` output of the previous call.
    """

    def __init__(self, description: InterpretedModel, model: Any | None = None) -> None:
        self.package = description
        self.model = model if model is not None else description
        self.stateful = bool(description.states)
        self.chunk_samples = int(description.user_defined_metadata.get("respira.chunk_samples", 1600))
        self.state_inputs = [f for f in description.inputs if f.name != "audio"]
        self.state_names = (
            [f.name for f in description.states]
            if self.stateful
            else [_base(f.name, "_in") for f in self.state_inputs]
        )
        output_names = [f.name for f in description.outputs]
        self.output_names = [
            n for n in output_names if not (n.endswith("_out") and n[:-4] in self.state_names)
        ]
        if not self.stateful:
            missing = [f"{n}_out" for n in self.state_names if f"{n}_out" not in output_names]
            odd = [f.name for f in self.state_inputs if not f.name.endswith("_in")]
            if missing or odd:
                raise VerifyError(
                    f"{description.package.path}: state inputs must be NAME_in with an output NAME_out; "
                    f"missing outputs {missing}, inputs not ending in _in {odd}"
                )
        self.reset()

    def reset(self) -> None:
        """Zero states: a new stream."""
        if self.stateful:
            self.state = self.model.make_state()
        else:
            self.inputs = {f.name: np.zeros(f.shape, np.float32) for f in self.state_inputs}
        self.last: dict[str, np.ndarray] = {}

    def push(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        """One call: every output (``*_out`` included for explicit packages), by name."""
        audio = np.asarray(chunk, np.float32).reshape(1, -1)
        if self.stateful:
            out = self.model.predict({"audio": audio}, state=self.state)
        else:
            out = self.model.predict({"audio": audio, **self.inputs})
            self.inputs = {f"{n}_in": np.asarray(out[f"{n}_out"], np.float32) for n in self.state_names}
        self.last = {k: np.asarray(v) for k, v in out.items()}
        return out

    def outputs(self) -> dict[str, np.ndarray]:
        """The last call's outputs, states excluded."""
        return {n: np.asarray(self.last[n]) for n in self.output_names}

    def states(self) -> dict[str, np.ndarray]:
        """Every state now (after the last call; zeros before the first), by state name (``lstm_h``,
        not ``lstm_h_out``)."""
        if self.stateful:
            return {n: np.array(self.state.read_state(n)) for n in self.state_names}
        return {n: np.array(self.inputs[f"{n}_in"]) for n in self.state_names}

    def set_states(self, states: Mapping[str, np.ndarray]) -> None:
        """Start the next call from ``states`` (by state name)."""
        if self.stateful:
            for name in self.state_names:
                self.state.write_state(name, np.asarray(states[name]))
        else:
            self.inputs = {f"{n}_in": np.asarray(states[n], np.float32) for n in self.state_names}


class TorchStreamer:
    """The reference: the torch streaming wrapper run chunk by chunk in float32, its states fed back.

    The wrapper runs traced (``torch.jit.trace``, the graph the converter reads): the same torch ops
    with the same results as running it eagerly (bit for bit, measured), at about two thirds of the
    time per chunk, since a chunk is some 900 small ops whose Python dispatch dominates.

    ``state_dtypes`` (name -> numpy dtype) rounds a state between calls as the package stores it (fp16
    for Core ML states), so the reference sees the same storage as the package.
    """

    def __init__(
        self,
        model: RRModel,
        state_dtypes: Mapping[str, Any] | None = None,
        chunk_samples: int = 1600,
        estimator: EstimatorConfig = DEFAULT_ESTIMATOR,
    ) -> None:
        self.shapes = streaming.state_shapes(model, chunk_samples, estimator.window_s)
        self.wrapper = streaming.traced_streamer(model, chunk_samples, estimator)
        self.output_names = list(streaming.OUTPUT_NAMES)
        self.state_names = list(streaming.STATE_NAMES)
        self.state_dtypes = dict(state_dtypes or {})
        self.reset()

    def reset(self) -> None:
        self._states = [torch.zeros(self.shapes[n]) for n in self.state_names]

    @torch.no_grad()
    def step(
        self, chunk: np.ndarray, states: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """One call from ``states`` (by name): (outputs, new states), new states stored as the package
        stores them. Keeps nothing."""
        audio = torch.from_numpy(np.asarray(chunk, np.float32).reshape(1, -1))
        inputs = [
            torch.from_numpy(np.asarray(states[n], np.float32).reshape(self.shapes[n]))
            for n in self.state_names
        ]
        result = self.wrapper(audio, *inputs)
        n_out = len(self.output_names)
        outputs = {n: t.numpy().copy() for n, t in zip(self.output_names, result[:n_out], strict=True)}
        new = {}
        for name, value in zip(self.state_names, result[n_out:], strict=True):
            array = value.numpy().copy()
            if name in self.state_dtypes:
                array = array.astype(self.state_dtypes[name]).astype(np.float32)
            new[name] = array
        return outputs, new

    def push(self, chunk: np.ndarray) -> None:
        self._outputs, states = self.step(chunk, self.states())
        self._states = [torch.from_numpy(states[n]) for n in self.state_names]

    def outputs(self) -> dict[str, np.ndarray]:
        return dict(self._outputs)

    def states(self) -> dict[str, np.ndarray]:
        return {n: s.numpy().copy() for n, s in zip(self.state_names, self._states, strict=True)}


# -- comparing ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Check:
    """One output or state of one stream against the reference, over every chunk."""

    name: str
    kind: str  # "output" or "state"
    mode: str  # "step" (both from the package's state each chunk) or "run" (each streams on its own)
    max_abs_error: float
    rms_error: float  # root mean square of the error over every chunk and element (information)
    median_error: float  # median over the chunks of each chunk's max |error|
    worst_chunk: int  # index of the chunk with the largest error (-1 if none)
    scale: float  # largest |reference| value
    psnr_db: float
    rule: str  # "abs" or "psnr"
    limit: float  # the max |error| tolerance (abs) or the PSNR floor (psnr)
    median_limit: float = math.inf  # the bound on median_error (abs rule)
    unmeasured: bool = False  # abs rule with the default tolerance (name not in TOLERANCES)

    @property
    def passed(self) -> bool:
        if self.rule == "abs":
            return (
                math.isfinite(self.max_abs_error)
                and self.max_abs_error <= self.limit
                and self.median_error <= self.median_limit
            )
        return self.psnr_db >= self.limit


def strict_rule(package: InterpretedModel) -> bool:
    """Absolute float32 tolerances apply to float32 packages whose states are float32 too."""
    meta = package.user_defined_metadata
    fp16_states = any(f.dtype == "fp16" for f in package.states)
    return meta.get("respira.precision", "float32") == "float32" and not fp16_states


def compare(
    reference: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    kinds: Mapping[str, str],
    strict: bool,
    mode: str = "run",
    tolerances: Mapping[str, Tolerance] | None = None,
) -> list[Check]:
    """Per name: values [chunks, ...] from the reference and the package -> one :class:`Check` each.

    Every name in ``reference`` must be in ``got`` with the same shape; a missing or misshapen one is a
    failed check (infinite error), never skipped. ``tolerances`` replaces :data:`TOLERANCES` (the
    vectors carry their own).
    """
    table = TOLERANCES if tolerances is None else tolerances
    reference, got = _joined_counts(reference), _joined_counts(got)
    checks = []
    absolute = strict and mode == "step"  # run mode is judged by PSNR (RUN_MIN_PSNR_DB)
    for name, ref in reference.items():
        ref = np.asarray(ref, np.float64)
        tol = table.get(name, DEFAULT_TOLERANCE)
        test = got.get(name)
        if name in LOG_POWER_STATES and test is not None and np.shape(test) == ref.shape:
            ref, test = _above_floor(ref, np.asarray(test, np.float64))
        if test is None or np.shape(test) != ref.shape:
            error, rms, median, worst, psnr = math.inf, math.inf, math.inf, -1, -math.inf
        else:
            test = np.asarray(test, np.float64)
            diff = np.abs(test - ref).reshape(ref.shape[0], -1) if ref.size else np.zeros((0, 1))
            diff = np.where(np.isnan(diff), np.inf, diff)
            per_chunk = diff.max(axis=1) if diff.size else np.zeros(0)
            error = float(per_chunk.max()) if per_chunk.size else 0.0
            worst = int(per_chunk.argmax()) if per_chunk.size and error > 0 else -1
            rms = float(np.sqrt(np.mean(diff**2))) if diff.size else 0.0
            median = float(np.median(per_chunk)) if per_chunk.size else 0.0
            psnr = psnr_db(ref, test, tol.psnr_peak)
        checks.append(
            Check(
                name=name,
                kind=kinds.get(name, "output"),
                mode=mode,
                max_abs_error=error,
                rms_error=rms,
                median_error=median,
                worst_chunk=worst,
                scale=float(np.max(np.abs(ref), initial=0.0)),
                psnr_db=psnr,
                rule="abs" if absolute else "psnr",
                limit=tol.step_abs if absolute else (MIN_PSNR_DB if mode == "step" else RUN_MIN_PSNR_DB),
                median_limit=tol.step_median if absolute else math.inf,
                unmeasured=absolute and name not in table,
            )
        )
    return checks


def stream_values(streamer: Any, chunks: np.ndarray) -> dict[str, np.ndarray]:
    """Push every chunk; the outputs and states after each, stacked per name: [chunks, ...]."""
    values: dict[str, list[np.ndarray]] = {}
    streamer.reset()
    for chunk in chunks:
        streamer.push(chunk)
        for name, value in {**streamer.outputs(), **streamer.states()}.items():
            values.setdefault(name, []).append(np.array(value, np.float64))
    return {name: np.stack(v) for name, v in values.items()}


def stepwise_values(
    reference: TorchStreamer, streamer: Any, chunks: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Before each chunk, torch takes the package's current state; both make one call. Returns the
    torch and the package values after each chunk, stacked per name: [chunks, ...]."""
    expected: dict[str, list[np.ndarray]] = {}
    got: dict[str, list[np.ndarray]] = {}
    streamer.reset()
    for chunk in chunks:
        outputs, states = reference.step(chunk, streamer.states())
        streamer.push(chunk)
        for name, value in {**outputs, **states}.items():
            expected.setdefault(name, []).append(np.array(value, np.float64))
        for name, value in {**streamer.outputs(), **streamer.states()}.items():
            got.setdefault(name, []).append(np.array(value, np.float64))
    stack = lambda values: {n: np.stack(v) for n, v in values.items()}  # noqa: E731
    return stack(expected), stack(got)


def looped(
    audio: np.ndarray, chunk_samples: int, min_seconds: float, sample_rate: int = SAMPLE_RATE_HZ
) -> tuple[np.ndarray, int]:
    """``audio`` repeated whole until it lasts ``min_seconds``, cut to whole chunks: [chunks, chunk].

    Returns the chunks and how many times the file was played (1: not looped).
    """
    audio = np.asarray(audio, np.float32)
    if len(audio) == 0:
        raise VerifyError("empty audio")
    need = math.ceil(min_seconds * sample_rate / chunk_samples) * chunk_samples
    if len(audio) >= need:
        return audio[: len(audio) // chunk_samples * chunk_samples].reshape(-1, chunk_samples), 1
    plays = math.ceil(need / len(audio))
    whole = np.tile(audio, plays)
    usable = need
    return whole[:usable].reshape(-1, chunk_samples), plays


# -- verify ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FileResult:
    path: str
    seconds_streamed: float
    chunks: int
    plays: int  # how many times the file was played to reach the minimum length (1: not looped)
    checks: list[Check]  # interpreter against torch
    coreml_checks: list[Check] | None = None  # Core ML against torch (macOS only)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and all(c.passed for c in self.coreml_checks or [])

    def failures(self) -> list[str]:
        bad = [f"interpreter {c.name} ({c.mode})" for c in self.checks if not c.passed]
        return bad + [f"coreml {c.name} ({c.mode})" for c in self.coreml_checks or [] if not c.passed]


def coreml_model(package_path: Path, strict: bool) -> Any | None:
    """coremltools' ``MLModel`` on macOS (float32 packages on the CPU, whose float32 arithmetic the
    tolerances describe; others on all units); ``None`` elsewhere, where Core ML cannot predict."""
    if platform.system() != "Darwin":
        return None
    import coremltools as ct

    units = ct.ComputeUnit.CPU_ONLY if strict else ct.ComputeUnit.ALL
    return ct.models.MLModel(str(package_path), compute_units=units)


def exported_from(package_path: Path, meta: Mapping[str, str]) -> Path | None:
    """The checkpoint recorded at export (``respira.checkpoint_path``, relative to the package's folder)
    when it is still there; ``None`` (the shipped model) otherwise."""
    recorded = meta.get("respira.checkpoint_path")
    if recorded and (package_path.parent / recorded).is_file():
        return package_path.parent / recorded
    return None


@dataclasses.dataclass
class Session:
    """A package loaded with its matching torch model, ready to verify or write vectors from."""

    path: Path
    package: InterpretedModel
    model: RRModel
    checkpoint_meta: dict
    strict: bool

    @property
    def chunk_samples(self) -> int:
        return int(self.package.user_defined_metadata.get("respira.chunk_samples", 1600))

    def reference(self) -> TorchStreamer:
        dtypes = {f.name: np.float16 for f in self.package.states if f.dtype == "fp16"}
        return TorchStreamer(self.model, dtypes, self.chunk_samples, self.estimator)

    @property
    def estimator(self) -> EstimatorConfig:
        """The estimator settings the package was exported with (its metadata), window included."""
        return EstimatorConfig.from_dict(
            json.loads(self.package.user_defined_metadata.get("respira.estimator", "{}"))
        )

    def kinds(self) -> dict[str, str]:
        streamer = PackageStreamer(self.package)
        return {**{n: "output" for n in streamer.output_names}, **{n: "state" for n in streamer.state_names}}


def open_session(package_path: Path | str, checkpoint: Path | str | None = None) -> Session:
    """Load the package and the checkpoint it was exported from; refuse a mismatch of either."""
    package_path = Path(package_path)
    package = load_package(package_path)
    meta = package.user_defined_metadata
    if "respira.frontend" not in meta:
        raise VerifyError(f"{package_path}: not a Respira package (no respira.frontend metadata)")
    check_frontend(DEFAULT_FRONTEND, json.loads(meta["respira.frontend"]), f"package {package_path}")
    model, ckpt_meta = load_checkpoint(
        checkpoint if checkpoint is not None else exported_from(package_path, meta)
    )
    if meta.get("respira.checkpoint_sha256") != ckpt_meta["sha256"]:
        raise VerifyError(
            f"{package_path} was exported from checkpoint sha256 {meta.get('respira.checkpoint_sha256')}, "
            f"but {ckpt_meta['path']} has sha256 {ckpt_meta['sha256']}: pass the matching --checkpoint"
        )
    session = Session(package_path, package, model, ckpt_meta, strict_rule(package))
    streamer, reference = PackageStreamer(package), session.reference()
    if set(streamer.output_names) != set(reference.output_names) or set(streamer.state_names) != set(
        reference.state_names
    ):
        raise VerifyError(
            f"{package_path} declares outputs {streamer.output_names} and states {streamer.state_names}; "
            f"this code's streaming wrapper has {reference.output_names} and {reference.state_names}: "
            "the package comes from another version of the graph"
        )
    return session


def verify_chunks(
    session: Session,
    chunks: np.ndarray,
    coreml: Any | None = None,
    reference_values: Mapping[str, np.ndarray] | None = None,
) -> tuple[list[Check], list[Check] | None]:
    """Interpreter (and ``coreml``, when given) against torch on ``chunks`` [n, chunk_samples], in both
    modes: ``step`` checks first, then ``run``. ``reference_values``: torch's free run, if known."""
    if session.strict and len(chunks) < MIN_CHUNKS:
        raise VerifyError(f"{len(chunks)} chunks: the median bounds need a stream of at least {MIN_CHUNKS}")
    kinds = session.kinds()
    reference = session.reference()
    run_reference = reference_values if reference_values is not None else stream_values(reference, chunks)

    def checks_for(model: Any) -> list[Check]:
        step_ref, step_got = stepwise_values(reference, PackageStreamer(session.package, model), chunks)
        run_got = stream_values(PackageStreamer(session.package, model), chunks)
        return compare(step_ref, step_got, kinds, session.strict, "step") + compare(
            run_reference, run_got, kinds, session.strict, "run"
        )

    return checks_for(session.package), (checks_for(coreml) if coreml is not None else None)


def verify(
    package_path: Path | str,
    audio_files: Sequence[Path | str],
    checkpoint: Path | str | None = None,
    min_seconds: float = MIN_STREAM_S,
    coreml_loader: Callable[[Path, bool], Any | None] = coreml_model,
) -> tuple[list[FileResult], dict]:
    """Stream each file (looped to ``min_seconds``) and compare every output and state, every chunk."""
    session = open_session(package_path, checkpoint)
    coreml = coreml_loader(session.path, session.strict)
    results = []
    for path in audio_files:
        chunks, plays = looped(load_audio(path, SAMPLE_RATE_HZ), session.chunk_samples, min_seconds)
        checks, coreml_checks = verify_chunks(session, chunks, coreml)
        results.append(
            FileResult(
                path=str(path),
                seconds_streamed=chunks.size / DEFAULT_FRONTEND.sample_rate,
                chunks=len(chunks),
                plays=plays,
                checks=checks,
                coreml_checks=coreml_checks,
            )
        )
    meta = session.package.user_defined_metadata
    return results, {
        "variant": meta.get("respira.variant"),
        "precision": meta.get("respira.precision"),
        "strict": session.strict,
        "coreml_ran": coreml is not None,
    }


def format_table(results: list[FileResult], info: dict) -> str:
    """The report: one block per file, one row per output or state and comparison mode."""
    step_rule = (
        "max |package - torch| <= the measured float32 bound of each output and state"
        if info["strict"]
        else f"PSNR >= {MIN_PSNR_DB:g} dB for each output and state"
    )
    rule = f"step: {step_rule}; run: PSNR >= {RUN_MIN_PSNR_DB:g} dB"
    lines = [
        f"package: {info['variant']} / {info['precision']}; pass rule: {rule}",
        "modes: step = torch starts each chunk from the package's state; run = each streams on its own",
    ]
    for r in results:
        looped_note = f", the file looped {r.plays}x to reach the minimum" if r.plays > 1 else ""
        lines += [
            "",
            f"{r.path}: {r.chunks} chunks, {r.seconds_streamed:.1f} s streamed as one stream{looped_note}",
            f"  {'name':<18} {'kind':<6} {'mode':<4} {'max|err|':>9} {'limit':>10} {'median':>9} "
            f"{'limit':>9} {'scale':>9} {'PSNR dB':>8} {'worst':>6}  result",
        ]
        sources = [("interpreter", r.checks)] + ([("Core ML", r.coreml_checks)] if r.coreml_checks else [])
        for source, checks in sources:
            if len(sources) > 1:
                lines.append(f"  -- {source}")
            for c in checks:
                limit = f"{c.limit:.1e}" if c.rule == "abs" else f">={c.limit:g}dB"
                median_limit = f"{c.median_limit:.1e}" if c.rule == "abs" else ""
                flag = ("ok" if c.passed else "FAIL") + (" (unmeasured tolerance)" if c.unmeasured else "")
                lines.append(
                    f"  {c.name:<18} {c.kind:<6} {c.mode:<4} {c.max_abs_error:>9.2e} {limit:>10} "
                    f"{c.median_error:>9.2e} {median_limit:>9} {c.scale:>9.3g} {c.psnr_db:>8.1f} "
                    f"{c.worst_chunk:>6}  {flag}"
                )
    lines.append("")
    coreml = (
        "ran (macOS), compared as above" if info["coreml_ran"] else "skipped: prediction exists only on macOS"
    )
    lines.append("Core ML MLModel.predict: " + coreml)
    return "\n".join(lines)
