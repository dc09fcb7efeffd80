"""The ``TFLite_Detection_PostProcess`` custom op: its settings, and adding it to a model.

An SSD converts to TFLite with two outputs, box encodings ``[1, A, 4]`` and class scores
``[1, A, C + 1]`` (float, or int8 / uint8 after quantization). :func:`append_postprocess`
edits the converted flatbuffer (with ``tensorflow.lite.tools.flatbuffer_utils``): it adds the
anchors as a constant (float32, or uint8 like the box encodings), the custom op with its
flexbuffer attributes, and its four
float32 outputs (boxes, classes, scores, count) as the model outputs, as the OD API's
``export_tflite_ssd_graph`` / ``export_tflite_graph_tf2`` models have them. The kernel
reads float32 or uint8 inputs: a trailing DEQUANTIZE on an input is bypassed and an int8
input is requantized to uint8 (an exact QUANTIZE op, which the Edge TPU runs), so the
post-processing op stays the only op on the CPU.

Example::

    head = DetectionHead.from_config(ssd_config, anchors)
    Path("model.tflite").write_bytes(append_postprocess(int8_bytes, head))
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from edgeq.errors import BadInputError
from quant.detection.pipeline_config import SsdConfig

OP_NAME = "TFLite_Detection_PostProcess"
OUTPUT_NAMES = (OP_NAME, f"{OP_NAME}:1", f"{OP_NAME}:2", f"{OP_NAME}:3")
_CUSTOM = 32  # BuiltinOperator.CUSTOM
_DEQUANTIZE = 6  # BuiltinOperator.DEQUANTIZE
_FLOAT32 = 0  # TensorType.FLOAT32
_UINT8, _INT8 = 3, 9  # TensorType
_QUANTIZE = 114  # BuiltinOperator.QUANTIZE


@dataclasses.dataclass(frozen=True)
class PostProcessSettings:
    """The custom op's attributes (names as the op reads them from its flexbuffer)."""

    num_classes: int
    max_detections: int = 100
    max_classes_per_detection: int = 1
    detections_per_class: int = 100
    use_regular_nms: bool = False
    nms_score_threshold: float = 1e-8
    nms_iou_threshold: float = 0.6
    y_scale: float = 10.0
    x_scale: float = 10.0
    h_scale: float = 5.0
    w_scale: float = 5.0

    @classmethod
    def from_config(cls, config: SsdConfig, **overrides: Any) -> PostProcessSettings:
        """Return the settings of a pipeline config (``overrides`` replace fields)."""
        coder, nms = config.box_coder, config.nms
        values = {
            "num_classes": config.num_classes,
            "max_detections": nms.max_total_detections,
            "detections_per_class": nms.max_detections_per_class,
            "nms_score_threshold": nms.score_threshold,
            "nms_iou_threshold": nms.iou_threshold,
            "y_scale": coder.y_scale, "x_scale": coder.x_scale,
            "h_scale": coder.height_scale, "w_scale": coder.width_scale,
        }
        values.update(overrides)
        return cls(**values)

    def to_flexbuffer(self) -> bytes:
        """Return the custom options bytes (a flexbuffer map)."""
        from flatbuffers import flexbuffers

        values = dataclasses.asdict(self)
        values["_output_quantized"] = True
        return bytes(flexbuffers.Dumps(values))

    @classmethod
    def from_flexbuffer(cls, data: bytes) -> PostProcessSettings:
        """Return the settings stored in a custom options flexbuffer (op defaults if absent)."""
        from flatbuffers import flexbuffers

        stored = flexbuffers.Loads(bytes(data))
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {k: v for k, v in stored.items() if k in fields}
        if "num_classes" not in values:
            raise BadInputError(f"{OP_NAME} options have no num_classes: {sorted(stored)}")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class DetectionHead:
    """What a detector needs after its network: the op settings and the anchors [A, 4]."""

    settings: PostProcessSettings
    anchors: np.ndarray

    @classmethod
    def from_config(cls, config: SsdConfig, anchors: np.ndarray,
                    **overrides: Any) -> DetectionHead:
        """Return the head of a pipeline config with its anchors."""
        return cls(PostProcessSettings.from_config(config, **overrides),
                   np.asarray(anchors, np.float32))


