"""The numpy interpreter against torch: small seeded modules converted by coremltools, saved, read back.

Each fixture converts once per module (conversions take a second or so). fp32 packages must match
torch to 1e-4 of the output's scale; fp16 packages by PSNR >= 35 dB, and measurably differ from the
fp32 result (so the interpreter really computes in fp16 where the program says so).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ct = pytest.importorskip("coremltools")

from torch import nn  # noqa: E402

from coreml.cost import cost_report, count_weights, multiply_adds, op_histogram  # noqa: E402
from coreml.interpreter import InputError, UnsupportedOpError, load_package  # noqa: E402
from coreml.package import CorruptWeightsError, PackageError, read_package  # noqa: E402
from training.logmel import LogMel  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

PRECISIONS = ("float32", "float16")


# -- helpers ---------------------------------------------------------------------------------------------


def psnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio of ``test`` against ``reference``, peak = max |reference|."""
    reference = np.asarray(reference, np.float64)
    mse = np.mean((reference - np.asarray(test, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(np.max(np.abs(reference)) ** 2 / mse))


def assert_fp32_close(reference: np.ndarray, test: np.ndarray, what: str) -> None:
    reference = np.asarray(reference, np.float32)
    scale = max(1.0, float(np.max(np.abs(reference))))
    error = float(np.max(np.abs(reference - test)))
    assert test.shape == reference.shape, what
    assert error <= 1e-4 * scale, f"{what}: max error {error:.3g} (scale {scale:.3g})"


def assert_matches(reference: np.ndarray, test: np.ndarray, precision: str, what: str) -> None:
    if precision == "float32":
        assert_fp32_close(reference, test, what)
    else:
        assert test.shape == reference.shape, what
        assert psnr_db(reference, test) >= 35.0, f"{what}: PSNR {psnr_db(reference, test):.1f} dB"


def convert(
    module: nn.Module,
    examples: dict[str, torch.Tensor],
    output_names: list[str],
    path: Path,
    precision: str = "float32",
    target=None,
    states: dict[str, tuple[int, ...]] | None = None,
    int_inputs: tuple[str, ...] = (),
) -> Path:
    """torch.jit.trace + ct.convert(mlprogram) + save, the export path the issue prescribes."""
    traced = torch.jit.trace(module.eval(), tuple(examples.values()))
    inputs = [
        ct.TensorType(name=name, shape=tuple(t.shape), dtype=np.int32 if name in int_inputs else np.float32)
        for name, t in examples.items()
    ]
    state_types = [
        ct.StateType(wrapped_type=ct.TensorType(shape=shape, dtype=np.float16), name=name)
        for name, shape in (states or {}).items()
    ]
    mlmodel = ct.convert(
        traced,
        inputs=inputs,
        outputs=[ct.TensorType(name=n, dtype=np.float32) for n in output_names],
        states=state_types or None,
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if precision == "float16" else ct.precision.FLOAT32,
        minimum_deployment_target=target or ct.target.iOS16,
    )
    mlmodel.save(str(path))
    return path


def torch_outputs(module: nn.Module, examples: dict[str, np.ndarray], names: list[str]) -> dict:
    with torch.no_grad():
        result = module(*(torch.from_numpy(np.asarray(v)) for v in examples.values()))
    result = result if isinstance(result, tuple) else (result,)
    return {name: r.numpy() for name, r in zip(names, result, strict=True)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("coreml_interpreter")


# -- the front-end: strided DFT convolution, power, mel matmul, log --------------------------------------

AUDIO_SAMPLES = 1840  # a 1600-sample chunk plus the 240-sample tail: 10 frames


def _breath_like_audio(seed: int, amplitude: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(AUDIO_SAMPLES) / 16_000
    noise = rng.standard_normal(AUDIO_SAMPLES) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (amplitude * noise)[None].astype(np.float32)


@pytest.fixture(scope="module")
def frontend_packages(workdir):
    module = LogMel(method="dft")
    example = {"audio": torch.zeros(1, AUDIO_SAMPLES)}
    return module, {
        p: load_package(convert(module, example, ["log_mel"], workdir / f"frontend_{p}.mlpackage", p))
        for p in PRECISIONS
    }


def test_frontend_float32_matches_torch_log_energies(frontend_packages):
    module, packages = frontend_packages
    model = packages["float32"]
    histogram = op_histogram(model.package)
    # the DFT in two stages of matrix products (training.framed_dft), not a 402 x 400 convolution basis
    assert {"gather", "matmul", "log"} <= set(histogram) and "conv" not in histogram
    constants = sum(
        np.size(model.const(op.outputs[0][0])) for op in model.package.operations if op.type == "const"
    )
    assert constants < 30_000, constants
    for seed, amplitude in ((0, 0.3), (1, 1e-3), (2, 1e-5)):
        audio = _breath_like_audio(seed, amplitude)
        reference = torch_outputs(module, {"audio": audio}, ["log_mel"])["log_mel"]
        got = model.predict({"audio": audio})["log_mel"]
        assert got.shape == (1, 10, 40)
        assert np.max(np.abs(got - reference)) <= 1e-3, f"amplitude {amplitude}"


def test_frontend_float16_shows_the_quiet_audio_fault(frontend_packages):
    """fp16 is computed in fp16: fine on loud audio, 25x past the fp32 tolerance on quiet breath.

    Quiet breath's power spectrum lies in fp16's subnormal range (< 6e-5), where only a few
    significant bits are left, so its log energies go wrong by ~0.04 nat; fp16 constants alone
    (the rounded DFT constants and log floor) with float32 arithmetic would account for ~0.013.
    """
    module, packages = frontend_packages
    loud, quiet = _breath_like_audio(3, 0.3), _breath_like_audio(4, 3e-4)
    loud_ref = torch_outputs(module, {"audio": loud}, ["log_mel"])["log_mel"]
    quiet_ref = torch_outputs(module, {"audio": quiet}, ["log_mel"])["log_mel"]
    fp16, fp32 = packages["float16"], packages["float32"]
    assert psnr_db(loud_ref, fp16.predict({"audio": loud})["log_mel"]) >= 35.0
    assert np.max(np.abs(fp32.predict({"audio": quiet})["log_mel"] - quiet_ref)) <= 1e-3
    assert np.max(np.abs(fp16.predict({"audio": quiet})["log_mel"] - quiet_ref)) > 0.025


# -- a TC-LSTM in miniature with explicit state: causal conv with context, LSTM, pooling, heads ----------


class StreamingBlock(nn.Module):
    def __init__(self, n_in: int = 8, hidden: int = 12) -> None:
        super().__init__()
        self.conv = nn.Conv1d(n_in, n_in, 3)
        self.lstm = nn.LSTM(n_in, hidden, batch_first=True)
        self.embedding = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
        self.breath = nn.Linear(hidden, 3)
        self.noise = nn.Linear(hidden, 1)

    def forward(self, x, context, h, c, pool_sum, pool_count):
        xt = torch.cat([context, x.transpose(1, 2)], dim=2)
        y = torch.relu(self.conv(xt)).transpose(1, 2)
        out, (h2, c2) = self.lstm(y, (h, c))
        pool_sum = pool_sum + out.sum(dim=1)
        pool_count = pool_count + out.shape[1]
        embedded = self.embedding(pool_sum / pool_count.clamp_min(1.0))
        probs = torch.softmax(self.breath(embedded), dim=-1)
        noise = torch.sigmoid(self.noise(embedded)).squeeze(-1)
        return probs, noise, xt[:, :, -2:], h2, c2, pool_sum, pool_count


STREAM_STATES = {
    "context": (1, 8, 2),
    "h": (1, 1, 12),
    "c": (1, 1, 12),
    "pool_sum": (1, 12),
    "pool_count": (1, 1),
}
STREAM_OUTPUTS = ["probs", "noise", "context_out", "h_out", "c_out", "pool_sum_out", "pool_count_out"]


@pytest.fixture(scope="module")
def streaming_packages(workdir):
    torch.manual_seed(0)
    module = StreamingBlock()
    examples = {"x": torch.zeros(1, 10, 8), **{n: torch.zeros(s) for n, s in STREAM_STATES.items()}}
    paths = {}
    for precision in PRECISIONS:
        traced = torch.jit.trace(module.eval(), tuple(examples.values()))
        mlmodel = ct.convert(
            traced,
            inputs=[
                ct.TensorType(name=n, shape=tuple(t.shape), dtype=np.float32) for n, t in examples.items()
            ],
            outputs=[ct.TensorType(name=n, dtype=np.float32) for n in STREAM_OUTPUTS],
            convert_to="mlprogram",
            compute_precision=getattr(ct.precision, precision.upper()),
            minimum_deployment_target=ct.target.iOS16,
        )
        mlmodel.author = "Respira tests"
        mlmodel.license = "MIT"
        mlmodel.version = "0.0.1"
        mlmodel.short_description = "TC-LSTM in miniature"
        mlmodel.input_description["x"] = "features [1, 10, 8]"
        mlmodel.output_description["probs"] = "breath class probabilities"
        mlmodel.user_defined_metadata["chunk_frames"] = "10"
        path = workdir / f"stream_{precision}.mlpackage"
        mlmodel.save(str(path))
        paths[precision] = path
    return module, paths


@pytest.mark.parametrize("precision", PRECISIONS)
def test_streaming_block_matches_torch_over_chunks(streaming_packages, precision):
    module, paths = streaming_packages
    model = load_package(paths[precision])
    assert {"conv", "lstm", "linear", "relu", "softmax", "sigmoid", "concat", "slice_by_index"} <= set(
        op_histogram(model.package)
    )
    rng = np.random.default_rng(1)
    mine = {n: np.zeros(s, np.float32) for n, s in STREAM_STATES.items()}
    theirs = dict(mine)
    largest_relative_error = 0.0
    for chunk in range(4):
        x = rng.standard_normal((1, 10, 8)).astype(np.float32)
        got = model.predict({"x": x, **mine})
        reference = torch_outputs(module, {"x": x, **theirs}, STREAM_OUTPUTS)
        for name in STREAM_OUTPUTS:
            assert_matches(reference[name], got[name], precision, f"chunk {chunk} {name}")
            scale = max(1.0, float(np.max(np.abs(reference[name]))))
            error = float(np.max(np.abs(reference[name] - got[name])))
            largest_relative_error = max(largest_relative_error, error / scale)
        mine = {n: got[n + "_out"] for n in STREAM_STATES}
        theirs = {n: reference[n + "_out"] for n in STREAM_STATES}
    if precision == "float16":  # computed in fp16, not silently in float32
        assert largest_relative_error > 1e-4
    assert float(mine["pool_count"][0, 0]) == 40.0


def test_package_description_and_metadata(streaming_packages):
    package = read_package(streaming_packages[1]["float32"])
    assert package.metadata.author == "Respira tests"
    assert package.metadata.license == "MIT"
    assert package.metadata.version == "0.0.1"
    assert package.metadata.short_description == "TC-LSTM in miniature"
    assert package.metadata.user_defined["chunk_frames"] == "10"
    inputs = {f.name: f for f in package.inputs}
    assert list(inputs) == ["x", *STREAM_STATES]
    assert inputs["x"].shape == (1, 10, 8) and inputs["x"].dtype == "fp32"
    assert inputs["x"].description == "features [1, 10, 8]"
    outputs = {f.name: f for f in package.outputs}
    assert list(outputs) == STREAM_OUTPUTS
    assert outputs["probs"].description == "breath class probabilities"
    assert outputs["h_out"].shape == (1, 1, 12)
    assert package.states == []
    assert package.opset == "CoreML6" and package.function_name == "main"


def test_bad_inputs_are_refused_with_clear_messages(streaming_packages):
    model = load_package(streaming_packages[1]["float32"])
    good = {
        "x": np.zeros((1, 10, 8), np.float32),
        **{n: np.zeros(s, np.float32) for n, s in STREAM_STATES.items()},
    }
    with pytest.raises(InputError, match=r"missing \['h'\]"):
        model.predict({k: v for k, v in good.items() if k != "h"})
    with pytest.raises(InputError, match=r"unexpected \['h_in'\]"):
        model.predict({**good, "h_in": good["h"]})
    with pytest.raises(InputError, match=r"input 'x' must have shape \[1, 10, 8\], got \[1, 9, 8\]"):
        model.predict({**good, "x": np.zeros((1, 9, 8), np.float32)})
    with pytest.raises(InputError, match="has no states"):
        model.predict(good, state=object())
    with pytest.raises(InputError, match="has no states"):
        model.make_state()
    # float64 and Python lists are accepted and cast, like Core ML's conversion of MLMultiArray
    out = model.predict({**good, "x": np.zeros((1, 10, 8)).tolist()})
    assert out["probs"].dtype == np.float32


def test_cost_report_counts_ops_weights_and_multiply_adds(streaming_packages):
    module, paths = streaming_packages
    package = read_package(paths["float32"])
    report = cost_report(package)
    assert report.op_histogram == op_histogram(package)
    assert sum(report.op_histogram.values()) + report.const_ops == len(package.operations)
    assert report.op_histogram["lstm"] == 1 and report.op_histogram["conv"] == 1
    # Core ML's LSTM holds one bias (b_ih + b_hh): 4 * hidden fewer numbers than torch; the frame
    # count increment (10 frames per chunk) became a constant tensor [10.0] of the program
    torch_params = sum(p.numel() for p in module.parameters())
    increments = [
        op for op in package.operations if op.type == "const" and np.array_equal(op.attributes["val"], [10.0])
    ]
    assert len(increments) == 1
    assert count_weights(package) == torch_params - 4 * 12 + 1
    conv = 10 * 8 * (8 * 3)
    lstm = 10 * 4 * 12 * (8 + 12)
    linear = 12 * 12 + 12 * 3 + 12 * 1
    assert multiply_adds(package) == conv + lstm + linear
    on_disk = sum(p.stat().st_size for p in Path(paths["float32"]).rglob("*") if p.is_file())
    assert report.package_bytes == on_disk
    assert (
        report.weight_file_bytes
        == (Path(paths["float32"]) / "Data/com.apple.CoreML/weights/weight.bin").stat().st_size
    )
    assert cost_report(paths["float16"]).weight_file_bytes < report.weight_file_bytes  # fp16 weights


# -- LSTM as sequence model (not batch_first, bidirectional) and other layers ------------------------------


class SequenceLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.uni = nn.LSTM(6, 10)
        self.bi = nn.LSTM(6, 5, bidirectional=True)
        self.same = nn.Conv1d(6, 4, 4, padding="same")
        self.grouped = nn.Conv1d(4, 4, 3, groups=2, dilation=2, padding=2)
        # one channel in and out per group: the interpreter's per-channel correlation (the estimator's
        # autocorrelations are convolutions of this kind)
        self.depthwise = nn.Conv1d(4, 4, 5, groups=4, padding=2)
        self.image = nn.Conv2d(2, 4, 3, stride=(2, 1), padding=1, groups=2)
        self.norm = nn.LayerNorm(6)

    def forward(self, x, h, c, img):  # x [T=7, B=2, 6]
        out, (h2, c2) = self.uni(x, (h, c))
        bi, _ = self.bi(x)
        channels = x.permute(1, 2, 0)  # [B, 6, T]
        conv = self.grouped(self.same(channels))
        padded = nn.functional.pad(channels, (2, 1), mode="reflect")
        gelu = nn.functional.gelu(self.norm(x))
        return out, h2, c2, bi, conv, self.image(img), padded, gelu, self.depthwise(conv)


LAYER_OUTPUTS = ["out", "h_out", "c_out", "bi", "conv", "image", "padded", "gelu", "depthwise"]
# iOS 16 keeps LSTMs in fp32 even in fp16 programs (casts around them); iOS 17+ emits fp16 LSTMs
LAYER_VARIANTS = {"float32": ct.target.iOS16, "float16": ct.target.iOS16, "float16_ios18": ct.target.iOS18}


@pytest.fixture(scope="module")
def layer_packages(workdir):
    torch.manual_seed(1)
    module = SequenceLayers()
    examples = {
        "x": torch.zeros(7, 2, 6),
        "h": torch.zeros(1, 2, 10),
        "c": torch.zeros(1, 2, 10),
        "img": torch.zeros(1, 2, 6, 5),
    }
    packages = {}
    for variant, target in LAYER_VARIANTS.items():
        path = workdir / f"layers_{variant}.mlpackage"
        precision = variant.split("_")[0]
        packages[variant] = load_package(convert(module, examples, LAYER_OUTPUTS, path, precision, target))
    return module, packages


@pytest.mark.parametrize("variant", LAYER_VARIANTS)
def test_sequence_layers_match_torch(layer_packages, variant):
    module, packages = layer_packages
    model = packages[variant]
    histogram = op_histogram(model.package)
    assert histogram["lstm"] == 2 and histogram["conv"] == 4
    assert {"pad", "layer_norm", "gelu", "transpose"} <= set(histogram)
    lstm_dtypes = {op.outputs[0][1].dtype for op in model.package.operations if op.type == "lstm"}
    assert lstm_dtypes == {"fp16" if variant == "float16_ios18" else "fp32"}
    rng = np.random.default_rng(2)
    inputs = {
        "x": rng.standard_normal((7, 2, 6)).astype(np.float32),
        "h": rng.standard_normal((1, 2, 10)).astype(np.float32) * 0.5,
        "c": rng.standard_normal((1, 2, 10)).astype(np.float32) * 0.5,
        "img": rng.standard_normal((1, 2, 6, 5)).astype(np.float32),
    }
    got = model.predict(inputs)
    reference = torch_outputs(module, inputs, LAYER_OUTPUTS)
    for name in LAYER_OUTPUTS:
        assert_matches(reference[name], got[name], variant.split("_")[0], name)
    bidirectional = [
        op for op in model.package.operations if op.type == "lstm" and "weight_ih_back" in op.inputs
    ]
    assert len(bidirectional) == 1


# -- elementwise, reductions, indexing, matmul ---------------------------------------------------------------


class Elementwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(7, 4))
        self.mix = nn.Parameter(torch.randn(4, 4) * 0.5)
        self.proj = nn.Linear(4, 5)

    def forward(self, x, idx):  # x [6, 4], idx [3] int32
        a = x - 0.25
        b = a / (x * x + 1.0)
        c = torch.sqrt(torch.abs(x) + 1e-3)
        d = torch.clamp(b, -0.3, 0.3) + torch.maximum(a, c) - torch.minimum(a, c)
        e = d.reshape(2, 3, 4).sum(dim=1) + d.reshape(2, 3, 4)[:, 1:3].mean(dim=1)
        gathered = self.table[idx]
        f = torch.log(torch.exp(e) + 1.0) @ gathered.T
        m = torch.tanh(torch.matmul(e, self.mix))
        narrow = torch.narrow(x.reshape(2, 12), 1, 2, 5)
        stacked = torch.stack([e, m], dim=0).unsqueeze(1).squeeze(1)
        return f, torch.relu(self.proj(e)), narrow, stacked


ELEMENTWISE_OUTPUTS = ["f", "projected", "narrow", "stacked"]


@pytest.fixture(scope="module")
def elementwise_packages(workdir):
    torch.manual_seed(2)
    module = Elementwise()
    examples = {"x": torch.zeros(6, 4), "idx": torch.tensor([1, 3, 0], dtype=torch.int32)}
    return module, {
        p: load_package(
            convert(
                module, examples, ELEMENTWISE_OUTPUTS, workdir / f"elem_{p}.mlpackage", p, int_inputs=("idx",)
            )
        )
        for p in PRECISIONS
    }


@pytest.mark.parametrize("precision", PRECISIONS)
def test_elementwise_ops_match_torch(elementwise_packages, precision):
    module, packages = elementwise_packages
    model = packages[precision]
    expected_ops = {"sub", "mul", "add", "real_div", "sqrt", "abs", "clip", "maximum", "minimum", "reshape"}
    expected_ops |= {"reduce_sum", "reduce_mean", "gather", "exp", "log", "matmul", "tanh", "linear", "relu"}
    assert expected_ops <= set(op_histogram(model.package))
    rng = np.random.default_rng(3)
    for idx in ([1, 3, 0], [6, -1, 2]):
        inputs = {"x": rng.uniform(-1, 1, (6, 4)).astype(np.float32), "idx": np.array(idx, np.int32)}
        got = model.predict(inputs)
        reference = torch_outputs(module, inputs, ELEMENTWISE_OUTPUTS)
        for name in ELEMENTWISE_OUTPUTS:
            assert_matches(reference[name], got[name], precision, f"{name} idx={idx}")
    with pytest.raises(InputError, match="'idx' is int32; got floating point"):
        model.predict({"x": np.zeros((6, 4), np.float32), "idx": np.zeros(3, np.float32)})


# -- ops torch does not emit on its own, built directly in MIL -----------------------------------------------


@pytest.fixture(scope="module")
def mil_ops_model(workdir):
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(
        input_specs=[
            mb.TensorSpec(shape=(2, 3, 8)),
            mb.TensorSpec(shape=(2, 3, 8)),
            mb.TensorSpec((2, 3, 8), types.int32),
        ],
        opset_version=ct.target.iOS18,
    )
    def program(x, y, idx):
        first, second = mb.split(x=x, split_sizes=[3, 5], axis=2)
        return (
            mb.square(x=x, name="square"),
            mb.slice_by_size(x=x, begin=[0, 1, 2], size=[2, -1, 4], name="by_size"),
            mb.slice_by_index(
                x=x,
                begin=[1, 0, 1],
                end=[2, 3, 8],
                stride=[1, 2, 3],
                squeeze_mask=[True, False, False],
                name="strided",
            ),
            mb.slice_update(
                x=x,
                update=mb.slice_by_index(x=y, begin=[0, 0, 4], end=[2, 2, 8]),
                begin=[0, 0, 4],
                end=[2, 2, 8],
                name="updated",
            ),
            mb.identity(x=first, name="first"),
            mb.identity(x=second, name="second"),
            mb.stack(values=[x, y], axis=1, name="stacked"),
            mb.concat(values=[x, y], axis=2, interleave=True, name="interleaved"),
            mb.tile(x=x, reps=[1, 2, 1], name="tiled"),
            mb.select(cond=mb.greater(x=x, y=y), a=x, b=y, name="selected"),
            mb.reduce_max(x=x, axes=[2], keep_dims=True, name="max"),
            mb.reduce_argmax(x=x, axis=1, name="argmax"),
            mb.gather_along_axis(x=x, indices=idx, axis=1, name="along"),
            mb.rsqrt(x=mb.abs(x=x), epsilon=0.5, name="rsqrt"),
            mb.reshape(x=x, shape=[0, -1, 4], name="reshaped"),
        )

    mlmodel = ct.convert(
        program,
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS18,
    )
    path = workdir / "mil_ops.mlpackage"
    mlmodel.save(str(path))
    return load_package(path)


def test_mil_ops_match_torch(mil_ops_model):
    model = mil_ops_model
    assert {"square", "slice_by_size", "slice_update", "split", "stack", "tile", "select"} <= set(
        op_histogram(model.package)
    )
    rng = np.random.default_rng(4)
    x_np = rng.standard_normal((2, 3, 8)).astype(np.float32)
    y_np = rng.standard_normal((2, 3, 8)).astype(np.float32)
    idx_np = rng.integers(0, 3, (2, 3, 8)).astype(np.int32)
    got = model.predict({"x": x_np, "y": y_np, "idx": idx_np})
    names = [f.name for f in model.outputs]
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    updated = x.clone()
    updated[:, :2, 4:] = y[:, :2, 4:]
    interleaved = torch.stack([x, y], dim=3).reshape(2, 3, 16)
    expected = [
        x * x,
        x[0:2, 1:, 2:6],
        x[1, 0:3:2, 1:8:3],
        updated,
        x[..., :3],
        x[..., 3:],
        torch.stack([x, y], dim=1),
        interleaved,
        x.repeat(1, 2, 1),
        torch.where(x > y, x, y),
        x.amax(dim=2, keepdim=True),
        x.argmax(dim=1),
        torch.gather(x, 1, torch.from_numpy(idx_np).long()),
        1.0 / torch.sqrt(x.abs() + 0.5),
        x.reshape(2, -1, 4),
    ]
    assert len(names) == len(expected)
    for name, reference in zip(names, expected, strict=True):
        assert_fp32_close(reference.numpy(), got[name], name)


# -- stateful (iOS 18): buffers updated in place become Core ML states ---------------------------------------


class Accumulator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("total", torch.zeros(1, 4))
        self.register_buffer("context", torch.zeros(1, 3, 2))
        self.proj = nn.Linear(3, 4)

    def forward(self, x):  # x [1, 3, 5]
        self.total += self.proj(x.mean(dim=2))
        full = torch.cat([self.context, x], dim=2)
        self.context[:, :, :] = full[:, :, -2:]
        return self.total * 1.0, full.sum(dim=2)


def accumulator_reference(module: Accumulator, chunks: list[np.ndarray], fp16_state: bool) -> list[tuple]:
    """The module's arithmetic in float64, with the states rounded to fp16 on every write if asked."""
    weight, bias = module.proj.weight.detach().double().numpy(), module.proj.bias.detach().double().numpy()
    store = (lambda v: v.astype(np.float16).astype(np.float64)) if fp16_state else (lambda v: v)
    total, context = np.zeros((1, 4)), np.zeros((1, 3, 2))
    results = []
    for x in chunks:
        total = store(total + x.astype(np.float64).mean(axis=2) @ weight.T + bias)
        full = np.concatenate([context, x], axis=2)
        context = store(full[:, :, -2:])
        results.append((total, full.sum(axis=2)))
    return results


@pytest.fixture(scope="module")
def stateful_packages(workdir):
    torch.manual_seed(3)
    module = Accumulator()
    states = {"total": (1, 4), "context": (1, 3, 2)}
    paths = {  # tracing runs forward once and so moves the buffers; the reference uses only weights
        p: convert(
            copy.deepcopy(module),
            {"x": torch.zeros(1, 3, 5)},
            ["total_out", "sum"],
            workdir / f"stateful_{p}.mlpackage",
            p,
            target=ct.target.iOS18,
            states=states,
        )
        for p in PRECISIONS
    }
    return module, paths


@pytest.mark.parametrize("precision", PRECISIONS)
def test_stateful_package_keeps_fp16_states_like_core_ml(stateful_packages, precision):
    module, paths = stateful_packages
    model = load_package(paths[precision])
    assert {"read_state", "write_state", "slice_update"} <= set(op_histogram(model.package))
    assert [(s.name, s.shape, s.dtype) for s in model.states] == [
        ("total", (1, 4), "fp16"),
        ("context", (1, 3, 2), "fp16"),
    ]
    rng = np.random.default_rng(5)
    chunks = [rng.uniform(0, 3, (1, 3, 5)).astype(np.float32) for _ in range(6)]
    rounded = accumulator_reference(module, chunks, fp16_state=True)
    exact = accumulator_reference(module, chunks, fp16_state=False)
    state = model.make_state()
    assert not np.any(state.read_state("total")) and state.read_state("total").dtype == np.float16
    max_diff_exact = 0.0
    for x, (total_r, sum_r), (total_e, _) in zip(chunks, rounded, exact, strict=True):
        got = model.predict({"x": x}, state=state)
        assert_matches(total_r, got["total_out"], precision, "total vs fp16-state reference")
        assert_matches(sum_r, got["sum"], precision, "sum vs fp16-state reference")
        assert psnr_db(total_e, got["total_out"]) >= 35.0
        max_diff_exact = max(max_diff_exact, float(np.max(np.abs(total_e - got["total_out"]))))
    assert max_diff_exact > 1e-4  # the fp16 storage is visible against float64 arithmetic
    np.testing.assert_array_equal(state.read_state("context"), chunks[-1][:, :, -2:].astype(np.float16))
    # a second stream starts from zero and does not disturb the first
    other = model.make_state()
    first_again = model.predict({"x": chunks[0]}, state=other)
    assert_matches(rounded[0][0], first_again["total_out"], precision, "fresh state")
    with pytest.raises(InputError, match=r"pass state=model.make_state\(\)"):
        model.predict({"x": chunks[0]})
    # writes from outside the program are stored in the state's type too, as MLState does
    other.write_state("total", np.full((1, 4), 0.1, np.float32))
    assert other.read_state("total").dtype == np.float16
    assert np.all(other.read_state("total") == np.float16(0.1))
    with pytest.raises(InputError, match=r"state 'total' has shape \[1, 4\], got \[4\]"):
        other.write_state("total", np.zeros(4))
    with pytest.raises(InputError, match="no state named 'h'"):
        other.read_state("h")


# -- compressed weights --------------------------------------------------------------------------------------


class TwoLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 32)
        self.b = nn.Linear(32, 8)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.fixture(scope="module")
def compressed_packages(workdir):
    import coremltools.optimize.coreml as cto

    torch.manual_seed(4)
    module = TwoLinear()
    packages = {}
    for target, tag in ((ct.target.iOS16, "ios16"), (ct.target.iOS18, "ios18")):
        path = convert(
            module, {"x": torch.zeros(4, 16)}, ["y"], workdir / f"linear_{tag}.mlpackage", target=target
        )
        base = ct.models.MLModel(str(path), skip_model_load=True)
        quantized = cto.linear_quantize_weights(
            base,
            cto.OptimizationConfig(cto.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=0)),
        )
        palettized = cto.palettize_weights(
            base, cto.OptimizationConfig(cto.OpPalettizerConfig(nbits=4, mode="kmeans", weight_threshold=0))
        )
        for kind, mlmodel in (("int8", quantized), ("lut4", palettized)):
            out = workdir / f"linear_{tag}_{kind}.mlpackage"
            mlmodel.save(str(out))
            packages[(tag, kind)] = load_package(out)
    return module, packages


@pytest.mark.parametrize("tag", ["ios16", "ios18"])
@pytest.mark.parametrize("kind", ["int8", "lut4"])
def test_compressed_weights_are_decompressed(compressed_packages, tag, kind):
    module, packages = compressed_packages
    model = packages[(tag, kind)]
    expected_op = {
        ("ios16", "int8"): "constexpr_affine_dequantize",
        ("ios18", "int8"): "constexpr_blockwise_shift_scale",
        ("ios16", "lut4"): "constexpr_lut_to_dense",
        ("ios18", "lut4"): "constexpr_lut_to_dense",
    }[(tag, kind)]
    decompress = [op for op in model.package.operations if op.type == expected_op]
    assert len(decompress) == 2
    weights = {w.shape: w for w in (model.const(op.outputs[0][0]).astype(np.float32) for op in decompress)}
    for layer in (module.a, module.b):
        original = layer.weight.detach().numpy()
        restored = weights[original.shape]
        if kind == "int8":  # per output channel symmetric: within half a step of max |w| / 127
            step = np.abs(original).max(axis=1, keepdims=True) / 127
            assert np.all(np.abs(restored - original) <= step * 0.5 + 1e-3 * step + 1e-7)
        else:  # k-means with 16 centroids: each weight is replaced by its nearest centroid
            centroids = np.unique(restored)
            assert len(centroids) <= 16
            nearest = centroids[np.argmin(np.abs(original[..., None] - centroids), axis=-1)]
            np.testing.assert_array_equal(restored, nearest)
    x = np.random.default_rng(6).standard_normal((4, 16)).astype(np.float32)
    reference = torch_outputs(module, {"x": x}, ["y"])["y"]
    assert psnr_db(reference, model.predict({"x": x})["y"]) >= (35.0 if kind == "int8" else 20.0)


# -- refusals ------------------------------------------------------------------------------------------------


class WithCumsum(nn.Module):
    def forward(self, x):
        return torch.cumsum(torch.relu(x), dim=1)


def test_unknown_op_from_a_real_conversion_is_refused_by_name(workdir):
    path = convert(WithCumsum(), {"x": torch.zeros(2, 5)}, ["y"], workdir / "cumsum.mlpackage")
    with pytest.raises(UnsupportedOpError, match=r"unsupported MIL op 'cumsum' \(op '.*', output y\)"):
        load_package(path)
    # the package itself reads fine: only running it is refused
    assert "cumsum" in op_histogram(read_package(path))


def _copy(path: Path, workdir: Path, name: str) -> Path:
    target = workdir / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(path, target)
    return target


def test_unknown_op_edited_into_the_spec_is_refused_by_name(streaming_packages, workdir):
    from coremltools.proto import Model_pb2

    path = _copy(streaming_packages[1]["float32"], workdir, "edited.mlpackage")
    model_file = path / "Data/com.apple.CoreML/model.mlmodel"
    spec = Model_pb2.Model()
    spec.ParseFromString(model_file.read_bytes())
    block = spec.mlProgram.functions["main"].block_specializations["CoreML6"]
    relu = next(op for op in block.operations if op.type == "relu")
    relu.type = "frobnicate"
    model_file.write_bytes(spec.SerializeToString())
    with pytest.raises(UnsupportedOpError, match=rf"'frobnicate' \(op '.*', output {relu.outputs[0].name}\)"):
        load_package(path)


@pytest.fixture
def weights_copy(streaming_packages, workdir):
    path = _copy(streaming_packages[1]["float32"], workdir, "corrupt.mlpackage")
    return path, path / "Data/com.apple.CoreML/weights/weight.bin"


def test_overwritten_blob_sentinel_is_reported(weights_copy):
    path, weights = weights_copy
    data = bytearray(weights.read_bytes())
    data[64:68] = b"\x00\x00\x00\x00"
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptWeightsError, match=r"weight.bin at offset 64 .*bad blob sentinel 0x00000000"):
        load_package(path)


