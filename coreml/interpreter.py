"""Run a saved ``.mlpackage`` on Linux: its MIL program executed op by op with numpy.

``load_package(path)`` reads the package (:mod:`coreml.package`) and returns an :class:`InterpretedModel`
whose ``predict`` mirrors ``MLModel.predict``: a dict of named inputs in, a dict of named outputs out,
and for stateful (iOS 18) packages ``state = model.make_state()`` passed to every call, like
``MLState``: states start at zero and keep their declared storage type (fp16), so every write rounds.

Precision model. Each op's result is cast to the data type the program declares for it. An op that the
program declares fp16 takes fp16 inputs (rounded by the producing op) and fp16 weights, computes in
float32 and rounds its result to fp16; an LSTM declared fp16 also rounds h and c at every time step.
That is what Apple's GPU / Neural Engine do to within accumulation order (fp16 storage, wider
accumulators), so quantisation of weights and activations, overflow past 65504, underflow of quiet
energies and log(0) all show up here as they would on the phone. fp32 ops compute in float32.

Unknown ops are refused when the package is loaded, with the op's type and output named; an op is
never skipped. Attributes an op implementation does not handle (a batched gather, vector palettes)
are refused with the op named when it runs.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from coreml.package import MIL_DTYPE_BY_NAME, Feature, Op, Package, TensorType, read_package


class InterpreterError(RuntimeError):
    """An op could not be executed as the program declares it."""


class UnsupportedOpError(InterpreterError):
    """The program uses an op (or an op attribute) that this interpreter does not implement."""


class InputError(ValueError):
    """The inputs or state passed to ``predict`` do not match the package's description."""


def numpy_dtype(mil_name: str) -> np.dtype:
    return np.dtype(MIL_DTYPE_BY_NAME[mil_name].numpy)


# -- states ---------------------------------------------------------------------------------------------


def _zeros(name: str, ttype: TensorType) -> np.ndarray:
    """The storage of a state, zeroed; a state's shape is fixed."""
    shape = ttype.fixed_shape
    if shape is None:
        raise InputError(f"state {name!r} is declared {ttype}: a state's dimensions must be fixed")
    return np.zeros(shape, dtype=numpy_dtype(ttype.dtype))


class MLState:
    """The states of one stream, like Core ML's ``MLState``: zeros at creation, typed storage.

    Storage keeps the declared type (fp16 for Core ML states), so every write rounds, as on device.
    """

    def __init__(self, types: Mapping[str, TensorType]) -> None:
        self._types = dict(types)
        self._values = {name: _zeros(name, t) for name, t in self._types.items()}

    @property
    def names(self) -> list[str]:
        return list(self._types)

    def read_state(self, name: str) -> np.ndarray:
        """A copy of the stored value of state ``name``."""
        self._check_name(name)
        return self._values[name].copy()

    def write_state(self, name: str, value: Any) -> None:
        """Store ``value`` (cast, with rounding, to the state's type) as state ``name``."""
        self._check_name(name)
        array = np.asarray(value)
        expected = self._values[name].shape
        if array.shape != expected:
            raise InputError(f"state {name!r} has shape {list(expected)}, got {list(array.shape)}")
        self._values[name] = _cast(array, self._types[name].dtype)

    def _check_name(self, name: str) -> None:
        if name not in self._values:
            raise InputError(f"no state named {name!r}; states are {self.names}")


class _StateRef:
    """What a state's name is bound to while a program runs: read_state / write_state go through it."""

    def __init__(self, state: MLState, name: str) -> None:
        self.state, self.name = state, name


# -- op implementations ------------------------------------------------------------------------------------


class Call:
    """One op being executed: its resolved arguments and declared output types."""

    def __init__(self, op: Op, args: dict[str, list[Any]]) -> None:
        self.op = op
        self.args = args

    def __contains__(self, param: str) -> bool:
        return param in self.args

    def __getitem__(self, param: str) -> Any:
        if param not in self.args:
            raise InterpreterError(f"{self.op.describe()}: required argument {param!r} missing")
        values = self.args[param]
        if len(values) != 1:
            raise InterpreterError(f"{self.op.describe()}: argument {param!r} has {len(values)} values")
        return values[0]

    def get(self, param: str, default: Any = None) -> Any:
        return self[param] if param in self.args else default

    def values(self, param: str) -> list[Any]:
        if param not in self.args:
            raise InterpreterError(f"{self.op.describe()}: required argument {param!r} missing")
        return self.args[param]

    def ints(self, param: str, default: Any = None) -> list[int]:
        value = self.get(param, default)
        return [int(v) for v in np.asarray(value).reshape(-1)]

    def scalar(self, param: str, default: Any = None) -> Any:
        value = self.get(param, default)
        return np.asarray(value).item() if isinstance(value, np.ndarray) else value

    def out_type(self, index: int = 0) -> TensorType:
        return self.op.outputs[index][1]

    def unsupported(self, what: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{self.op.describe()}: {what} is not supported by the interpreter")


OpFn = Callable[[Call], Any]
OPS: dict[str, OpFn] = {}


def register(*names: str) -> Callable[[OpFn], OpFn]:
    def wrap(fn: OpFn) -> OpFn:
        for name in names:
            OPS[name] = fn
        return fn

    return wrap


def _wide(x: Any) -> Any:
    """fp16 (and bf16-held-as-fp32) operands are computed in float32; results are rounded on output."""
    if isinstance(x, np.ndarray | np.generic) and x.dtype == np.float16:
        return x.astype(np.float32)
    return x


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# elementwise -----------------------------------------------------------------------------------------------

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.true_divide,
    "floor_div": np.floor_divide,
    "mod": np.mod,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}


