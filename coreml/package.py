"""Read a saved ``.mlpackage`` from disk by ourselves, without Core ML.

coremltools converts on Linux but cannot run a package here, and its own loader (``ct.models.MLModel``)
would only hand the files to Core ML. To prove a package right on Linux we read exactly the bytes the
iPhone gets:

- ``Manifest.json`` names the root model file, normally ``Data/com.apple.CoreML/model.mlmodel``;
- that file is the ``Model`` protobuf (we use coremltools' generated message classes to parse it);
  its ``mlProgram`` holds functions, each with one block of operations per opset;
- large constants live in ``weights/weight.bin`` next to it, in the MIL blob storage format
  (version 2, little-endian), which we read and validate here (:class:`WeightFile`).

The result is a plain :class:`Package`: feature descriptions, metadata and a list of :class:`Op` whose
arguments are either variable names or already decoded numpy constants. :mod:`coreml.interpreter`
executes it; nothing here runs anything.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np


class PackageError(ValueError):
    """The package on disk is missing a part, malformed, or uses a feature we do not read."""


class CorruptWeightsError(PackageError):
    """``weights/weight.bin`` does not hold what the program says it holds (truncated, overwritten...)."""


# -- data types ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MilDType:
    """One MIL data type: its name in MIL text (``fp16``), how we hold it in numpy, its storage width."""

    name: str
    numpy: Any  # numpy dtype we hold values in (sub-byte ints widen to int8/uint8, bf16 to float32)
    bits: int  # storage width in weight.bin and in packed inline bytes
    blob_code: int | None  # BlobDataType code in weight.bin, None when it cannot be stored there
    signed: bool = True


# Codes from MIL.proto's DataType enum; blob codes from MILBlob/Blob/BlobDataType.hpp.
MIL_DTYPES: dict[int, MilDType] = {
    1: MilDType("bool", np.bool_, 8, None),
    2: MilDType("string", np.object_, 0, None),
    10: MilDType("fp16", np.float16, 16, 1),
    11: MilDType("fp32", np.float32, 32, 2),
    12: MilDType("fp64", np.float64, 64, None),
    13: MilDType("bf16", np.float32, 16, 5),
    21: MilDType("int8", np.int8, 8, 4),
    22: MilDType("int16", np.int16, 16, 6),
    23: MilDType("int32", np.int32, 32, 14),
    24: MilDType("int64", np.int64, 64, None),
    25: MilDType("int4", np.int8, 4, 8),
    31: MilDType("uint8", np.uint8, 8, 3, signed=False),
    32: MilDType("uint16", np.uint16, 16, 7, signed=False),
    33: MilDType("uint32", np.uint32, 32, 15, signed=False),
    34: MilDType("uint64", np.uint64, 64, None, signed=False),
    35: MilDType("uint4", np.uint8, 4, 11, signed=False),
    36: MilDType("uint2", np.uint8, 2, 10, signed=False),
    37: MilDType("uint1", np.uint8, 1, 9, signed=False),
    38: MilDType("uint6", np.uint8, 6, 13, signed=False),
    39: MilDType("uint3", np.uint8, 3, 12, signed=False),
}
MIL_DTYPE_BY_NAME: dict[str, MilDType] = {d.name: d for d in MIL_DTYPES.values()}
BLOB_CODES: dict[int, MilDType] = {d.blob_code: d for d in MIL_DTYPES.values() if d.blob_code is not None}

# ArrayFeatureType.ArrayDataType of the model description (FeatureTypes.proto).
_ARRAY_DTYPES = {65552: "fp16", 65568: "fp32", 65600: "fp64", 131104: "int32", 131080: "int8"}


def _mil_dtype(code: int, what: str) -> MilDType:
    if code not in MIL_DTYPES:
        raise PackageError(f"{what}: unknown MIL data type code {code}")
    return MIL_DTYPES[code]


def unpack_bits(packed: np.ndarray, dtype: MilDType, count: int) -> np.ndarray:
    """Sub-byte integers packed least-significant bit first (coremltools' layout) -> one per element."""
    bits = np.unpackbits(packed.astype(np.uint8), bitorder="little")
    if bits.size < count * dtype.bits:
        raise PackageError(f"{count} {dtype.name} values need {count * dtype.bits} bits, got {bits.size}")
    per_value = bits[: count * dtype.bits].reshape(count, dtype.bits).astype(np.int16)
    values = per_value @ (1 << np.arange(dtype.bits, dtype=np.int16))
    if dtype.signed:
        values = np.where(values >= 1 << (dtype.bits - 1), values - (1 << dtype.bits), values)
    return values.astype(dtype.numpy)


def _from_bytes(raw: bytes, dtype: MilDType, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Decode little-endian storage of ``dtype`` (as in weight.bin and inline ``bytes``) to an array."""
    count = int(np.prod(shape, dtype=np.int64))
    if dtype.bits < 8:
        values = unpack_bits(np.frombuffer(raw, np.uint8), dtype, count)
    elif dtype.name == "bf16":
        halves = np.frombuffer(raw, "<u2", count=count).astype(np.uint32)
        values = (halves << 16).view(np.float32)
    else:
        values = np.frombuffer(raw, np.dtype(dtype.numpy).newbyteorder("<"), count=count)
        values = values.astype(dtype.numpy)  # native byte order, and a writeable copy
    return values.reshape(shape)


def storage_bytes(dtype: MilDType, shape: tuple[int, ...]) -> int:
    """Bytes that ``shape`` values of ``dtype`` occupy in weight.bin."""
    return (int(np.prod(shape, dtype=np.int64)) * dtype.bits + 7) // 8


# -- weight.bin -----------------------------------------------------------------------------------------

_HEADER = struct.Struct("<II")  # count, version; the rest of the 64-byte header is reserved
_RECORD = struct.Struct("<IIQQQ")  # sentinel, dtype, size in bytes, data offset, padding bits
_RECORD_BYTES = 64
_SENTINEL = 0xDEADBEEF


class WeightFile:
    """The MIL blob storage file: a 64-byte header, then per blob a 64-byte record and its data.

    The whole file is read once (our packages are a few MB) and every access is bounds-checked, so a
    truncated or overwritten file fails with the offset and the constant that needed it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise CorruptWeightsError(f"cannot read weight file {path}: {exc}") from exc
        if len(self.data) < 64:
            raise CorruptWeightsError(f"{path}: {len(self.data)} bytes, shorter than the 64-byte header")
        self.count, self.version = _HEADER.unpack_from(self.data, 0)
        if self.version != 2:
            raise CorruptWeightsError(f"{path}: blob storage version {self.version}, expected 2")

    def read(self, offset: int, dtype: MilDType, shape: tuple[int, ...], what: str) -> np.ndarray:
        """The blob whose record starts at ``offset``, checked against the declared dtype and shape."""
        where = f"{self.path.name} at offset {offset} (for {what})"
        if offset < 64 or offset + _RECORD_BYTES > len(self.data):
            raise CorruptWeightsError(
                f"{where}: record lies outside the file ({len(self.data)} bytes); file truncated?"
            )
        sentinel, code, size, data_offset, _padding_bits = _RECORD.unpack_from(self.data, offset)
        if sentinel != _SENTINEL:
            raise CorruptWeightsError(
                f"{where}: bad blob sentinel 0x{sentinel:08X} (expected 0xDEADBEEF); file corrupt"
            )
        if code not in BLOB_CODES:
            raise CorruptWeightsError(f"{where}: unknown blob data type code {code}")
        stored = BLOB_CODES[code]
        if stored.name != dtype.name:
            raise CorruptWeightsError(f"{where}: blob holds {stored.name}, program declares {dtype.name}")
        expected = storage_bytes(dtype, shape)
        if size != expected:
            raise CorruptWeightsError(
                f"{where}: blob is {size} bytes, but {dtype.name}{list(shape)} needs {expected}"
            )
        if data_offset < offset + _RECORD_BYTES or data_offset + size > len(self.data):
            raise CorruptWeightsError(
                f"{where}: data [{data_offset}, {data_offset + size}) lies outside the file "
                f"({len(self.data)} bytes); file truncated?"
            )
        return _from_bytes(self.data[data_offset : data_offset + size], dtype, shape, where)


# -- program structure ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TensorType:
    """Declared type of a MIL value: data type name and shape (``None`` for a dimension not fixed)."""

    dtype: str
    shape: tuple[int | None, ...]
    is_state: bool = False

    @property
    def fixed_shape(self) -> tuple[int, ...] | None:
        """The shape when every dimension is fixed, else None."""
        dims = tuple(d for d in self.shape if d is not None)
        return dims if len(dims) == len(self.shape) else None

    def __str__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{'state ' if self.is_state else ''}{self.dtype}[{dims}]"


@dataclasses.dataclass(frozen=True)
class Arg:
    """One argument binding: a variable name, or a constant decoded from the program."""

    name: str | None = None
    value: Any = None


@dataclasses.dataclass
class Op:
    """One MIL operation: ``type`` (e.g. ``conv``), its name, arguments by parameter, typed outputs."""

    type: str
    name: str
    inputs: dict[str, list[Arg]]
    outputs: list[tuple[str, TensorType]]
    attributes: dict[str, Any]

    def describe(self) -> str:
        outs = ", ".join(name for name, _ in self.outputs) or "(no outputs)"
        return f"'{self.type}' (op '{self.name}', output {outs})"


@dataclasses.dataclass(frozen=True)
class Feature:
    """An input, output or state as the model description declares it for apps (and Xcode)."""

    name: str
    dtype: str  # MIL name: fp32, fp16, int32...
    shape: tuple[int, ...]  # the default shape
    description: str
    kind: str = "multiArray"  # multiArray or state (images, dictionaries... are refused)
    shape_ranges: tuple[tuple[int, int], ...] | None = None  # (lower, upper), upper -1 = unbounded
    enumerated_shapes: tuple[tuple[int, ...], ...] | None = None


@dataclasses.dataclass
class Metadata:
    short_description: str
    version: str
    author: str
    license: str
    user_defined: dict[str, str]


@dataclasses.dataclass
class Package:
    """Everything the interpreter needs from a saved package, and what a report shows of it."""

    path: Path
    specification_version: int
    function_name: str
    opset: str
    inputs: list[Feature]
    outputs: list[Feature]
    states: list[Feature]
    metadata: Metadata
    function_inputs: dict[str, TensorType]  # the MIL function's own view (states included)
    operations: list[Op]
    block_outputs: list[str]
    weight_files: dict[str, WeightFile]
    spec: Any  # the parsed Model protobuf, for whoever needs more than the above

    def size_on_disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def _tensor_type(value_type: Any, what: str) -> TensorType:
    kind = value_type.WhichOneof("type")
    is_state = kind == "stateType"
    if is_state:
        value_type = value_type.stateType.wrappedType
        kind = value_type.WhichOneof("type")
    if kind != "tensorType":
        raise PackageError(f"{what}: value of type {kind!r}; only tensors are supported")
    tensor = value_type.tensorType
    dims: list[int | None] = []
    for dim in tensor.dimensions:
        dims.append(dim.constant.size if dim.WhichOneof("dimension") == "constant" else None)
    if len(dims) != tensor.rank:
        raise PackageError(f"{what}: rank {tensor.rank} but {len(dims)} dimensions")
    return TensorType(_mil_dtype(tensor.dataType, what).name, tuple(dims), is_state)


def _immediate(tensor_value: Any, ttype: TensorType, what: str) -> Any:
    """Decode an inline ``TensorValue`` of type ``ttype`` (strings come back as str / list of str)."""
    shape = ttype.fixed_shape
    if shape is None:
        raise PackageError(f"{what}: inline constant with an unknown dimension")
    count = int(np.prod(shape, dtype=np.int64))
    dtype = MIL_DTYPE_BY_NAME[ttype.dtype]
    field = tensor_value.WhichOneof("value")
    if field is None:
        raise PackageError(f"{what}: inline constant holds no value")
    if field == "strings":
        strings = [s.decode() if isinstance(s, bytes) else s for s in tensor_value.strings.values]
        if len(strings) != count:
            raise PackageError(f"{what}: {len(strings)} strings for shape {list(shape)}")
        return strings[0] if shape == () else strings
    if field == "bytes":
        raw = tensor_value.bytes.values
        if len(raw) != storage_bytes(dtype, shape):
            raise PackageError(f"{what}: {len(raw)} bytes for {ttype}")
        return _from_bytes(raw, dtype, shape, what)
    values = list(getattr(tensor_value, field).values)
    if len(values) != count:
        raise PackageError(f"{what}: {len(values)} values for {ttype}")
    return np.array(values).astype(dtype.numpy).reshape(shape)


class _Decoder:
    """Turns ``Value`` messages into numpy arrays, reading blobs relative to the model file's folder."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.weight_files: dict[str, WeightFile] = {}

    def decode(self, value: Any, what: str) -> Any:
        ttype = _tensor_type(value.type, what)
        kind = value.WhichOneof("value")
        if kind == "immediateValue":
            if value.immediateValue.WhichOneof("value") != "tensor":
                raise PackageError(f"{what}: inline {value.immediateValue.WhichOneof('value')} unsupported")
            return _immediate(value.immediateValue.tensor, ttype, what)
        if kind == "blobFileValue":
            shape = ttype.fixed_shape
            if shape is None:
                raise PackageError(f"{what}: blob constant with an unknown dimension")
            weights = self._weight_file(value.blobFileValue.fileName, what)
            return weights.read(value.blobFileValue.offset, MIL_DTYPE_BY_NAME[ttype.dtype], shape, what)
        raise PackageError(f"{what}: value with no content")

    def _weight_file(self, file_name: str, what: str) -> WeightFile:
        if file_name not in self.weight_files:
            prefix = "@model_path/"
            if not file_name.startswith(prefix):
                raise PackageError(f"{what}: weight file {file_name!r} is not under @model_path/")
            path = (self.model_dir / file_name[len(prefix) :]).resolve()
            if not path.is_relative_to(self.model_dir.resolve()):
                raise PackageError(f"{what}: weight file {file_name!r} points outside the package")
            if not path.is_file():
                raise CorruptWeightsError(f"{what}: weight file {path} is missing")
            self.weight_files[file_name] = WeightFile(path)
        return self.weight_files[file_name]


def _attribute_value(value: Any, decoder: _Decoder, what: str) -> Any:
    if value.type.WhichOneof("type") != "tensorType":
        return None  # dictionaries (build info) and the like: nothing the interpreter needs
    return decoder.decode(value, what)


def _parse_op(proto: Any, decoder: _Decoder, index: int) -> Op:
    name_value = proto.attributes.get("name")
    first_output = proto.outputs[0].name if proto.outputs else None
    name = str(decoder.decode(name_value, "op name")) if name_value is not None else (first_output or "")
    label = f"op '{name or index}' ({proto.type})"
    if len(proto.blocks):
        raise PackageError(f"{label}: nested blocks (control flow) are not supported")
    inputs: dict[str, list[Arg]] = {}
    for param, argument in proto.inputs.items():
        args = []
        for binding in argument.arguments:
            if binding.WhichOneof("binding") == "name":
                args.append(Arg(name=binding.name))
            else:
                args.append(Arg(value=decoder.decode(binding.value, f"{label} argument {param!r}")))
        inputs[param] = args
    outputs = [(o.name, _tensor_type(o.type, f"{label} output {o.name!r}")) for o in proto.outputs]
    attributes = {
        key: _attribute_value(value, decoder, f"{label} attribute {key!r}")
        for key, value in proto.attributes.items()
        if key != "name"
    }
    return Op(proto.type, name, inputs, outputs, attributes)


def _feature(proto: Any, what: str) -> Feature:
    kind = proto.type.WhichOneof("Type")
    if kind == "stateType":
        array = proto.type.stateType.arrayType
    elif kind == "multiArrayType":
        array = proto.type.multiArrayType
    else:
        raise PackageError(
            f"{what} {proto.name!r} is of type {kind!r}; only multi-arrays and states are read"
        )
    if array.dataType not in _ARRAY_DTYPES:
        raise PackageError(f"{what} {proto.name!r}: unknown array data type {array.dataType}")
    flexibility = array.WhichOneof("ShapeFlexibility")
    ranges = enumerated = None
    if flexibility == "shapeRange":
        ranges = tuple((r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges)
    elif flexibility == "enumeratedShapes":
        enumerated = tuple(tuple(s.shape) for s in array.enumeratedShapes.shapes)
    return Feature(
        name=proto.name,
        dtype=_ARRAY_DTYPES[array.dataType],
        shape=tuple(array.shape),
        description=proto.shortDescription,
        kind="state" if kind == "stateType" else "multiArray",
        shape_ranges=ranges,
        enumerated_shapes=enumerated,
    )


def _model_file(package_dir: Path) -> Path:
    """The root model file that ``Manifest.json`` names (coremltools' default layout as a fallback)."""
    manifest_path = package_dir / "Manifest.json"
    default = package_dir / "Data" / "com.apple.CoreML" / "model.mlmodel"
    if not manifest_path.is_file():
        if default.is_file():
            return default
        raise PackageError(f"{package_dir} has no Manifest.json: not an .mlpackage")
    try:
        manifest = json.loads(manifest_path.read_text())
        root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        path: Path = (package_dir / "Data" / root["path"]).resolve()
    except (ValueError, KeyError, TypeError) as exc:
        raise PackageError(f"{manifest_path}: cannot find the root model in it ({exc!r})") from exc
    if not path.is_relative_to(package_dir.resolve()) or not path.is_file():
        raise PackageError(f"{manifest_path} names {root['path']!r}, which is not a file in the package")
    return path


def read_package(path: str | Path, function_name: str | None = None) -> Package:
    """Parse the package at ``path``: its description, metadata and the MIL program of one function.

    ``function_name`` defaults to the package's default function (``main`` for single-function models).
    Every constant, inline or in weight.bin, is decoded and validated here, so a corrupt file fails at
    load time rather than in the middle of a stream.
    """
    from coremltools.proto import Model_pb2  # the generated protobuf classes only; nothing is run

    package_dir = Path(path)
    if not package_dir.is_dir():
        raise PackageError(f"{package_dir} is not a directory: an .mlpackage is a folder")
    model_path = _model_file(package_dir)
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(model_path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError, not exported in a stable place
        raise PackageError(f"{model_path}: not a Core ML model protobuf ({exc})") from exc
    if spec.WhichOneof("Type") != "mlProgram":
        raise PackageError(f"{model_path}: a {spec.WhichOneof('Type')!r} model, not an ML program")

    description = spec.description
    name = function_name or description.defaultFunctionName or "main"
    functions = spec.mlProgram.functions
    if name not in functions:
        raise PackageError(f"{model_path}: no function {name!r} (has {sorted(functions)})")
    function = functions[name]
    if function.opset not in function.block_specializations:
        raise PackageError(f"{model_path}: function {name!r} has no block for its opset {function.opset}")
    block = function.block_specializations[function.opset]

    decoder = _Decoder(model_path.parent)
    operations = [_parse_op(op, decoder, i) for i, op in enumerate(block.operations)]
    function_inputs = {v.name: _tensor_type(v.type, f"function input {v.name!r}") for v in function.inputs}

    if description.functions:  # multifunction packages describe features per function
        descs = {f.name: f for f in description.functions}
        feature_source = descs.get(name, description)
    else:
        feature_source = description
    meta = description.metadata
    metadata = Metadata(
        short_description=meta.shortDescription,
        version=meta.versionString,
        author=meta.author,
        license=meta.license,
        user_defined=dict(meta.userDefined),
    )
    return Package(
        path=package_dir,
        specification_version=spec.specificationVersion,
        function_name=name,
        opset=function.opset,
        inputs=[_feature(f, "input") for f in feature_source.input],
        outputs=[_feature(f, "output") for f in feature_source.output],
        states=[_feature(f, "state") for f in feature_source.state],
        metadata=metadata,
        function_inputs=function_inputs,
        operations=operations,
        block_outputs=list(block.outputs),
        weight_files=decoder.weight_files,
        spec=spec,
    )
