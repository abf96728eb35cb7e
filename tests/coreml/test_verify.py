"""``coreml verify`` cannot be fooled: every output and state after every chunk, against torch.

The shipped model is exported once per session (explicit float32 and stateful; about 10 s each) and
cached in :func:`shipped_package`, which ``test_vectors.py`` shares. The weight-perturbation test
multiplies each weight tensor of the saved package by 1.01 in turn (a modified copy of
``weights/weight.bin``, and of the inline constants in ``model.mlmodel``) and asserts that verify
fails for every one; on a short stream, because the measured float32 parity is worst in the first
chunks (see :data:`coreml.verify.TOLERANCES`), so a short stream is the harder test.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from coreml import cli as coreml_cli
from coreml.cli import main as coreml_main
from coreml.export import export_package
from coreml.interpreter import load_package
from coreml.verify import (
    MIN_STREAM_S,
    RUN_MIN_PSNR_DB,
    TOLERANCES,
    Check,
    compare,
    coreml_model,
    looped,
    open_session,
    stream_values,
    verify,
    verify_chunks,
)
from training.checkpoint import DEFAULT_CHECKPOINT

pytestmark = pytest.mark.filterwarnings("ignore")

_PACKAGES: dict[tuple[str, str], Path] = {}
_WORKDIR = tempfile.TemporaryDirectory(prefix="respira-verify-")


def shipped_package(variant: str = "explicit", precision: str = "float32") -> Path:
    """The shipped model exported once per test session (shared with test_vectors.py)."""
    key = (variant, precision)
    if key not in _PACKAGES:
        out = Path(_WORKDIR.name) / f"{variant}-{precision}.mlpackage"
        _PACKAGES[key] = export_package(out, DEFAULT_CHECKPOINT, variant, 1600, precision)
    return _PACKAGES[key]


def breath_like(seconds: float, rate_bpm: float, seed: int, gated: bool = False) -> np.ndarray:
    """Noise bursts at ``rate_bpm`` with a soft envelope, plus a little background.

    ``gated``: digital silence between breaths, as near-field microphones with a noise gate deliver
    (docs/results.md); it puts every band at the front-end's log floor, which matters below.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = np.clip(np.sin(2 * np.pi * rate_bpm / 60 * t), 0, None) ** 2
    audio = 0.1 * envelope * rng.standard_normal(len(t)) + 0.002 * rng.standard_normal(len(t))
    if gated:
        audio[envelope < 0.05] = 0.0
    return audio.astype(np.float32)


@pytest.fixture(scope="module")
def explicit() -> Path:
    return shipped_package("explicit", "float32")


@pytest.fixture(scope="module")
def session(explicit):
    return open_session(explicit, DEFAULT_CHECKPOINT)


@pytest.fixture(scope="module")
def short_stream(session):
    """6 s of breathing and the torch reference after each of its 60 chunks (the rolling estimator
    answers from 4 s on, so its arithmetic is exercised too)."""
    chunks = breath_like(6.0, 18.0, 11).reshape(-1, session.chunk_samples)
    return chunks, stream_values(session.reference(), chunks)


# -- the weight-tensor perturbation ------------------------------------------------------------------------


def _block(spec):
    return next(iter(spec.mlProgram.functions["main"].block_specializations.values()))