@register(*_BINARY)
def _binary(call: Call) -> Any:
    return _BINARY[call.op.type](_wide(call["x"]), _wide(call["y"]))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


_UNARY: dict[str, Callable[[Any], Any]] = {
    "abs": np.abs,
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "ceil": np.ceil,
    "cos": np.cos,
    "cosh": np.cosh,
    "exp": np.exp,
    "exp2": np.exp2,
    "floor": np.floor,
    "logical_not": np.logical_not,
    "sign": np.sign,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": _sigmoid,
    "silu": lambda x: x * _sigmoid(x),
    "softplus": lambda x: np.logaddexp(0, x),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "identity": lambda x: x,
}


@register(*_UNARY)
def _unary(call: Call) -> Any:
    return _UNARY[call.op.type](_wide(call["x"]))


@register("log")
def _log(call: Call) -> Any:
    return np.log(_wide(call["x"]) + _wide(call.get("epsilon", 1e-45)))


@register("rsqrt")
def _rsqrt(call: Call) -> Any:
    return 1.0 / np.sqrt(_wide(call["x"]) + _wide(call.get("epsilon", 1e-12)))


@register("inverse")
def _inverse(call: Call) -> Any:
    return 1.0 / (_wide(call["x"]) + _wide(call.get("epsilon", 1e-4)))


@register("clip")
def _clip(call: Call) -> Any:
    return np.minimum(np.maximum(_wide(call["x"]), _wide(call["alpha"])), _wide(call["beta"]))


@register("threshold")
def _threshold(call: Call) -> Any:
    return np.maximum(_wide(call["x"]), _wide(call["alpha"]))


@register("leaky_relu")
def _leaky_relu(call: Call) -> Any:
    x = _wide(call["x"])
    return np.where(x >= 0, x, x * _wide(call.get("alpha", 0.01)))


@register("elu")
def _elu(call: Call) -> Any:
    x = _wide(call["x"])
    return np.where(x > 0, x, _wide(call.get("alpha", 1.0)) * np.expm1(np.minimum(x, 0)))


@register("gelu")
def _gelu(call: Call) -> Any:
    x = _wide(call["x"]).astype(np.float64)
    mode = call.get("mode", "EXACT")
    if mode == "EXACT":
        erf = np.vectorize(math.erf, otypes=[np.float64])
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    raise call.unsupported(f"gelu mode {mode!r}")


@register("softmax")
def _softmax(call: Call) -> Any:
    x = _wide(call["x"])
    axis = int(call.scalar("axis", -1))
    shifted = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return shifted / np.sum(shifted, axis=axis, keepdims=True)


@register("select")
def _select(call: Call) -> Any:
    return np.where(call["cond"], _wide(call["a"]), _wide(call["b"]))


@register("fill_like")
def _fill_like(call: Call) -> Any:
    return np.full(np.shape(call["ref_tensor"]), call.scalar("value", 0.0))


@register("fill")
def _fill(call: Call) -> Any:
    return np.full(call.ints("shape"), call.scalar("value", 0.0))


@register("cast")
def _cast_op(call: Call) -> Any:
    return call["x"]  # the declared output type does the cast (see _cast)


# linear algebra and convolution ---------------------------------------------------------------------------


@register("linear")
def _linear(call: Call) -> Any:
    x, weight = _wide(call["x"]), _wide(call["weight"])
    # one 2-D product, so BLAS takes the transposed weight as it is (an N-d matmul with a transposed
    # view falls back to numpy's slow loop)
    out = (x.reshape(-1, x.shape[-1]) @ weight.T).reshape(*x.shape[:-1], weight.shape[0])
    return out + _wide(call["bias"]) if "bias" in call else out


@register("matmul")
def _matmul(call: Call) -> Any:
    x, y = _wide(call["x"]), _wide(call["y"])
    if call.scalar("transpose_x", False) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if call.scalar("transpose_y", False) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    if y.ndim == 2 and x.ndim > 2:  # a stack of rows times one matrix: one 2-D product for BLAS
        return (np.ascontiguousarray(x).reshape(-1, x.shape[-1]) @ y).reshape(*x.shape[:-1], y.shape[-1])
    return np.matmul(x, y)


def _conv_padding(
    call: Call, spatial: tuple[int, ...], kernel: tuple[int, ...], strides: list[int], dilations: list[int]
) -> list[tuple[int, int]]:
    pad_type = call.get("pad_type", "valid")
    n = len(spatial)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        pad = call.ints("pad", [0] * (2 * n))
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if pad_type == "same" else (large, small))
        return pads
    raise call.unsupported(f"pad_type {pad_type!r}")


