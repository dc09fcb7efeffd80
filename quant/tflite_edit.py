"""Edit ``.tflite`` models: the one module that reads, changes and writes the flatbuffer.

A model is read once into TensorFlow's mutable flatbuffer object model (``ModelT`` of
``tensorflow.lite.python.schema_py_generated``, as ``tensorflow.lite.tools.flatbuffer_utils``
reads it), edited in place, and serialized once. Op codes, tensor types, activations and
options come from the ``tflite`` package's enums (``tflite.BuiltinOperator.ADD``,
``tflite.TensorType.INT8`` ...). Tensors and ops are added to the main subgraph.

Example::

    model = read_model(data)
    scalar = add_tensor(model, "three", [1], np.float32([3.0]).tobytes())
    data = write_model(model)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import tflite
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from tensorflow.lite.python.schema_py_generated import (
        ModelT,
        OperatorCodeT,
        OperatorT,
        QuantizationParametersT,
        TensorT,
    )


def _schema() -> Any:
    """Return TensorFlow's generated flatbuffer schema module (imported on first use)."""
    from edgeq._tensorflow import lite_schema

    return lite_schema


def read_model(data: bytes) -> ModelT:
    """Return the mutable object model of flatbuffer bytes (TensorFlow's flatbuffer_utils)."""
    from edgeq._tensorflow import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


def write_model(model: ModelT) -> bytes:
    """Return the flatbuffer bytes of an object model."""
    from edgeq._tensorflow import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _text(value: bytes | str | None) -> str | None:
    """Return a flatbuffer string as text (flatbuffer_utils reads strings as bytes)."""
    return value.decode() if isinstance(value, bytes) else value


def tensor_name(tensor: TensorT) -> str:
    """Return a tensor's name as text."""
    return _text(tensor.name)


def io_tensors(model: ModelT) -> set[int]:
    """Return the input and output tensor indices of the main subgraph."""
    graph = model.subgraphs[0]
    return {int(i) for i in graph.inputs} | {int(i) for i in graph.outputs}


def _builtin(code: OperatorCodeT) -> int:
    """Return an operator code's builtin operator (old files keep it in the deprecated field)."""
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def builtin_code(model: ModelT, op: OperatorT) -> int:
    """Return the ``tflite.BuiltinOperator`` of ``op``."""
    return _builtin(model.operatorCodes[op.opcodeIndex])


def custom_code(model: ModelT, op: OperatorT) -> str | None:
    """Return the custom op name of ``op`` (None for a builtin op)."""
    return _text(model.operatorCodes[op.opcodeIndex].customCode)


def opcode_index(model: ModelT, builtin: int, custom: str | None = None) -> int:
    """Return the index of an operator code (version 1 when added), adding it if needed.

    Args:
        model: the model.
        builtin: a ``tflite.BuiltinOperator``.
        custom: the custom op name, with ``tflite.BuiltinOperator.CUSTOM``.
    """
    for index, code in enumerate(model.operatorCodes):
        if _builtin(code) == builtin and (custom is None or _text(code.customCode) == custom):
            return index
    code = _schema().OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin,
                                     tflite.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.customCode = custom
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def new_operator(model: ModelT, builtin: int, inputs: Iterable[int], outputs: Iterable[int],
                 options: str | None = None, custom: str | None = None,
                 **fields: Any) -> OperatorT:
    """Return a new op for the main subgraph (the caller inserts it where it belongs).

    Args:
        model: the model (its operator code is looked up or added).
        builtin: a ``tflite.BuiltinOperator``.
        inputs: input tensor indices.
        outputs: output tensor indices.
        options: the name of its builtin options table (``"AddOptions"``), or None.
        custom: the custom op name, with ``tflite.BuiltinOperator.CUSTOM``.
        **fields: values of the options table (``fusedActivationFunction=...``).
    """
    schema = _schema()
    op = schema.OperatorT()
    op.opcodeIndex = opcode_index(model, builtin, custom)
    op.inputs = np.array(list(inputs), np.int32)
    op.outputs = np.array(list(outputs), np.int32)
    if options is not None:
        op.builtinOptionsType = getattr(tflite.BuiltinOptions, options)
        op.builtinOptions = getattr(schema, f"{options}T")()
        for name, value in fields.items():
            setattr(op.builtinOptions, name, value)
    return op


def add_tensor(model: ModelT, name: str, shape: Iterable[int], data: bytes | None = None,
               tensor_type: int = tflite.TensorType.FLOAT32,
               quantization: QuantizationParametersT | None = None) -> int:
    """Add a tensor (a constant when ``data`` is given) with its own buffer; return its index.

    Args:
        model: the model; the tensor goes to its main subgraph.
        name: the tensor name.
        shape: its dimensions.
        data: the constant's raw little-endian bytes, or None for an activation.
        tensor_type: a ``tflite.TensorType``.
        quantization: its quantization parameters (:func:`range_quantization`,
            :func:`affine_quantization`), or None.
    """
    schema = _schema()
    buffer = schema.BufferT()
    if data is not None:
        buffer.data = np.frombuffer(data, np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.name = name
    tensor.shape = np.array(list(shape), np.int32)
    tensor.type = tensor_type
    tensor.quantization = quantization
    tensor.buffer = len(model.buffers) - 1
    graph = model.subgraphs[0]
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def set_range(quantization: QuantizationParametersT, low: float, high: float) -> None:
    """Set a float tensor's calibrated range (float32, as the flatbuffer stores it)."""
    quantization.min = np.array([low], np.float32)
    quantization.max = np.array([high], np.float32)


def range_quantization(low: float, high: float) -> QuantizationParametersT:
    """Return quantization parameters holding a calibrated range [low, high]."""
    quantization = _schema().QuantizationParametersT()
    set_range(quantization, low, high)
    return quantization


def affine_quantization(scale: ArrayLike, zero_point: ArrayLike) -> QuantizationParametersT:
    """Return quantization parameters ``real = scale * (q - zero_point)`` (per tensor or axis)."""
    quantization = _schema().QuantizationParametersT()
    quantization.scale = np.array(scale, np.float32)
    quantization.zeroPoint = np.array(zero_point, np.int64)
    return quantization


def get_array(model: ModelT, tensor_index: int) -> np.ndarray:
    """Return a copy of a constant float32 tensor of the main subgraph."""
    tensor = model.subgraphs[0].tensors[tensor_index]
    data = bytes(model.buffers[tensor.buffer].data)
    return np.frombuffer(data, np.float32).reshape(tensor.shape).copy()


def set_array(model: ModelT, tensor_index: int, values: np.ndarray) -> None:
    """Replace a constant float32 tensor's values (same shape).

    Raises:
        ValueError: ``values`` has another shape.
    """
    tensor = model.subgraphs[0].tensors[tensor_index]
    values = np.ascontiguousarray(values, np.float32)
    if tuple(values.shape) != tuple(tensor.shape):
        raise ValueError(f"shape {values.shape} does not match tensor {tuple(tensor.shape)}")
    model.buffers[tensor.buffer].data = np.frombuffer(values.tobytes(), np.uint8)
