"""Read a ``.tflite`` file into plain data with the pure-Python ``tflite`` flatbuffer package.

Nothing native ever sees the bytes: the file is checked first (size, the ``TFL3`` file
identifier, the root table and every vector it references lying inside the buffer), then
walked once into frozen records. A missing, empty, truncated or foreign file raises a
:class:`~edgeq.errors.BadInputError` that names the file and the fix.

Example::

    from edgetpu.tflite_model import read_model
    model = read_model("mobilenet_v2_1.0_224_quant.tflite")
    [op.opcode for op in model.operators][:3]   # ['CONV_2D', 'DEPTHWISE_CONV_2D', 'CONV_2D']
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import BadInputError

#: The custom op that holds what ``edgetpu_compiler`` mapped to the Edge TPU.
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
#: The SSD post-processing custom op (always runs on the CPU, by design last).
DETECTION_POSTPROCESS = "TFLite_Detection_PostProcess"

_IDENTIFIER = b"TFL3"
_MIN_SIZE = 16  # root offset + identifier + the smallest possible table
_SMALL_CONSTANT_BYTES = 64  # int32 / int64 constants read into Tensor.values
_INT_FORMATS = {"INT32": "i", "INT64": "q"}
_SEGMENT = re.compile(r"_segment_(\d+)_of_(\d+)_edgetpu\.tflite$")

#: A model as a file, or as flatbuffer bytes that this process made (named :data:`IN_MEMORY`
#: in messages).
ModelSource = str | Path | bytes
IN_MEMORY = Path("<in-memory model>")


@dataclass(frozen=True)
class Tensor:
    """One tensor of the main subgraph.

    ``dtype`` uses TFLite's spelling (``INT8``, ``UINT8``, ``INT32``, ``FLOAT32`` ...);
    ``signature`` is the shape signature (-1 for a dynamic dimension), or ``shape`` when the
    file has none; ``nbytes`` is the size of its constant data (0 for activations);
    ``values`` holds the data of small constant int32 / int64 tensors (axes, strides, sizes,
    paddings); ``is_zero`` is True for a constant whose every value is zero (a quantized one
    at its zero point).
    """

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    signature: tuple[int, ...]
    nbytes: int
    is_variable: bool
    quantized: bool
    values: tuple[int, ...] | None = None
    is_zero: bool = False

    @property
    def is_constant(self) -> bool:
        """True when the tensor's values are stored in the file (weights, biases, shapes)."""
        return self.nbytes > 0

    @property
    def is_dynamic(self) -> bool:
        """True when a dimension is unknown until run time (-1 in the shape signature)."""
        return any(d < 0 for d in self.signature)

    @property
    def size(self) -> int:
        """Number of elements."""
        count = 1
        for dim in self.shape:
            count *= max(dim, 0)
        return count


@dataclass(frozen=True)
class Operator:
    """One operator of the main subgraph, in execution order.

    ``opcode`` is the upper-case builtin name (``CONV_2D``) or the custom code
    (``TFLite_Detection_PostProcess``); ``options`` holds the builtin options by their
    schema getter names (``FusedActivationFunction``, ``DilationHFactor`` ...).
    """

    index: int
    opcode: str
    version: int
    custom: bool
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    custom_options_bytes: int = 0


@dataclass(frozen=True)
class Model:
    """The parts of a ``.tflite`` model that the analyzer and the cost model need."""

    path: Path
    file_bytes: int
    schema_version: int
    num_subgraphs: int
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    @property
    def is_compiled(self) -> bool:
        """True when ``edgetpu_compiler`` produced this model (it holds an Edge TPU op)."""
        return any(op.opcode == EDGETPU_CUSTOM_OP for op in self.operators)

    @property
    def custom_ops(self) -> list[str]:
        """Sorted names of the custom ops the model uses."""
        return sorted({op.opcode for op in self.operators if op.custom})

    @property
    def edgetpu_payload_bytes(self) -> int:
        """Bytes of compiled Edge TPU code and parameters (custom options of its ops)."""
        return sum(op.custom_options_bytes for op in self.operators
                   if op.opcode == EDGETPU_CUSTOM_OP)

    @property
    def segment(self) -> tuple[int, int] | None:
        """``(k, n)`` for a ``*_segment_k_of_n_edgetpu.tflite`` pipeline segment, else None."""
        match = _SEGMENT.search(self.path.name)
        return (int(match.group(1)), int(match.group(2))) if match else None

    def constant_inputs(self, op: Operator) -> list[Tensor]:
        """Return the constant (stored) input tensors of ``op``."""
        return [self.tensors[i] for i in op.inputs if i >= 0 and self.tensors[i].is_constant]

    def activation_inputs(self, op: Operator) -> list[Tensor]:
        """Return the non-constant input tensors of ``op`` (computed at run time)."""
        return [self.tensors[i] for i in op.inputs if i >= 0 and not self.tensors[i].is_constant]