@register("conv")
def _conv(call: Call) -> Any:
    """N-d grouped convolution: strided window views (im2col) times the weights, one matmul per group."""
    x, weight = _wide(call["x"]), _wide(call["weight"])
    n = x.ndim - 2
    kernel = weight.shape[2:]
    strides = call.ints("strides", [1] * n)
    dilations = call.ints("dilations", [1] * n)
    groups = int(call.scalar("groups", 1))
    pads = _conv_padding(call, x.shape[2:], kernel, strides, dilations)
    x = np.pad(x, [(0, 0), (0, 0), *pads])
    batch, channels = x.shape[:2]
    if n == 1 and groups == channels == weight.shape[0] and strides == [1] and dilations == [1]:
        # one input and one output channel per group (the estimator's autocorrelations, whose weight
        # is the signal itself): a float32 correlation per channel, without the im2col copy
        out = np.stack(
            [
                np.stack([np.correlate(x[b, g], weight[g, 0], "valid") for g in range(groups)])
                for b in range(batch)
            ]
        )
        if "bias" in call:
            out = out + _wide(call["bias"]).reshape(1, -1, 1)
        return out
    span = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True))
    windows = sliding_window_view(x, span, axis=tuple(range(2, 2 + n)))
    steps = (*(slice(None, None, s) for s in strides), *(slice(None, None, d) for d in dilations))
    index = (slice(None), slice(None), *steps)  # (a tuple first: x[a, *b] is 3.11 syntax)
    windows = windows[index]  # [B, C, *out, *kernel]
    out_spatial = windows.shape[2 : 2 + n]
    positions = int(np.prod(out_spatial))
    # im2col: [B, G, positions, Cg * taps] @ [G, Cg * taps, Og] -> [B, G, positions, Og]
    windows = windows.reshape(batch, groups, channels // groups, *out_spatial, *kernel)
    order = (0, 1, *range(3, 3 + n), 2, *range(3 + n, 3 + 2 * n))
    columns = windows.transpose(order).reshape(batch, groups, positions, -1)
    weight = weight.reshape(groups, weight.shape[0] // groups, -1)
    if groups == 1:  # one 2-D product: BLAS takes the transposed weight as it is (a 4-D batched
        # matmul with a transposed view falls back to numpy's slow loop: 30x slower on the DFT conv)
        out = (columns.reshape(batch * positions, -1) @ weight[0].T).reshape(batch, 1, positions, -1)
        out = out.transpose(0, 1, 3, 2)
    else:
        out = np.matmul(columns, weight.transpose(0, 2, 1)[None]).transpose(0, 1, 3, 2)
    out = out.reshape(batch, -1, *out_spatial)
    if "bias" in call:
        out = out + _wide(call["bias"]).reshape(1, -1, *([1] * n))
    return out


_LSTM_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda v: np.maximum(v, 0),
    "linear": lambda v: v,
}


@register("lstm")
def _lstm(call: Call) -> Any:
    """MIL lstm: x [T, B, I]; gates in [input, forget, output, cell] order; bias = b_ih + b_hh."""
    x = _wide(call["x"])
    steps, batch, _ = x.shape
    direction = call.get("direction", "forward")
    if "clip" in call:
        raise call.unsupported("lstm 'clip'")
    names = [call.get(k, d) for k, d in (("recurrent_activation", "sigmoid"), ("cell_activation", "tanh"))]
    names.append(call.get("activation", "tanh"))
    for name in names:
        if name not in _LSTM_ACTIVATIONS:
            raise call.unsupported(f"lstm activation {name!r}")
    rec_act, cell_act, act = (_LSTM_ACTIVATIONS[n] for n in names)
    round_to = numpy_dtype(call.out_type(0).dtype)  # recurrent state kept in the op's precision

    def run(suffix: str, h: np.ndarray, c: np.ndarray, order: range) -> tuple[np.ndarray, ...]:
        w_ih, w_hh = _wide(call["weight_ih" + suffix]), _wide(call["weight_hh" + suffix])
        hidden = w_hh.shape[1]
        bias = _wide(call.get("bias" + suffix, np.zeros(4 * hidden, np.float32)))
        peep = _wide(call.get("peephole" + suffix, np.zeros(3 * hidden, np.float32)))
        x_proj = np.matmul(x, w_ih.T) + bias
        outputs = np.zeros((steps, batch, hidden), np.float32)
        for t in order:
            gates = x_proj[t] + h @ w_hh.T
            i = rec_act(gates[:, :hidden] + peep[:hidden] * c)
            f = rec_act(gates[:, hidden : 2 * hidden] + peep[hidden : 2 * hidden] * c)
            z = cell_act(gates[:, 3 * hidden :])
            c = (f * c + i * z).astype(round_to).astype(np.float32)
            o = rec_act(gates[:, 2 * hidden : 3 * hidden] + peep[2 * hidden :] * c)
            h = (o * act(c)).astype(round_to).astype(np.float32)
            outputs[t] = h
        return outputs, h, c

    h0, c0 = _wide(call["initial_h"]).astype(np.float32), _wide(call["initial_c"]).astype(np.float32)
    forward, backward = range(steps), range(steps - 1, -1, -1)
    if direction in ("forward", "reverse"):
        seq, h, c = run("", h0, c0, forward if direction == "forward" else backward)
        last = seq[-1:] if direction == "forward" else seq[:1]
    elif direction == "bidirectional":
        hidden = h0.shape[1] // 2
        seq_f, h_f, c_f = run("", h0[:, :hidden], c0[:, :hidden], forward)
        seq_b, h_b, c_b = run("_back", h0[:, hidden:], c0[:, hidden:], backward)
        seq = np.concatenate([seq_f, seq_b], axis=2)
        last = np.concatenate([seq_f[-1:], seq_b[:1]], axis=2)
        h, c = np.concatenate([h_f, h_b], axis=1), np.concatenate([c_f, c_b], axis=1)
    else:
        raise call.unsupported(f"lstm direction {direction!r}")
    return (seq if call.get("output_sequence", False) else last), h, c


# shapes and indexing -------------------------------------------------------------------------------------


@register("transpose")
def _transpose(call: Call) -> Any:
    return np.transpose(call["x"], call.ints("perm"))


@register("reshape")
def _reshape(call: Call) -> Any:
    x = call["x"]
    shape = call.ints("shape")
    if len(shape) == x.ndim:  # 0 keeps that dimension of x
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return np.reshape(x, shape)


@register("squeeze")
def _squeeze(call: Call) -> Any:
    x = call["x"]
    if "axes" not in call:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(call.ints("axes")))


