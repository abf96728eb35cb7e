"""What a package costs: ops by type, weights, bytes on disk, multiply-adds per call.

Everything is read from the saved package (:func:`coreml.package.read_package`), so the report
describes what ships, including what the converter added (casts, decompression ops).

Definitions, so numbers compare across packages:
- ``n_weights``: elements of every floating-point constant tensor (rank >= 1) the program computes
  with; a compressed weight counts once, as its decompressed tensor, and the quantised data, scales
  and tables that only feed a ``constexpr_*`` op are not counted again. Fixed tensors of the front-end
  (DFT kernels, mel matrix) are constants like any other and are counted.
- ``multiply_adds``: per ``predict`` call, from declared shapes, for the ops that dominate the work
  (conv, linear, matmul, lstm); elementwise ops, reductions and casts are not counted.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from coreml.package import Op, Package, TensorType, read_package


@dataclasses.dataclass
class CostReport:
    op_histogram: dict[str, int]  # non-const ops by type, most frequent first
    const_ops: int
    n_weights: int
    weight_file_bytes: int
    package_bytes: int
    multiply_adds: int  # per predict call

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def op_histogram(package: Package, include_const: bool = False) -> dict[str, int]:
    """Op types and how often each occurs, most frequent first (ties by name)."""
    counts = Counter(op.type for op in package.operations if include_const or op.type != "const")
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _is_weight(value: Any) -> TypeGuard[np.ndarray]:
    return isinstance(value, np.ndarray) and value.ndim >= 1 and value.dtype.kind == "f"


def _consumers(package: Package, constexpr: bool) -> set[str]:
    """Variables read by constexpr ops (``constexpr=True``) or by the other ops."""
    return {
        arg.name
        for op in package.operations
        if op.type.startswith("constexpr_") == constexpr
        for args in op.inputs.values()
        for arg in args
        if arg.name
    }


def count_weights(package: Package) -> int:
    """Elements of the floating-point constant tensors the program computes with (see module doc)."""
    computed_with = _consumers(package, constexpr=False) | set(package.block_outputs)
    total = 0
    for op in package.operations:
        if op.type == "const":
            value = op.attributes.get("val")
            if _is_weight(value) and op.outputs[0][0] in computed_with:
                total += value.size
        elif op.type.startswith("constexpr_"):
            for name, ttype in op.outputs:
                if name in computed_with and ttype.dtype in ("fp16", "fp32", "bf16", "fp64"):
                    total += int(np.prod([d or 0 for d in ttype.shape]))
        else:
            total += sum(a.value.size for args in op.inputs.values() for a in args if _is_weight(a.value))
    return total


def _types(package: Package) -> dict[str, TensorType]:
    types = dict(package.function_inputs)
    for op in package.operations:
        types.update(dict(op.outputs))
    return types


def _flag(op: Op, param: str, consts: dict[str, Any]) -> bool:
    args = op.inputs.get(param)
    if not args:
        return False
    value = consts.get(args[0].name) if args[0].name else args[0].value
    return bool(np.asarray(value).item()) if value is not None else False


def _shape(op: Op, param: str, types: dict[str, TensorType]) -> tuple[int, ...] | None:
    args = op.inputs.get(param)
    if not args:
        return None
    arg = args[0]
    if arg.name is not None:
        return types[arg.name].fixed_shape
    return tuple(np.shape(arg.value))


def _op_multiply_adds(op: Op, types: dict[str, TensorType], consts: dict[str, Any]) -> int:
    out = op.outputs[0][1].fixed_shape if op.outputs else ()
    if out is None:
        return 0
    out_size = int(np.prod(out))
    if op.type == "conv":
        weight = _shape(op, "weight", types)
        return out_size * int(np.prod(weight[1:])) if weight else 0
    if op.type == "linear":
        weight = _shape(op, "weight", types)
        return out_size * weight[1] if weight else 0
    if op.type == "matmul":
        x = _shape(op, "x", types)
        if not x:
            return 0
        flipped = _flag(op, "transpose_x", consts) and len(x) > 1
        return out_size * (x[-2] if flipped else x[-1])
    if op.type == "lstm":
        x, w_hh = _shape(op, "x", types), _shape(op, "weight_hh", types)
        if not x or not w_hh:
            return 0
        steps, batch, inputs = x
        hidden = w_hh[1]
        directions = 2 if "weight_hh_back" in op.inputs else 1
        return directions * steps * batch * 4 * hidden * (inputs + hidden)
    return 0


def multiply_adds(package: Package) -> int:
    """Multiply-adds of one predict call in conv, linear, matmul and lstm ops (declared shapes)."""
    types = _types(package)
    consts = {op.outputs[0][0]: op.attributes.get("val") for op in package.operations if op.type == "const"}
    return sum(_op_multiply_adds(op, types, consts) for op in package.operations)


def cost_report(package: Package | str | Path) -> CostReport:
    pkg = package if isinstance(package, Package) else read_package(package)
    histogram = op_histogram(pkg)
    return CostReport(
        op_histogram=histogram,
        const_ops=sum(op.type == "const" for op in pkg.operations),
        n_weights=count_weights(pkg),
        weight_file_bytes=sum(w.path.stat().st_size for w in pkg.weight_files.values()),
        package_bytes=pkg.size_on_disk_bytes(),
        multiply_adds=multiply_adds(pkg),
    )