def source_path(source: ModelSource) -> Path:
    """Return the path that names ``source`` in messages (:data:`IN_MEMORY` for bytes)."""
    return IN_MEMORY if isinstance(source, bytes) else Path(source)


def read_model_bytes(source: ModelSource) -> bytes:
    """Return the bytes of a ``.tflite`` model after checking they can be a TFLite model.

    Raises:
        BadInputError: the file is missing, unreadable, empty, too short, not a flatbuffer,
            a flatbuffer of another format (no ``TFL3`` identifier), or truncated.
    """
    if isinstance(source, bytes):
        return _checked(source, IN_MEMORY)
    path = Path(source)
    if not path.is_file():
        raise BadInputError(f"{path}: no such model file; pass the path of a .tflite model")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read the model ({exc.strerror}); check the file's "
                            "permissions") from exc
    return _checked(data, path)


def _checked(data: bytes, path: Path) -> bytes:
    """Return ``data`` when it can be a TFLite model; ``path`` names it in the error."""
    if not data:
        raise BadInputError(f"{path}: the file is empty; export the model again")
    if len(data) < _MIN_SIZE or data[4:8] != _IDENTIFIER:
        identifier = data[4:8]
        (root,) = struct.unpack_from("<I", data, 0) if len(data) >= 8 else (len(data),)
        foreign = (len(identifier) == 4 and identifier.isascii() and identifier.isalnum()
                   and 8 <= root < len(data) and root % 4 == 0)
        kind = (f"a flatbuffer of another format (file identifier {identifier.decode()!r})"
                if foreign else "not a flatbuffer")
        raise BadInputError(
            f"{path}: not a TFLite model ({kind}, no 'TFL3' file identifier); pass a .tflite "
            "file written by the TFLite converter"
        )
    (root,) = struct.unpack_from("<I", data, 0)
    if root + 4 > len(data):
        raise BadInputError(f"{path}: truncated TFLite model (root table outside the file); "
                            "copy or download it again")
    return data


def read_model(source: ModelSource) -> Model:
    """Read a ``.tflite`` model's main subgraph into a :class:`Model`.

    Raises:
        BadInputError: the file is missing, not a TFLite model, truncated or corrupt.
    """
    path = source_path(source)
    data = read_model_bytes(source)
    try:
        return _parse(path, data)
    except BadInputError:
        raise
    except Exception as exc:  # the flatbuffers runtime raises assorted errors on bad offsets
        raise BadInputError(
            f"{path}: truncated or corrupt TFLite model ({type(exc).__name__}: {exc}); "
            "copy or export it again"
        ) from exc


def custom_ops(path: ModelSource) -> list[str]:
    """Return the custom op names used by a ``.tflite`` model (e.g. ``edgetpu-custom-op``).

    Raises:
        BadInputError: the file is missing or not a valid TFLite model.
    """
    return read_model(path).custom_ops