@register("expand_dims")
def _expand_dims(call: Call) -> Any:
    x = np.asarray(call["x"])
    rank = x.ndim + len(call.ints("axes"))
    axes = sorted(_axis(a, rank) for a in call.ints("axes"))
    shape = list(x.shape)
    for axis in axes:
        shape.insert(axis, 1)
    return x.reshape(shape)


def _slice_index(call: Call, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """slice_by_index / slice_update arguments as a numpy index (squeezed axes as integers)."""
    rank = len(shape)
    begin, end = call.ints("begin"), call.ints("end")
    stride = call.ints("stride", [1] * rank)
    begin_mask = [bool(v) for v in np.asarray(call.get("begin_mask", [False] * rank)).reshape(-1)]
    end_mask = [bool(v) for v in np.asarray(call.get("end_mask", [False] * rank)).reshape(-1)]
    squeeze_mask = [bool(v) for v in np.asarray(call.get("squeeze_mask", [False] * rank)).reshape(-1)]
    index: list[Any] = []
    for axis in range(rank):
        if squeeze_mask[axis]:
            index.append(begin[axis])
            continue
        index.append(
            slice(
                None if begin_mask[axis] else begin[axis], None if end_mask[axis] else end[axis], stride[axis]
            )
        )
    return tuple(index)


@register("slice_by_index")
def _slice_by_index(call: Call) -> Any:
    x = call["x"]
    return np.asarray(x[_slice_index(call, x.shape)])


@register("slice_by_size")
def _slice_by_size(call: Call) -> Any:
    x = call["x"]
    begin, size = call.ints("begin"), call.ints("size")
    index = []
    for axis, (b, s) in enumerate(zip(begin, size, strict=True)):
        b = _axis(b, x.shape[axis])
        index.append(slice(b, None if s == -1 else b + s))
    return x[tuple(index)]


@register("slice_update")
def _slice_update(call: Call) -> Any:
    x = np.array(call["x"])  # a copy: ops never modify their inputs
    index = _slice_index(call, x.shape)
    target_shape = x[index].shape
    update = call["update"]
    if update.shape != target_shape:
        raise InterpreterError(f"{call.op.describe()}: update {update.shape} for a slice {target_shape}")
    x[index] = update
    return x


@register("concat")
def _concat(call: Call) -> Any:
    values = call.values("values")
    axis = _axis(int(call.scalar("axis")), values[0].ndim)
    if call.scalar("interleave", False):
        stacked = np.stack(values, axis=axis + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@register("stack")
def _stack(call: Call) -> Any:
    return np.stack(call.values("values"), axis=int(call.scalar("axis")))


@register("split")
def _split(call: Call) -> Any:
    x = call["x"]
    axis = _axis(int(call.scalar("axis")), x.ndim)
    if "split_sizes" in call:
        sizes = call.ints("split_sizes")
    else:
        count = int(call.scalar("num_splits"))
        sizes = [x.shape[axis] // count] * count
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@register("tile")
def _tile(call: Call) -> Any:
    return np.tile(call["x"], call.ints("reps"))


@register("pad")
def _pad(call: Call) -> Any:
    x = call["x"]
    pad = call.ints("pad")
    n = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    mode = call.get("mode", "constant")
    if mode == "constant":
        return np.pad(x, widths, constant_values=call.scalar("constant_val", 0.0))
    if mode in ("reflect", "replicate"):
        return np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")
    raise call.unsupported(f"pad mode {mode!r}")


@register("gather")
def _gather(call: Call) -> Any:
    x, indices = call["x"], np.asarray(call["indices"]).astype(np.int64)
    axis = _axis(int(call.scalar("axis", 0)), x.ndim)
    if int(call.scalar("batch_dims", 0)) != 0:
        raise call.unsupported("gather with batch_dims")
    size = x.shape[axis]
    if indices.size and (indices.min() < -size or indices.max() >= size):
        raise InterpreterError(f"{call.op.describe()}: index out of range for axis {axis} of size {size}")
    return np.take(x, np.where(indices < 0, indices + size, indices), axis=axis)


@register("gather_along_axis")
def _gather_along_axis(call: Call) -> Any:
    x, indices = call["x"], np.asarray(call["indices"]).astype(np.int64)
    axis = _axis(int(call.scalar("axis", 0)), x.ndim)
    size = x.shape[axis]
    if indices.size and (indices.min() < -size or indices.max() >= size):
        raise InterpreterError(f"{call.op.describe()}: index out of range for axis {axis} of size {size}")
    return np.take_along_axis(x, np.where(indices < 0, indices + size, indices), axis=axis)


# reductions and normalisation ------------------------------------------------------------------------------

_REDUCTIONS: dict[str, Callable[..., Any]] = {
    "reduce_sum": np.sum,
    "reduce_mean": np.mean,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
    "reduce_sum_square": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims),
    "reduce_l1_norm": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "reduce_l2_norm": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
    "reduce_log_sum": lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims)),
    "reduce_log_sum_exp": lambda x, axis, keepdims: np.logaddexp.reduce(x, axis=axis, keepdims=keepdims),
}


