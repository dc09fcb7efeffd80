"""The ``TFLite_Detection_PostProcess`` custom op: its settings, and adding it to a model.

An SSD converts to TFLite with two outputs, box encodings ``[1, A, 4]`` and class scores
``[1, A, C + 1]`` (float, or int8 / uint8 after quantization). :func:`append_postprocess`
edits the converted flatbuffer (with :mod:`quant.tflite_edit`): it adds the
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
from typing import TYPE_CHECKING, Any

import numpy as np
import tflite

from edgeq.errors import BadInputError
from edgetpu.tflite_model import DETECTION_POSTPROCESS
from quant.detection.pipeline_config import SsdConfig
from quant.tflite_edit import (
    add_tensor,
    affine_quantization,
    builtin_code,
    custom_code,
    new_operator,
    read_model,
    tensor_name,
    write_model,
)

if TYPE_CHECKING:
    from tensorflow.lite.python.schema_py_generated import ModelT, OperatorT

OUTPUT_NAMES = tuple(DETECTION_POSTPROCESS + suffix for suffix in ("", ":1", ":2", ":3"))


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
            raise BadInputError(
                f"{DETECTION_POSTPROCESS} options have no num_classes: {sorted(stored)}")
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
    model = read_model(model_bytes)
    if find_postprocess(model) is not None:
        raise BadInputError(f"the model already ends with {DETECTION_POSTPROCESS}")
    graph = model.subgraphs[0]
    boxes, scores = _find_head_inputs(model, head)
    if exact_anchors and graph.tensors[boxes].type == tflite.TensorType.UINT8:
        boxes = _add_unary(model, boxes, tflite.BuiltinOperator.DEQUANTIZE, "_float",
                           tflite.TensorType.FLOAT32, None)
    anchor_index = _add_anchors(model, head.anchors, graph.tensors[boxes].type)
    count = head.settings.max_detections * head.settings.max_classes_per_detection
    shapes = ([1, count, 4], [1, count], [1, count], [1])
    outputs = [add_tensor(model, name, shape)
               for name, shape in zip(OUTPUT_NAMES, shapes, strict=True)]
    op = new_operator(model, tflite.BuiltinOperator.CUSTOM, [boxes, scores, anchor_index],
                      outputs, custom=DETECTION_POSTPROCESS)
    op.customOptions = np.frombuffer(head.settings.to_flexbuffer(), np.uint8)
    op.customOptionsFormat = tflite.CustomOptionsFormat.FLEXBUFFERS
    graph.operators.append(op)
    graph.outputs = np.array(outputs, np.int32)
    return write_model(model)


def read_postprocess(model_bytes: bytes) -> PostProcessSettings | None:
    """Return the settings of the model's ``TFLite_Detection_PostProcess`` op, or None."""
    op = find_postprocess(read_model(model_bytes))
    return None if op is None else PostProcessSettings.from_flexbuffer(op.customOptions)


def replace_postprocess_settings(model_bytes: bytes, **changes: Any) -> bytes:
    """Return the model with some ``TFLite_Detection_PostProcess`` attributes replaced.

    Raises:
        BadInputError: the model has no such op, or a name is not an attribute.
    """
    model = read_model(model_bytes)
    op = find_postprocess(model)
    if op is None:
        raise BadInputError(f"the model has no {DETECTION_POSTPROCESS} op")
    try:
        settings = dataclasses.replace(
            PostProcessSettings.from_flexbuffer(op.customOptions), **changes)
    except TypeError as exc:
        raise BadInputError(f"{DETECTION_POSTPROCESS}: {exc}") from exc
    op.customOptions = np.frombuffer(settings.to_flexbuffer(), np.uint8)
    return write_model(model)


def find_postprocess(model: ModelT) -> OperatorT | None:
    """Return the ``TFLite_Detection_PostProcess`` op of a model object, or None."""
    for graph in model.subgraphs:
        for op in graph.operators:
            if custom_code(model, op) == DETECTION_POSTPROCESS:
                return op
    return None


def _find_head_inputs(model: ModelT, head: DetectionHead) -> tuple[int, int]:
    """Return the tensor indices feeding the op: box encodings and class scores."""
    graph = model.subgraphs[0]
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
        _as_uint8(model, _bypass_dequantize(model, index)) for index in (boxes, scores)
    )


def _as_uint8(model: ModelT, tensor: int) -> int:
    """Return ``tensor``, or for an int8 tensor a uint8 copy made by a QUANTIZE op.

    The kernel reads float32 or uint8 inputs only; int8 -> uint8 (zero point + 128) is
    exact and QUANTIZE maps to the Edge TPU, so the op stays the only CPU op.
    """
    source = model.subgraphs[0].tensors[tensor]
    if source.type != tflite.TensorType.INT8:
        return tensor
    quantization = affine_quantization(
        source.quantization.scale, np.asarray(source.quantization.zeroPoint, np.int64) + 128)
    return _add_unary(model, tensor, tflite.BuiltinOperator.QUANTIZE, "_uint8",
                      tflite.TensorType.UINT8, quantization)


def _add_unary(model: ModelT, tensor: int, builtin: int, suffix: str, tensor_type: int,
               quantization: Any) -> int:
    """Add ``builtin`` (QUANTIZE / DEQUANTIZE) on ``tensor``; return its new output."""
    source = model.subgraphs[0].tensors[tensor]
    index = add_tensor(model, f"{tensor_name(source)}{suffix}", source.shape,
                       tensor_type=tensor_type, quantization=quantization)
    model.subgraphs[0].operators.append(new_operator(model, builtin, [tensor], [index]))
    return index


def _bypass_dequantize(model: ModelT, tensor: int) -> int:
    """Return the quantized input of a DEQUANTIZE producing ``tensor`` (dropping the op)."""
    operators = model.subgraphs[0].operators
    for position, op in enumerate(operators):
        if tensor in op.outputs:
            if builtin_code(model, op) != tflite.BuiltinOperator.DEQUANTIZE:
                return tensor
            del operators[position]
            return int(op.inputs[0])
    return tensor


def _add_anchors(model: ModelT, anchors: np.ndarray, box_type: int) -> int:
    """Add the anchors constant in the box encodings' type (the kernel reads them so).

    With uint8 box encodings the op dequantizes the anchors with the same code path, so
    they are stored as uint8 too (zero point 0, the largest anchor at code 255), as in the
    OD API's quantized exports.
    """
    anchors = np.asarray(anchors, np.float32)
    if box_type != tflite.TensorType.UINT8:
        return add_tensor(model, "anchors", anchors.shape, anchors.tobytes())
    codes, scale = quantized_anchors(anchors)
    return add_tensor(model, "anchors", anchors.shape, codes.tobytes(), box_type,
                      affine_quantization([scale], [0]))


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