def weight_tensors(package: Path, graph_constants: bool = False) -> list[tuple[str, str, int]]:
    """The model's weight tensors in the program: (name, "blob" | "inline", blob offset or op index).

    Every float constant in ``weights/weight.bin`` (the model's parameters, the DFT and mel matrices,
    the log floor), and the small ones kept inline that come from the model (``model_*``: biases of the
    heads, the label statistics). ``graph_constants`` adds the other inline floats, which are constants
    of the algorithm (clip bounds, epsilons, the running norm's rate), not weights."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString((package / "Data/com.apple.CoreML/model.mlmodel").read_bytes())
    found = []
    for index, op in enumerate(_block(spec).operations):
        if op.type != "const":
            continue
        value = op.attributes["val"]
        dtype = value.type.tensorType.dataType
        if dtype not in (10, 11):  # FLOAT16, FLOAT32: weights, not shapes, axes or names
            continue
        name = op.outputs[0].name
        if value.WhichOneof("value") == "blobFileValue":
            found.append((name, "blob", value.blobFileValue.offset))
        elif graph_constants or name.startswith("model_"):
            found.append((name, "inline", index))
    return found


def perturbed_copy(package: Path, dst: Path, where: str, locator: int, factor: float = 1.01) -> Path:
    """A copy of ``package`` with one weight tensor multiplied by ``factor``.

    A blob is rewritten in ``weights/weight.bin`` (record: u32 sentinel, u32 dtype, u64 size, u64 data
    offset; dtype 1 fp16, 2 fp32); an inline constant in the program's protobuf.
    """
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(package, dst)
    if where == "blob":
        weights = dst / "Data/com.apple.CoreML/weights/weight.bin"
        data = bytearray(weights.read_bytes())
        sentinel, code, size, offset, _ = struct.unpack_from("<IIQQQ", data, locator)
        assert sentinel == 0xDEADBEEF
        dtype = {1: "<f2", 2: "<f4"}[code]
        values = np.frombuffer(bytes(data[offset : offset + size]), dtype).astype(np.float64)
        data[offset : offset + size] = (values * factor).astype(dtype).tobytes()
        weights.write_bytes(bytes(data))
        return dst
    from coremltools.proto import Model_pb2

    spec_path = dst / "Data/com.apple.CoreML/model.mlmodel"
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    tensor = _block(spec).operations[locator].attributes["val"].immediateValue.tensor
    field = tensor.WhichOneof("value")
    if field == "floats":
        values = [float(np.float32(v * factor)) for v in tensor.floats.values]
        del tensor.floats.values[:]
        tensor.floats.values.extend(values)
    elif field == "bytes":  # fp16 inline values
        raw = np.frombuffer(tensor.bytes.values, "<f2").astype(np.float64)
        tensor.bytes.values = (raw * factor).astype("<f2").tobytes()
    else:
        raise AssertionError(f"inline constant stored as {field}")
    spec_path.write_bytes(spec.SerializeToString())
    return dst


def _verify_copy(session, copy: Path, chunks, reference, package=None) -> list[Check]:
    package = package if package is not None else load_package(copy)
    perturbed = dataclasses.replace(session, path=copy, package=package)
    return verify_chunks(perturbed, chunks, reference_values=reference)[0]


def _scale_invariant_constants(package: Path) -> dict[str, str]:
    """The constants of the estimator that a uniform scale cannot change any output or state of, by
    construction, with why: found by value, not by name (the converter names them)."""
    from training.dsp_baseline import DEFAULT_CONFIG, lowpass_kernel

    kernel = lowpass_kernel(DEFAULT_CONFIG.lowpass_hz, 1.0 / DEFAULT_CONFIG.hop_s)[::-1]
    pkg = load_package(package)
    found = {}
    for name, _, _ in weight_tensors(package):
        value = np.asarray(pkg.const(name), np.float64)
        if (
            value.ndim == 3
            and value.shape[1:] == (1, len(kernel))
            and np.allclose(value[:, 0], kernel, atol=1e-7)
        ):
            found[name] = "the envelopes' low-pass: each band is scaled to unit variance right after it"
    return found


def test_every_weight_tensor_changed_by_one_percent_fails(explicit, session, short_stream, tmp_path):
    """Every weight tensor of the package (the model's parameters, the front-end's and the DSP's DFT
    and band matrices, the estimator's index vectors) multiplied by 1.01 fails verify, except the
    constants a uniform scale provably cannot change (listed, and shown to change nothing)."""
    chunks, reference = short_stream
    honest = verify_chunks(session, chunks, reference_values=reference)[0]
    assert all(c.passed for c in honest), [c for c in honest if not c.passed]
    tensors = weight_tensors(explicit)
    assert len([t for t in tensors if t[1] == "blob"]) >= 10
    invariant = _scale_invariant_constants(explicit)
    assert len(invariant) == 1, invariant
    passed_anyway, all_zero = [], []
    for name, where, locator in tensors:
        copy = perturbed_copy(explicit, tmp_path / "p.mlpackage", where, locator)
        package = load_package(copy)
        if not np.any(package.const(name)):
            all_zero.append(name)  # 1.01 x 0 = 0: the copy is the package; nothing to detect
            continue
        checks = _verify_copy(session, copy, chunks, reference, package)
        if name in invariant:  # the claim is checked, not assumed: every output and state holds
            assert all(c.passed for c in checks), (name, [c for c in checks if not c.passed])
        elif all(c.passed for c in checks):
            worst = max(checks, key=lambda c: c.max_abs_error / max(c.limit, 1e-30))
            passed_anyway.append(
                f"{name} ({where}): worst {worst.name} {worst.mode} {worst.max_abs_error:.2e}"
            )
    assert not passed_anyway, passed_anyway
    # the mel projection's bias, which the converter adds as zeros, is the only tensor left out
    assert len(all_zero) <= 1, all_zero


def test_how_much_a_chunk_adds_to_the_breath_count_is_checked(explicit, session, tmp_path):
    """respiration_count adds up the rolling rate (rate x chunk / 60 s per chunk): tripling that
    factor in the package fails verify on respiration_count (12 s of breathing: rates from 4 s on)."""
    from training.synth import make_participant, synth_recording

    rec = synth_recording(make_participant("count", seed=4), 1, 12.0, np.random.default_rng(4), rate_bpm=15.0)
    chunks = rec.audio[: 120 * session.chunk_samples].astype(np.float32).reshape(-1, session.chunk_samples)
    reference = stream_values(session.reference(), chunks)
    assert (reference["rr_reason"] == 0).sum() > 20  # the stream has rates to add up
    pkg = load_package(explicit)
    factor = 1600 / 16000 / 60.0
    found = [
        (name, where, locator)
        for name, where, locator in weight_tensors(explicit, graph_constants=True)
        if where == "inline"
        and np.size(pkg.const(name)) == 1
        and np.isclose(float(np.ravel(pkg.const(name))[0]), factor)
    ]
    assert len(found) == 1, found
    copy = perturbed_copy(explicit, tmp_path / "count.mlpackage", found[0][1], found[0][2], factor=3.0)
    checks = _verify_copy(session, copy, chunks, reference)
    failed = {c.name for c in checks if not c.passed}
    assert {"respiration_count", "count_fraction"} <= failed, failed


# -- what is compared ---------------------------------------------------------------------------------------


def test_every_output_and_state_is_compared_after_every_chunk(session, short_stream):
    chunks, reference = short_stream
    package = session.package
    outputs = {f.name for f in package.outputs if not f.name.endswith("_out")}
    states = {f.name[: -len("_in")] for f in package.inputs if f.name != "audio"}
    assert set(reference) == outputs | states
    assert all(v.shape[0] == len(chunks) for v in reference.values())
    checks, coreml_checks = verify_chunks(session, chunks, reference_values=reference)
    assert coreml_checks is None
    for mode in ("step", "run"):
        assert sorted(c.name for c in checks if c.mode == mode) == sorted(outputs | states)
    assert {c.kind for c in checks if c.name in states} == {"state"}
    # every name has a measured tolerance (a new output or state would show "unmeasured")
    assert not [c.name for c in checks if c.unmeasured]
    assert set(TOLERANCES) >= outputs | states


def test_a_change_in_one_late_chunk_of_one_state_fails(session, short_stream):
    chunks, reference = short_stream
    got = {k: v.copy() for k, v in reference.items()}
    got["chunks_seen"][-1] += 1.0  # one chunk, one state, one element
    checks = {c.name: c for c in compare(reference, got, session.kinds(), True, "step")}
    assert not checks["chunks_seen"].passed and checks["chunks_seen"].worst_chunk == len(chunks) - 1
    assert all(c.passed for n, c in checks.items() if n != "chunks_seen")
    del got["lstm_c"]  # a state the package does not return is a failure, not a skip
    for mode in ("step", "run"):
        assert not {c.name: c for c in compare(reference, got, session.kinds(), True, mode)}["lstm_c"].passed


def test_run_mode_is_judged_by_psnr(session, short_stream):
    """Free-running streams drift apart by round-off that a recurrent state amplifies (model- and
    audio-dependent), so run mode allows drift up to RUN_MIN_PSNR_DB; a state that is not carried
    between calls at all is far beyond it."""
    _, reference = short_stream
    drifted = {k: v * (1 + 1e-3) for k, v in reference.items()}
    checks = compare(reference, drifted, session.kinds(), True, "run")
    assert all(c.rule == "psnr" and c.limit == RUN_MIN_PSNR_DB and c.passed for c in checks)
    assert not all(c.passed for c in compare(reference, drifted, session.kinds(), True, "step"))
    # the cell state is two states (its fp16 rounding and the residual), compared joined: both restart
    lost = ("lstm_c", "lstm_c_residual", "chunks_seen")
    restarted = {k: np.zeros_like(v) if k in lost else v for k, v in reference.items()}
    failed = {c.name for c in compare(reference, restarted, session.kinds(), True, "run") if not c.passed}
    assert failed == set(lost)


def test_short_files_are_looped_to_sixty_seconds():
    chunks, plays = looped(np.ones(13 * 16000, np.float32), 1600, 60.0)
    assert chunks.shape == (600, 1600) and plays == 5
    chunks, plays = looped(np.ones(61 * 16000 + 5, np.float32), 1600, 60.0)
    assert chunks.shape == (610, 1600) and plays == 1


def test_verify_command_loops_short_files_and_reports_every_name(explicit, tmp_path, capsys):
    wav = tmp_path / "breath.wav"
    sf.write(wav, breath_like(2.5, 16.0, 8), 16000)
    args = ["verify", str(explicit), "--audio", str(wav), "--checkpoint", str(DEFAULT_CHECKPOINT)]
    code = coreml_main([*args, "--min-seconds", "6"])  # the default is 60 s; 6 keeps the test short
    out = capsys.readouterr().out
    assert code == 0, out
    assert "60 chunks, 6.0 s streamed as one stream, the file looped 3x" in out
    for name in ("rr_bpm", "rr_reason", "respiration_count", "lstm_c", "band_window", "audio_tail"):
        assert out.count(f"  {name} ") == 2  # step and run
    assert "1 of 1 files within tolerance" in out and "skipped" in out
    assert inspect.signature(verify).parameters["min_seconds"].default == MIN_STREAM_S == 60.0
    assert coreml_cli.MIN_STREAM_S == MIN_STREAM_S  # the command line's default


def test_verify_fails_when_weights_drift(explicit, tmp_path, capsys):
    blob = next(t for t in weight_tensors(explicit) if t[1] == "blob" and "phase_head" in t[0])
    drifted = perturbed_copy(explicit, tmp_path / "drifted.mlpackage", *blob[1:])
    wav = tmp_path / "breath.wav"
    sf.write(wav, breath_like(4.0, 25.0, 9), 16000)
    args = ["verify", str(drifted), "--audio", str(wav), "--checkpoint", str(DEFAULT_CHECKPOINT)]
    code = coreml_main([*args, "--min-seconds", "4", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and not report["files"][0]["passed"]
    failed = {c["name"] for c in report["files"][0]["checks"] if not c["passed"]}
    assert "phase_probs" in failed


def test_stateful_package_is_judged_by_psnr_with_fp16_states(tmp_path):
    stateful = shipped_package("stateful", "float32")
    session = open_session(stateful, DEFAULT_CHECKPOINT)
    assert not session.strict
    chunks = breath_like(3.0, 14.0, 12).reshape(-1, 1600)
    checks, _ = verify_chunks(session, chunks)
    assert {c.name for c in checks} >= {"rr_bpm", "rr_confidence", "lstm_c", "band_window"}
    assert all(c.rule == "psnr" and c.passed for c in checks), [c for c in checks if not c.passed]
    assert {c.mode for c in checks} == {"step", "run"}


# -- Core ML's own predictions (macOS only): the comparison, with a fake Core ML -------------------------


class FakeCoreML:
    """Stands in for coremltools' MLModel: the interpreter's answers, optionally altered."""

    def __init__(self, package, alter_output: str | None = None, alter_state: str | None = None):
        self.package, self.alter_output, self.alter_state = package, alter_output, alter_state
        self.calls = 0

    def make_state(self):
        return _AlteredState(self.package.make_state(), self.alter_state)

    def predict(self, inputs, state=None):
        self.calls += 1
        out = self.package.predict(inputs, state=None if state is None else state.inner)
        if self.alter_output in out:
            out[self.alter_output] = out[self.alter_output] + 0.01
        return out


class _AlteredState:
    """An MLState whose ``read_state`` lies about one state (as a Core ML bug might)."""

    def __init__(self, inner, alter: str | None) -> None:
        self.inner, self.alter = inner, alter

    def read_state(self, name):
        value = self.inner.read_state(name)
        return value + 0.5 if name == self.alter else value

    def write_state(self, name, value):
        self.inner.write_state(name, value)


@pytest.mark.parametrize("alter", [None, "rr_bpm", "respiration_count", "lstm_c_out"])
def test_core_ml_predictions_are_compared_and_fail_verify(explicit, tmp_path, alter):
    wav = tmp_path / "breath.wav"
    sf.write(wav, breath_like(3.0, 16.0, 5), 16000)
    fakes = []

    def loader(path, strict):
        assert strict  # a float32 explicit package runs on the CPU
        fakes.append(FakeCoreML(load_package(path), alter_output=alter))
        return fakes[0]

    results, info = verify(explicit, [wav], DEFAULT_CHECKPOINT, min_seconds=3.0, coreml_loader=loader)
    assert info["coreml_ran"] and fakes[0].calls == 2 * 30  # step and run
    result = results[0]
    assert all(c.passed for c in result.checks)  # the interpreter itself is fine
    assert result.coreml_checks is not None
    if alter is None:
        assert result.passed
    else:
        assert not result.passed
        # 0.01 is inside the loose free-running bounds; the step comparison catches it
        assert f"coreml {alter.removesuffix('_out')} (step)" in result.failures()


def test_core_ml_state_mismatch_fails_for_stateful_packages(tmp_path):
    stateful = shipped_package("stateful", "float32")
    session = open_session(stateful, DEFAULT_CHECKPOINT)
    chunks = breath_like(1.0, 16.0, 6).reshape(-1, 1600)
    honest = FakeCoreML(load_package(stateful))
    _, coreml_checks = verify_chunks(session, chunks, coreml=honest)
    assert coreml_checks and all(c.passed for c in coreml_checks)
    lying = FakeCoreML(load_package(stateful), alter_state="lstm_window")
    _, coreml_checks = verify_chunks(session, chunks, coreml=lying)
    failed = {(c.name, c.mode) for c in coreml_checks if not c.passed}
    assert {("lstm_window", "step"), ("lstm_window", "run")} <= failed


def test_core_ml_runs_on_the_cpu_for_float32_on_macos_only(monkeypatch, explicit):
    import coremltools as ct

    import coreml.verify as verify_module

    assert coreml_model(explicit, True) is None or verify_module.platform.system() == "Darwin"
    seen = {}

    def fake_mlmodel(path, compute_units):
        seen["units"] = compute_units
        return object()

    monkeypatch.setattr(verify_module.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(ct.models, "MLModel", fake_mlmodel)
    coreml_model(explicit, True)
    assert seen["units"] == ct.ComputeUnit.CPU_ONLY
    coreml_model(explicit, False)
    assert seen["units"] == ct.ComputeUnit.ALL


def test_check_rules():
    def check(max_abs, median, rule="abs", psnr=90.0, limit=1e-5):
        return Check("x", "output", "step", max_abs, 0.0, median, 0, 1.0, psnr, rule, limit, 1e-7)

    assert check(1e-5, 1e-7).passed
    assert not check(2e-5, 1e-7).passed  # one chunk too far off
    assert not check(1e-6, 2e-7).passed  # every chunk a little off
    assert not check(float("nan"), 0.0).passed
    assert not check(0.1, 0.1, "psnr", 34.9, 35.0).passed
    assert check(0.1, 0.1, "psnr", 35.0, 35.0).passed


def test_the_breath_count_parts_are_compared_as_the_count_they_make(session, short_stream):
    """A cycle carried one call earlier (whole +1, fraction -1) is the same count and passes; a count
    that is off fails both parts."""
    _, reference = short_stream
    n = len(reference["count_whole"])
    base = {k: v.copy() for k, v in reference.items()}
    base["count_whole"] = np.full_like(reference["count_whole"], 3.0)
    base["count_fraction"] = np.full_like(reference["count_fraction"], 0.9999)
    carried = {k: v.copy() for k, v in base.items()}
    carried["count_whole"][n // 2] = 4.0
    carried["count_fraction"][n // 2] = -0.0001  # 4 - 0.0001 = 3 + 0.9999: the same count
    checks = {c.name: c for c in compare(base, carried, session.kinds(), True, "step")}
    assert checks["count_whole"].passed and checks["count_fraction"].passed
    off = {k: v.copy() for k, v in base.items()}
    off["count_whole"][n // 2] = 4.0  # one cycle more, fraction unchanged
    checks = {c.name: c for c in compare(base, off, session.kinds(), True, "step")}
    assert not checks["count_whole"].passed and not checks["count_fraction"].passed