@register(*_REDUCTIONS)
def _reduce(call: Call) -> Any:
    x = _wide(call["x"])
    axes = tuple(call.ints("axes")) if call.get("axes") is not None else tuple(range(x.ndim))
    return _REDUCTIONS[call.op.type](x, axis=axes, keepdims=bool(call.scalar("keep_dims", False)))


@register("reduce_argmax", "reduce_argmin")
def _reduce_arg(call: Call) -> Any:
    x = _wide(call["x"])
    axis = int(call.scalar("axis", -1))
    fn = np.argmax if call.op.type == "reduce_argmax" else np.argmin
    return fn(x, axis=axis, keepdims=bool(call.scalar("keep_dims", False)))


@register("layer_norm")
def _layer_norm(call: Call) -> Any:
    x = _wide(call["x"])
    axes = tuple(call.ints("axes")) if call.get("axes") is not None else tuple(range(x.ndim))
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + _wide(call.get("epsilon", 1e-5)))
    if "gamma" in call:
        out = out * _wide(call["gamma"])
    return out + _wide(call["beta"]) if "beta" in call else out


@register("batch_norm")
def _batch_norm(call: Call) -> Any:
    x = _wide(call["x"])
    shape = (1, -1, *([1] * (x.ndim - 2)))

    def channel(name: str, default: float) -> Any:
        return _wide(call[name]).reshape(shape) if name in call else default

    scale = channel("gamma", 1.0) / np.sqrt(channel("variance", 1.0) + _wide(call.get("epsilon", 1e-5)))
    return (x - channel("mean", 0.0)) * scale + channel("beta", 0.0)


# states ---------------------------------------------------------------------------------------------------


def _state_ref(call: Call, param: str) -> _StateRef:
    ref = call[param]
    if not isinstance(ref, _StateRef):
        raise InterpreterError(f"{call.op.describe()}: argument {param!r} is not a state")
    return ref


@register("read_state")
def _read_state(call: Call) -> Any:
    ref = _state_ref(call, "input")
    return ref.state.read_state(ref.name)


@register("write_state")
def _write_state(call: Call) -> Any:
    ref = _state_ref(call, "input")
    ref.state.write_state(ref.name, call["data"])
    return ()


@register("coreml_update_state")
def _coreml_update_state(call: Call) -> Any:
    ref = _state_ref(call, "state")
    ref.state.write_state(ref.name, call["value"])
    return ref.state.read_state(ref.name)


# compression (compile-time constants, evaluated when the package is loaded) ------------------------------