def append_postprocess(model_bytes: bytes, head: DetectionHead,
                       exact_anchors: bool = False) -> bytes:
    """Return the model with ``TFLite_Detection_PostProcess`` added after its two outputs.

    Args:
        model_bytes: a converted SSD whose outputs are box encodings [1, A, 4] and class
            scores [1, A, num_classes + 1].
        head: the op settings and anchors.
        exact_anchors: keep float32 anchors for a quantized model too, by dequantizing the
            box encodings first (one more CPU op, DEQUANTIZE; boxes slightly more exact).

    Raises:
        BadInputError: the model already has the op, or its outputs do not match the head.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    if find_postprocess(model) is not None:
        raise BadInputError(f"the model already ends with {OP_NAME}")
    graph = model.subgraphs[0]
    boxes, scores = _find_head_inputs(model, graph, head)
    if exact_anchors and graph.tensors[boxes].type == _UINT8:
        boxes = _add_unary(model, graph, boxes, _DEQUANTIZE, "_float", _FLOAT32, None)
    anchor_index = _add_anchors(model, graph, schema, head.anchors, graph.tensors[boxes].type)
    count = head.settings.max_detections * head.settings.max_classes_per_detection
    shapes = ([1, count, 4], [1, count], [1, count], [1])
    outputs = [add_tensor(model, graph, schema, name, shape)
               for name, shape in zip(OUTPUT_NAMES, shapes, strict=True)]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = _CUSTOM
    code.customCode = OP_NAME
    code.version = 1
    model.operatorCodes.append(code)
    op = schema.OperatorT()
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.inputs = np.array([boxes, scores, anchor_index], np.int32)
    op.outputs = np.array(outputs, np.int32)
    op.customOptions = np.frombuffer(head.settings.to_flexbuffer(), np.uint8)
    op.customOptionsFormat = 0  # FLEXBUFFERS
    graph.operators.append(op)
    graph.outputs = np.array(outputs, np.int32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_postprocess(model_bytes: bytes) -> PostProcessSettings | None:
    """Return the settings of the model's ``TFLite_Detection_PostProcess`` op, or None."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    op = find_postprocess(model)
    return None if op is None else PostProcessSettings.from_flexbuffer(op.customOptions)


def replace_postprocess_settings(model_bytes: bytes, **changes: Any) -> bytes:
    """Return the model with some ``TFLite_Detection_PostProcess`` attributes replaced.

    Raises:
        BadInputError: the model has no such op, or a name is not an attribute.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    op = find_postprocess(model)
    if op is None:
        raise BadInputError(f"the model has no {OP_NAME} op")
    try:
        settings = dataclasses.replace(
            PostProcessSettings.from_flexbuffer(op.customOptions), **changes)
    except TypeError as exc:
        raise BadInputError(f"{OP_NAME}: {exc}") from exc
    op.customOptions = np.frombuffer(settings.to_flexbuffer(), np.uint8)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def find_postprocess(model: Any) -> Any:
    """Return the ``TFLite_Detection_PostProcess`` OperatorT of a model object, or None."""
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex].customCode
            if code and (code.decode() if isinstance(code, bytes) else code) == OP_NAME:
                return op
    return None


def _find_head_inputs(model: Any, graph: Any, head: DetectionHead) -> tuple[int, int]:
    """Return the tensor indices feeding the op: box encodings and class scores."""
    num_anchors = len(head.anchors)
    slots = head.settings.num_classes + 1
    boxes = scores = None
    for index in graph.outputs:
        shape = [int(s) for s in graph.tensors[index].shape]
        if shape == [1, num_anchors, 4]:
            boxes = index
        elif shape == [1, num_anchors, slots]:
            scores = index
    if boxes is None or scores is None:
        found = [[int(s) for s in graph.tensors[i].shape] for i in graph.outputs]
        raise BadInputError(
            f"model outputs {found} are not box encodings [1, {num_anchors}, 4] and class "
            f"scores [1, {num_anchors}, {slots}]; was it built from the same pipeline.config?"
        )
    return tuple(  # type: ignore[return-value]
        _as_uint8(model, graph, _bypass_dequantize(model, graph, index))
        for index in (boxes, scores)
    )


def _as_uint8(model: Any, graph: Any, tensor: int) -> int:
    """Return ``tensor``, or for an int8 tensor a uint8 copy made by a QUANTIZE op.

    The kernel reads float32 or uint8 inputs only; int8 -> uint8 (zero point + 128) is
    exact and QUANTIZE maps to the Edge TPU, so the op stays the only CPU op.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    source = graph.tensors[tensor]
    if source.type != _INT8:
        return tensor
    quantization = schema.QuantizationParametersT()
    quantization.scale = np.array(source.quantization.scale, np.float32)
    quantization.zeroPoint = np.array(source.quantization.zeroPoint, np.int64) + 128
    return _add_unary(model, graph, tensor, _QUANTIZE, "_uint8", _UINT8, quantization)