def _parse(path: Path, data: bytes) -> Model:
    import tflite

    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() < 1:
        raise BadInputError(f"{path}: the TFLite model has no subgraph; export it again")
    buffer_sizes = [_buffer_size(model.Buffers(i), len(data), path)
                    for i in range(model.BuffersLength())]
    codes = [_opcode(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    graph = model.Subgraphs(0)
    tensors = tuple(_tensor(graph.Tensors(i), i, buffer_sizes, model)
                    for i in range(graph.TensorsLength()))
    operators = []
    for j in range(graph.OperatorsLength()):
        op = graph.Operators(j)
        if op.OpcodeIndex() >= len(codes):
            raise BadInputError(f"{path}: operator {j} uses an unknown op code; corrupt model")
        name, version, is_custom = codes[op.OpcodeIndex()]
        ins = tuple(int(i) for i in op.InputsAsNumpy()) if op.InputsLength() else ()
        outs = tuple(int(i) for i in op.OutputsAsNumpy()) if op.OutputsLength() else ()
        if any(not -1 <= i < len(tensors) for i in ins + outs):  # -1: an omitted input
            raise BadInputError(f"{path}: operator {j} references a missing tensor; corrupt model")
        custom_bytes = op.CustomOptionsLength() or int(op.LargeCustomOptionsSize())
        operators.append(Operator(j, name, version, is_custom, ins, outs,
                                  _options(op), custom_bytes))
    ins = tuple(int(i) for i in graph.InputsAsNumpy()) if graph.InputsLength() else ()
    outs = tuple(int(i) for i in graph.OutputsAsNumpy()) if graph.OutputsLength() else ()
    if any(not 0 <= i < len(tensors) for i in ins + outs):
        raise BadInputError(f"{path}: a model input or output references a missing tensor; "
                            "corrupt model")
    return Model(path, len(data), int(model.Version()), int(model.SubgraphsLength()),
                 tensors, tuple(operators), ins, outs)


def _buffer_size(buffer: Any, file_size: int, path: Path) -> int:
    """Size of a buffer's data, checked to lie inside the file (catches truncation)."""
    tab = buffer._tab
    offset = tab.Offset(4)  # field 0: data
    if offset:
        start = tab.Vector(offset)
        length = tab.VectorLen(offset)
        if start + length > file_size:
            raise BadInputError(f"{path}: truncated TFLite model (tensor data past the end of "
                                "the file); copy or download it again")
        return int(length)
    size = int(buffer.Size())  # models over 2 GB keep data after the flatbuffer
    if size and int(buffer.Offset()) + size > file_size:
        raise BadInputError(f"{path}: truncated TFLite model (external tensor data past the end "
                            "of the file); copy or download it again")
    return size


def _opcode(code: Any) -> tuple[str, int, bool]:
    custom = code.CustomCode()
    if custom:
        return custom.decode("utf-8", "replace"), int(code.Version()), True
    builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
    return _builtin_names().get(builtin, f"BUILTIN_{builtin}"), int(code.Version()), False


def _tensor(tensor: Any, index: int, buffer_sizes: list[int], model: Any) -> Tensor:
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    signature = (tuple(int(d) for d in tensor.ShapeSignatureAsNumpy())
                 if tensor.ShapeSignatureLength() else shape)
    buffer = int(tensor.Buffer())
    nbytes = buffer_sizes[buffer] if 0 < buffer < len(buffer_sizes) else 0
    quant = tensor.Quantization()
    quantized = bool(quant is not None and quant.ScaleLength() > 0)
    dtype = _type_names().get(int(tensor.Type()), str(tensor.Type()))
    values = None
    is_zero = False
    data = model.Buffers(buffer).DataAsNumpy() if nbytes else None
    if isinstance(data, np.ndarray):  # inline data (not past the flatbuffer in a >2 GB file)
        if dtype in _INT_FORMATS and nbytes <= _SMALL_CONSTANT_BYTES:
            size = struct.calcsize(_INT_FORMATS[dtype])
            raw = data.tobytes()
            values = struct.unpack(f"<{len(raw) // size}{_INT_FORMATS[dtype]}",
                                   raw[: len(raw) // size * size])
        zero = (int(quant.ZeroPoint(0)) if quantized and quant.ZeroPointLength()
                and dtype in ("INT8", "UINT8") else 0)
        is_zero = bool(np.all(data.view(np.int8 if dtype == "INT8" else np.uint8) == zero)
                       if zero else not data.any())
    return Tensor(index, (tensor.Name() or b"").decode("utf-8", "replace"), dtype, shape,
                  signature, nbytes, bool(tensor.IsVariable()), quantized, values, is_zero)


def _options(op: Any) -> dict[str, Any]:
    """Decode an operator's builtin options table into ``{getter name: value}``."""
    import tflite

    kind = int(op.BuiltinOptionsType())
    table = op.BuiltinOptions()
    name = _option_names().get(kind)
    if not kind or table is None or name is None or not hasattr(tflite, name):
        return {}
    cls = getattr(tflite, name)
    options = cls()
    options.Init(table.Bytes, table.Pos)
    values: dict[str, Any] = {}
    for attr in _getters(cls):
        if hasattr(cls, attr + "AsNumpy"):
            length = getattr(options, attr + "Length")()
            values[attr] = ([int(v) for v in getattr(options, attr + "AsNumpy")()]
                            if length else [])
        else:
            value = getattr(options, attr)()
            if isinstance(value, (bool, int, float)):
                values[attr] = value
    return values


@cache
def _getters(cls: type) -> tuple[str, ...]:
    skip = ("Init", "GetRootAs")
    return tuple(
        name for name in dir(cls)
        if name[:1].isupper() and not name.startswith(skip)
        and not name.endswith(("AsNumpy", "Length", "IsNone", "BufferHasIdentifier"))
    )


@cache
def _builtin_names() -> dict[int, str]:
    import tflite

    return _enum_names(tflite.BuiltinOperator)


@cache
def _type_names() -> dict[int, str]:
    import tflite

    return _enum_names(tflite.TensorType)


@cache
def _option_names() -> dict[int, str]:
    import tflite

    return _enum_names(tflite.BuiltinOptions)


def _enum_names(enum: type) -> dict[int, str]:
    return {value: key for key, value in vars(enum).items()
            if not key.startswith("_") and isinstance(value, int)}