@register("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(call: Call) -> Any:
    """output = scale * (data - offset), scale and offset repeated over blocks of data."""
    scale = call["scale"]
    data = call["data"].astype(scale.dtype)
    offset = call.get("offset")
    for axis, (size, blocks) in enumerate(zip(data.shape, scale.shape, strict=True)):
        if size % blocks:
            raise InterpreterError(f"{call.op.describe()}: scale blocks do not divide axis {axis}")
        scale = np.repeat(scale, size // blocks, axis=axis)
        if offset is not None:
            offset = np.repeat(offset, size // blocks, axis=axis)
    if offset is not None:
        data = data - offset.astype(scale.dtype)
    return scale * data


@register("constexpr_lut_to_dense")
def _lut_to_dense(call: Call) -> Any:
    lut, indices = call["lut"], call["indices"]
    if "shape" in call:  # iOS 16: one flat table, indices packed into uint8 bytes
        from coreml.package import MilDType, unpack_bits

        shape = call.ints("shape")
        nbits = round(math.log2(lut.size))
        flat = unpack_bits(
            indices, MilDType(f"uint{nbits}", np.uint8, nbits, None, False), int(np.prod(shape))
        )
        return lut.reshape(-1)[flat].reshape(shape)
    # iOS 18: lut [*blocks, 2^nbits, vector_size], one table per block of indices
    if lut.shape[-1] != 1:
        raise call.unsupported("vector palettisation (lut vector size > 1)")
    table = lut[..., 0]
    grid = []
    for axis, (size, blocks) in enumerate(zip(indices.shape, table.shape[:-1], strict=True)):
        if size % blocks:
            raise InterpreterError(f"{call.op.describe()}: lut blocks do not divide axis {axis}")
        position = np.arange(size) // (size // blocks)
        grid.append(position.reshape([-1 if a == axis else 1 for a in range(indices.ndim)]))
    index = (*grid, indices.astype(np.int64))  # (a tuple first: x[*a, b] is 3.11 syntax)
    return table[index]


@register("constexpr_affine_dequantize")
def _affine_dequantize(call: Call) -> Any:
    data = call["quantized_data"]
    axis = _axis(int(call.scalar("axis")), data.ndim)
    shape = [-1 if a == axis else 1 for a in range(data.ndim)]
    scale, zero_point = call["scale"], call["zero_point"]
    scale = scale.reshape(shape) if scale.ndim else scale
    zero_point = zero_point.reshape(shape) if zero_point.ndim else zero_point
    return ((data.astype(np.float32) - zero_point.astype(np.float32)) * scale.astype(np.float32)).astype(
        scale.dtype
    )


@register("constexpr_cast")
def _constexpr_cast(call: Call) -> Any:
    return call["source_val"]


CONSTEXPR_OPS = frozenset(name for name in OPS if name.startswith("constexpr_"))


# -- execution --------------------------------------------------------------------------------------------


def _round_bf16(values: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest bfloat16 (ties to even), held in float32."""
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def _cast(value: Any, mil_dtype: str) -> Any:
    if mil_dtype == "string":
        return value
    array = np.asarray(value)
    if mil_dtype == "bf16":
        return _round_bf16(array.astype(np.float32))
    dtype = numpy_dtype(mil_dtype)
    return array if array.dtype == dtype else array.astype(dtype)


def _check_shape(value: Any, ttype: TensorType, op: Op) -> None:
    shape = np.shape(value)
    declared = ttype.shape
    if len(shape) != len(declared) or any(
        d is not None and d != s for d, s in zip(declared, shape, strict=False)
    ):
        raise InterpreterError(f"{op.describe()}: produced shape {list(shape)}, the program declares {ttype}")


# Ops that run without building a Call: given a step whose arguments are resolved, a builder returns a
# function of the environment (or None: the op runs through its implementation). They compute exactly
# what the implementations above compute; they only skip re-reading constant arguments on every call
# (a chunk of the package runs about 800 ops, most of them on a few hundred numbers, where binding and
# parsing arguments cost more than the arithmetic).
FastFn = Callable[[Mapping[str, Any]], Any]
_FAST: dict[str, Callable[[_Step], FastFn | None]] = {}


def _fast(*names: str) -> Callable[[Callable[[_Step], FastFn | None]], Callable[[_Step], FastFn | None]]:
    def wrap(builder: Callable[[_Step], FastFn | None]) -> Callable[[_Step], FastFn | None]:
        for name in names:
            _FAST[name] = builder
        return builder

    return wrap


def _operand(step: _Step, param: str) -> Callable[[Mapping[str, Any]], Any] | None:
    """A getter of a single-valued argument, widened from fp16 as the implementations do; None when
    the argument is missing or a list."""
    if param in step.attributes:
        values = step.attributes[param]
        if len(values) != 1:
            return None
        value = _wide(values[0])
        return lambda env: value
    sources = dict(step.bindings).get(param)
    if sources is None or len(sources) != 1 or sources[0][0] is None:
        return None
    name = sources[0][0]
    if step.var_types.get(name) in ("fp32", "int32", "bool"):  # nothing to widen: a plain lookup
        return operator.itemgetter(name)
    return lambda env: _wide(env[name])


def _only_dynamic(step: _Step, *params: str) -> bool:
    """Whether every argument other than ``params`` is a constant (so it can be read once)."""
    return all(param in params for param, _ in step.bindings)


@_fast(*_BINARY)
def _fast_binary(step: _Step) -> FastFn | None:
    fn = _BINARY[step.op.type]
    x, y = _operand(step, "x"), _operand(step, "y")
    if x is None or y is None:
        return None
    return lambda env: fn(x(env), y(env))


@_fast(*(name for name in _UNARY if name != "identity"))
def _fast_unary(step: _Step) -> FastFn | None:
    fn, x = _UNARY[step.op.type], _operand(step, "x")
    return None if x is None else lambda env: fn(x(env))


@_fast("select")
def _fast_select(step: _Step) -> FastFn | None:
    cond, a, b = _operand(step, "cond"), _operand(step, "a"), _operand(step, "b")
    if cond is None or a is None or b is None:
        return None
    return lambda env: np.where(cond(env), a(env), b(env))


@_fast("clip")
def _fast_clip(step: _Step) -> FastFn | None:
    x, lo, hi = _operand(step, "x"), _operand(step, "alpha"), _operand(step, "beta")
    if x is None or lo is None or hi is None:
        return None
    return lambda env: np.minimum(np.maximum(x(env), lo(env)), hi(env))


@_fast("cast", "identity")
def _fast_pass(step: _Step) -> FastFn | None:
    return _operand(step, "x")  # a cast: the declared output type does it


@_fast("expand_dims", "squeeze", "reshape", "slice_by_index", "transpose", *_REDUCTIONS, "fill_like")
def _fast_static(step: _Step) -> FastFn | None:
    """Ops whose result depends on the one tensor argument and constants: the implementation runs
    once per input shape on a probe of that shape to learn what to do, then a cached numpy call does it.
    Shapes and indices come from the constants; values from the input."""
    kind = step.op.type
    data_param = {"fill_like": "ref_tensor"}.get(kind, "x")
    if not _only_dynamic(step, data_param):
        return None
    get = _operand(step, data_param)
    if get is None:
        return None
    static = dict(step.attributes)
    op = step.op
    if kind in ("expand_dims", "squeeze", "reshape"):
        shapes: dict[tuple[int, ...], tuple[int, ...]] = {}

        def reshape(env: Mapping[str, Any]) -> Any:
            x = np.asarray(get(env))
            shape = shapes.get(x.shape)
            if shape is None:
                shape = shapes[x.shape] = np.shape(OPS[kind](Call(op, {**static, data_param: [x]})))
            return x.reshape(shape)

        return reshape
    if kind == "slice_by_index":
        indices: dict[tuple[int, ...], tuple[Any, ...]] = {}

        def slice_(env: Mapping[str, Any]) -> Any:
            x = get(env)
            index = indices.get(x.shape)
            if index is None:
                index = indices[x.shape] = _slice_index(Call(op, {**static, "x": [x]}), x.shape)
            return np.asarray(x[index])

        return slice_
    call = Call(op, static)
    if kind == "transpose":
        perm = call.ints("perm")
        return lambda env: np.transpose(get(env), perm)
    if kind == "fill_like":
        value = call.scalar("value", 0.0)
        return lambda env: np.full(np.shape(get(env)), value)
    fn = _REDUCTIONS[kind]
    keepdims = bool(call.scalar("keep_dims", False))
    if call.get("axes") is None:  # every axis
        return lambda env: fn(x := get(env), axis=tuple(range(np.ndim(x))), keepdims=keepdims)
    axes = tuple(call.ints("axes"))
    return lambda env: fn(get(env), axis=axes, keepdims=keepdims)


@_fast("pad")
def _fast_pad(step: _Step) -> FastFn | None:
    """Constant padding into a preallocated array (numpy's ``pad`` costs tens of microseconds per call)."""
    get = _operand(step, "x")
    call = Call(step.op, step.attributes)
    if get is None or not _only_dynamic(step, "x") or call.get("mode", "constant") != "constant":
        return None
    pad = call.ints("pad")
    if min(pad, default=0) < 0:
        return None
    value = call.scalar("constant_val", 0.0)
    n = len(pad) // 2

    def pad_(env: Mapping[str, Any]) -> Any:
        x = np.asarray(get(env))
        widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
        sizes = list(zip(x.shape, widths, strict=True))
        out = np.full([size + lo + hi for size, (lo, hi) in sizes], value, x.dtype)
        out[tuple(slice(lo, lo + size) for size, (lo, _) in sizes)] = x
        return out

    return pad_


class _Step:
    """One op, resolved once when the package is loaded, so that a call does no more than bind, run, cast
    and check: its implementation, the constant arguments it binds (attributes, and inputs that name a
    const), where each other argument comes from, a fast form when it has one (:data:`_FAST`), and for
    each output the numpy type to cast to and the shape to expect (``None``: a cast or check that
    needs the general path, as for bf16, strings and shapes with free dimensions)."""

    __slots__ = ("attributes", "bindings", "fast", "impl", "op", "outputs", "plain", "var_types")

    def __init__(
        self, op: Op, consts: Mapping[str, Any] | None = None, var_types: Mapping[str, str] | None = None
    ) -> None:
        consts = consts or {}
        self.var_types = var_types or {}  # declared MIL type of each variable, by name (when known)
        self.op = op
        self.impl = OPS[op.type]
        # iOS 16 constexpr ops keep their operands as attributes; everything else binds inputs
        self.attributes = {key: [value] for key, value in op.attributes.items() if value is not None}
        self.bindings = []
        for param, args in op.inputs.items():
            if args and all(arg.name is None or arg.name in consts for arg in args):
                self.attributes[param] = [arg.value if arg.name is None else consts[arg.name] for arg in args]
            else:
                self.bindings.append((param, [(arg.name, arg.value) for arg in args]))
        self.outputs = []
        for name, ttype in op.outputs:
            fast_dtype = None if ttype.dtype in ("string", "bf16") else numpy_dtype(ttype.dtype)
            static_shape = None if None in ttype.shape else tuple(ttype.shape)
            self.outputs.append((name, ttype, fast_dtype, static_shape))
        builder = _FAST.get(op.type)
        self.fast = builder(self) if builder is not None and len(self.outputs) == 1 else None
        # a fast form with one output of a fixed numeric type and shape: the shortest way through execute
        self.plain = self.fast is not None and None not in self.outputs[0][2:]

    def _execute_plain(self, fast: FastFn, env: Mapping[str, Any], into: dict[str, Any]) -> None:
        """:meth:`execute` for a fast form with one output of a fixed numeric type and shape."""
        name, ttype, dtype, shape = self.outputs[0]
        try:
            value = fast(env)
        except (InterpreterError, InputError):
            raise
        except Exception as exc:  # a numpy error inside an op: say which op
            raise InterpreterError(f"{self.op.describe()} failed: {type(exc).__name__}: {exc}") from exc
        if type(value) is not np.ndarray:
            value = np.asarray(value)
        if value.dtype != dtype:
            value = value.astype(dtype)
        if value.shape != shape:
            _check_shape(value, ttype, self.op)
        into[name] = value

    def execute(self, env: Mapping[str, Any], into: dict[str, Any]) -> None:
        """Run the op on the values in ``env``; its outputs, cast and checked, go into ``into``."""
        if self.plain and self.fast is not None:
            self._execute_plain(self.fast, env, into)
            return
        op = self.op
        try:
            if self.fast is not None:
                result = self.fast(env)
            else:
                args = dict(self.attributes)
                for param, sources in self.bindings:
                    args[param] = [env[name] if name is not None else value for name, value in sources]
                result = self.impl(Call(op, args))
        except (InterpreterError, InputError):
            raise
        except Exception as exc:  # a numpy error inside an op: say which op
            raise InterpreterError(f"{op.describe()} failed: {type(exc).__name__}: {exc}") from exc
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(self.outputs):
            raise InterpreterError(
                f"{op.describe()}: produced {len(results)} outputs, declares {len(self.outputs)}"
            )
        for (name, ttype, fast_dtype, static_shape), value in zip(self.outputs, results, strict=True):
            if fast_dtype is None:  # bf16, strings: the general cast and check
                value = _cast(value, ttype.dtype)
                _check_shape(value, ttype, op)
            else:
                value = value if isinstance(value, np.ndarray) else np.asarray(value)
                if value.dtype != fast_dtype:
                    value = value.astype(fast_dtype)
                if static_shape is None or value.shape != static_shape:
                    _check_shape(value, ttype, op)
            into[name] = value


class InterpretedModel:
    """A loaded package, ready to predict. Build it with :func:`load_package`."""

    def __init__(self, package: Package) -> None:
        self.package = package
        self.inputs: list[Feature] = package.inputs
        self.outputs: list[Feature] = package.outputs
        self.states: list[Feature] = package.states
        self.metadata = package.metadata
        self.user_defined_metadata = package.metadata.user_defined
        self._state_types = {n: t for n, t in package.function_inputs.items() if t.is_state}
        self._refuse_unknown_ops()
        self._consts: dict[str, Any] = {}
        self._plan: list[_Step] = []
        self._prepare()

    def _refuse_unknown_ops(self) -> None:
        unknown = [op for op in self.package.operations if op.type != "const" and op.type not in OPS]
        if unknown:
            listed = "; ".join(op.describe() for op in unknown)
            raise UnsupportedOpError(f"{self.package.path}: unsupported MIL op {listed}")

    def _prepare(self) -> None:
        """Materialise const and constexpr ops once; check every variable is defined before use."""
        defined = set(self.package.function_inputs)
        var_types = {name: ttype.dtype for name, ttype in self.package.function_inputs.items()}
        for op in self.package.operations:
            var_types.update((name, ttype.dtype) for name, ttype in op.outputs)
        for op in self.package.operations:
            for param, args in op.inputs.items():
                for arg in args:
                    if arg.name is not None and arg.name not in defined:
                        raise InterpreterError(
                            f"{op.describe()}: argument {param!r} uses undefined {arg.name!r}"
                        )
            if op.type == "const":
                (name, ttype), value = op.outputs[0], op.attributes.get("val")
                if value is None:
                    raise InterpreterError(f"{op.describe()}: const without a value")
                self._consts[name] = _cast(value, ttype.dtype)
            elif op.type in CONSTEXPR_OPS:
                _Step(op).execute(self._consts, self._consts)
            else:
                self._plan.append(_Step(op, self._consts, var_types))
            defined.update(name for name, _ in op.outputs)
        missing = [name for name in self.package.block_outputs if name not in defined]
        if missing:
            raise InterpreterError(f"program outputs {missing} are never computed")

    # -- public API ----------------------------------------------------------------------------------------

    def make_state(self) -> MLState:
        """Fresh states for one stream, all zeros (Core ML's ``model.make_state()``)."""
        if not self._state_types:
            raise InputError(f"{self.package.path} has no states")
        return MLState(self._state_types)

    def _feed(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        expected = {f.name: f for f in self.inputs}
        missing = [n for n in expected if n not in inputs]
        extra = [n for n in inputs if n not in expected]
        if missing or extra:
            raise InputError(
                f"inputs do not match the package: missing {missing}, unexpected {extra}; "
                f"it takes {[f'{f.name}: {f.dtype}{list(f.shape)}' for f in self.inputs]}"
            )
        fed = {}
        for name, feature in expected.items():
            array = np.asarray(inputs[name])
            if array.dtype.kind not in "biuf":
                raise InputError(f"input {name!r} must be numeric, got {array.dtype}")
            if feature.dtype.startswith("int") and array.dtype.kind == "f":
                raise InputError(f"input {name!r} is {feature.dtype}; got floating point values")
            if not _shape_allowed(array.shape, feature):
                raise InputError(
                    f"input {name!r} must have shape {list(feature.shape)}, got {list(array.shape)}"
                )
            ttype = self.package.function_inputs.get(name)
            fed[name] = _cast(array, ttype.dtype if ttype else feature.dtype)
        return fed

    def run(self, inputs: Mapping[str, Any], state: MLState | None = None) -> dict[str, Any]:
        """Execute the program; every variable's value by name (for op-level comparisons)."""
        env: dict[str, Any] = dict(self._consts)
        env.update(self._feed(inputs))
        if self._state_types:
            if not isinstance(state, MLState):
                raise InputError(
                    f"this package keeps states {list(self._state_types)}: pass state=model.make_state()"
                )
            if set(state.names) != set(self._state_types):
                raise InputError(f"state holds {state.names}, the package keeps {list(self._state_types)}")
            env.update({name: _StateRef(state, name) for name in self._state_types})
        elif state is not None:
            raise InputError(f"{self.package.path} has no states; do not pass one")
        with np.errstate(all="ignore"):  # fp16 overflow, log(0)...: results to observe, not crashes
            for step in self._plan:
                step.execute(env, env)
        return {k: v for k, v in env.items() if not isinstance(v, _StateRef)}

    def predict(self, inputs: Mapping[str, Any], state: MLState | None = None) -> dict[str, np.ndarray]:
        """Outputs by name for one call, in the declared output types (like ``MLModel.predict``)."""
        env = self.run(inputs, state)
        result = {}
        for feature in self.outputs:
            if feature.name not in env:
                raise InterpreterError(f"output {feature.name!r} is not computed by the program")
            result[feature.name] = np.array(_cast(env[feature.name], feature.dtype))
        return result

    def const(self, name: str) -> np.ndarray:
        """A materialised constant (weights after decompression), by variable name."""
        return self._consts[name]


def _shape_allowed(shape: tuple[int, ...], feature: Feature) -> bool:
    if feature.enumerated_shapes:
        return tuple(shape) in {tuple(s) for s in feature.enumerated_shapes}
    if feature.shape_ranges:
        return len(shape) == len(feature.shape_ranges) and all(
            lo <= s and (hi < 0 or s <= hi) for s, (lo, hi) in zip(shape, feature.shape_ranges, strict=True)
        )
    return tuple(shape) == tuple(feature.shape)


def load_package(path: str | Path, function_name: str | None = None) -> InterpretedModel:
    """Read the ``.mlpackage`` at ``path`` and return a model whose ``predict`` runs it with numpy."""
    return InterpretedModel(read_package(path, function_name))