def _add_unary(model: Any, graph: Any, tensor: int, builtin: int, suffix: str,
               tensor_type: int, quantization: Any) -> int:
    """Add ``builtin`` (QUANTIZE / DEQUANTIZE) on ``tensor``; return its new output."""
    from tensorflow.lite.python import schema_py_generated as schema

    source = graph.tensors[tensor]
    index = add_tensor(model, graph, schema, f"{tensor_name(source)}{suffix}", source.shape,
                        tensor_type=tensor_type, quantization=quantization)
    op = schema.OperatorT()
    op.opcodeIndex = opcode_index(model, schema, builtin)
    op.inputs = np.array([tensor], np.int32)
    op.outputs = np.array([index], np.int32)
    graph.operators.append(op)
    return index


def opcode_index(model: Any, schema: Any, builtin: int) -> int:
    """Return the index of a builtin operator code (version 1), adding it if needed."""
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _bypass_dequantize(model: Any, graph: Any, tensor: int) -> int:
    """Return the quantized input of a DEQUANTIZE producing ``tensor`` (dropping the op)."""
    for position, op in enumerate(graph.operators):
        if tensor in op.outputs:
            if max(model.operatorCodes[op.opcodeIndex].builtinCode,
                   model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) != _DEQUANTIZE:
                return tensor
            del graph.operators[position]
            return int(op.inputs[0])
    return tensor


def _add_anchors(model: Any, graph: Any, schema: Any, anchors: np.ndarray,
                 box_type: int) -> int:
    """Add the anchors constant in the box encodings' type (the kernel reads them so).

    With uint8 box encodings the op dequantizes the anchors with the same code path, so
    they are stored as uint8 too (zero point 0, the largest anchor at code 255), as in the
    OD API's quantized exports.
    """
    anchors = np.asarray(anchors, np.float32)
    if box_type != _UINT8:
        return add_tensor(model, graph, schema, "anchors", anchors.shape, anchors.tobytes())
    codes, scale = quantized_anchors(anchors)
    quantization = schema.QuantizationParametersT()
    quantization.scale = np.array([scale], np.float32)
    quantization.zeroPoint = np.array([0], np.int64)
    return add_tensor(model, graph, schema, "anchors", anchors.shape, codes.tobytes(),
                       box_type, quantization)


def quantized_anchors(anchors: np.ndarray) -> tuple[np.ndarray, float]:
    """Return the uint8 codes [A, 4] of the anchors and their scale (zero point 0)."""
    scale = float(np.max(anchors)) / 255
    return np.clip(np.round(np.asarray(anchors) / scale), 0, 255).astype(np.uint8), scale


def anchor_offsets(head: DetectionHead) -> np.ndarray:
    """Return box-encoding offsets [A, 4] that make uint8 anchors decode like float ones.

    The op decodes ``y = ty / y_scale * ha + ya`` and ``h = exp(th / h_scale) * ha`` with
    the anchors it is given. Encodings shifted by ``y_scale * (ya - ya_q) / ha_q`` and
    ``h_scale * ln(ha / ha_q)`` decode with the uint8 anchors ``_q`` to the float anchors'
    boxes: exactly for sizes, and for centres up to the factor ``ha / ha_q`` on ``ty`` (within
    3% for the SSD zoo's anchors). Anchor sizes that round to code 0 get no offset.
    """
    anchors = np.asarray(head.anchors, np.float64)
    codes, scale = quantized_anchors(anchors)
    rounded = codes.astype(np.float64) * scale
    settings = head.settings
    centre_scales = np.array([settings.y_scale, settings.x_scale])
    size_scales = np.array([settings.h_scale, settings.w_scale])
    sizes, rounded_sizes = anchors[:, 2:], rounded[:, 2:]
    usable = rounded_sizes > 0
    safe = np.where(usable, rounded_sizes, 1.0)
    centres = centre_scales * (anchors[:, :2] - rounded[:, :2]) / safe
    log_ratio = np.log(np.where(usable, sizes, 1.0) / safe)
    return np.where(np.concatenate([usable, usable], axis=1),
                    np.concatenate([centres, size_scales * log_ratio], axis=1),
                    0.0).astype(np.float32)


def tensor_name(tensor: Any) -> str:
    """Return a TensorT's name as text (flatbuffer_utils reads names as bytes)."""
    return tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name


def add_tensor(model: Any, graph: Any, schema: Any, name: str, shape: Any,
                data: bytes | None = None, tensor_type: int = _FLOAT32,
                quantization: Any = None) -> int:
    """Add a tensor (a constant when ``data`` is given) to ``graph``; return its index."""
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
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1