def test_truncated_weight_file_is_reported(weights_copy):
    path, weights = weights_copy
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptWeightsError, match="truncated"):
        load_package(path)


def test_wrong_blob_dtype_and_header_version_are_reported(weights_copy):
    path, weights = weights_copy
    data = bytearray(weights.read_bytes())
    data[68:72] = (4).to_bytes(4, "little")  # int8 where the program declares fp32
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptWeightsError, match="blob holds int8, program declares fp32"):
        load_package(path)
    data[4:8] = (1).to_bytes(4, "little")
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptWeightsError, match="version 1, expected 2"):
        load_package(path)


def test_missing_parts_are_reported(weights_copy, tmp_path):
    path, weights = weights_copy
    weights.unlink()
    with pytest.raises(CorruptWeightsError, match=r"weight file .* is missing"):
        load_package(path)
    with pytest.raises(PackageError, match="not a directory"):
        load_package(tmp_path / "nothing.mlpackage")
    (tmp_path / "empty.mlpackage").mkdir()
    with pytest.raises(PackageError, match=r"no Manifest\.json"):
        load_package(tmp_path / "empty.mlpackage")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_fast_op_forms_compute_what_the_implementations_compute(
    elementwise_packages, streaming_packages, precision
):
    """Most ops run in a form with their constant arguments read once (``_FAST``); the same program run
    through the op implementations alone gives bit-identical results, fp16 rounding included."""
    rng = np.random.default_rng(4)
    stream_model = load_package(streaming_packages[1][precision])
    cases = [
        (
            elementwise_packages[1][precision],
            {"x": rng.uniform(-1, 1, (6, 4)).astype(np.float32), "idx": np.array([6, -1, 2], np.int32)},
        ),
        (
            stream_model,
            {
                "x": rng.standard_normal((1, 10, 8)).astype(np.float32),
                **{n: rng.standard_normal(s).astype(np.float32) for n, s in STREAM_STATES.items()},
            },
        ),
    ]
    for model, inputs in cases:
        fast = model.predict(inputs)
        steps = model._plan
        assert sum(step.fast is not None for step in steps) >= len(steps) // 2
        saved = [step.fast for step in steps]
        for step in steps:
            step.fast = None
        try:
            general = model.predict(inputs)
        finally:
            for step, form in zip(steps, saved, strict=True):
                step.fast = form
        assert fast.keys() == general.keys()
        for name in fast:
            assert fast[name].dtype == general[name].dtype
            np.testing.assert_array_equal(fast[name], general[name], err_msg=name)
