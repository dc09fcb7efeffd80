"""Small input / output adapters for a TFLite interpreter (classification and detection).

Every function takes the interpreter first and does one job, in the manner of pycoral's
adapters, with two improvements: inputs are quantized from the input tensor's own
quantization parameters, and detection outputs are found by shape and name, never by
position (converters order the ``TFLite_Detection_PostProcess`` outputs differently).

Example::

    interpreter = make_interpreter("ssd_quant.tflite"); interpreter.allocate_tensors()
    set_pixels(interpreter, pixels)            # uint8 RGB HxWx3 at input_size()
    interpreter.invoke()
    for det in get_objects(interpreter, 0.5, image_scale=(sx, sy)): ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from edgeq.errors import BadInputError

# The [-1, 1] convention of TF-slim MobileNets and SSDs: (pixel - 127.5) / 127.5.
DEFAULT_MEAN = (127.5, 127.5, 127.5)
DEFAULT_STD = (127.5, 127.5, 127.5)


class BBox(NamedTuple):
    """A box in (xmin, ymin, xmax, ymax) order, normalized or in pixels."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @property
    def width(self) -> float:
        """Return the box width."""
        return self.xmax - self.xmin

    @property
    def height(self) -> float:
        """Return the box height."""
        return self.ymax - self.ymin

    @property
    def area(self) -> float:
        """Return the box area (0 for an empty or inverted box)."""
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def valid(self) -> bool:
        """Return True when the box has a positive area."""
        return self.width > 0 and self.height > 0

    def scale(self, sx: float, sy: float) -> BBox:
        """Return the box with x multiplied by ``sx`` and y by ``sy``."""
        return BBox(self.xmin * sx, self.ymin * sy, self.xmax * sx, self.ymax * sy)

    def intersect(self, other: BBox) -> BBox:
        """Return the intersection box (may be invalid when they do not overlap)."""
        return BBox(max(self.xmin, other.xmin), max(self.ymin, other.ymin),
                    min(self.xmax, other.xmax), min(self.ymax, other.ymax))

    def iou(self, other: BBox) -> float:
        """Return the intersection over union with ``other`` (0 when disjoint)."""
        inter = self.intersect(other).area
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def to_xywh(self) -> tuple[float, float, float, float]:
        """Return (x, y, width, height), the COCO box format."""
        return (self.xmin, self.ymin, self.width, self.height)


class Detection(NamedTuple):
    """One detected object: model class index, score in [0, 1], box."""

    label_id: int
    score: float
    bbox: BBox


class DetectionOutputs(NamedTuple):
    """Output tensor indices of ``TFLite_Detection_PostProcess``."""

    boxes: int
    classes: int
    scores: int
    count: int


def input_details(interpreter: Any) -> dict[str, Any]:
    """Return the details dict of the single input tensor.

    Raises:
        BadInputError: the model has more than one input.
    """
    details = interpreter.get_input_details()
    if len(details) != 1:
        raise BadInputError(f"expected a model with one image input, found {len(details)}")
    return details[0]


def input_size(interpreter: Any) -> tuple[int, int]:
    """Return the input image size as (width, height)."""
    shape = input_details(interpreter)["shape"]
    if len(shape) != 4 or shape[3] != 3:
        raise BadInputError(f"expected an NHWC RGB image input, found shape {list(shape)}")
    return int(shape[2]), int(shape[1])


def input_quantization(interpreter: Any) -> tuple[float, int]:
    """Return the input (scale, zero_point); (0.0, 0) for a float input."""
    scale, zero_point = input_details(interpreter)["quantization"]
    return float(scale), int(zero_point)


def pixel_table(
    interpreter: Any,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> np.ndarray | None:
    """Return a (256, 3) table mapping pixel values to the quantized input, or None.

    The float input a model expects is ``(pixel - mean) / std``; a quantized input holds
    ``round(value / scale + zero_point)``. None means the model takes raw pixels: either its
    input is float (see :func:`normalize_pixels`) or the table differs from the identity by
    at most one step (e.g. uint8 with scale 1/128 and zero point 128 for [-1, 1]).
    """
    details = input_details(interpreter)
    scale, zero_point = input_quantization(interpreter)
    dtype = np.dtype(details["dtype"])
    if dtype.kind == "f":
        return None
    if scale == 0:
        raise BadInputError("the model input is integer but has no quantization scale")
    info = np.iinfo(dtype)
    pixels = np.arange(256, dtype=np.float32)[:, None]
    values = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    table = np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)
    if dtype == np.uint8 and np.abs(table.astype(np.int32) - pixels.astype(np.int32)).max() <= 1:
        return None
    return table


def pixels_to_input(
    interpreter: Any,
    pixels: np.ndarray,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    table: np.ndarray | None = None,
) -> np.ndarray:
    """Return uint8 RGB pixels (HxWx3 or a batch) converted to the model's input dtype.

    Args:
        interpreter: the interpreter.
        pixels: uint8 RGB pixels at the model's input size.
        mean: per-channel mean of the float preprocessing.
        std: per-channel std of the float preprocessing.
        table: a table from :func:`pixel_table` to reuse (computed when None).
    """
    dtype = np.dtype(input_details(interpreter)["dtype"])
    if dtype.kind == "f":
        return normalize_pixels(pixels, mean, std)
    if table is None:
        table = pixel_table(interpreter, mean, std)
    if table is None:
        return pixels.astype(dtype, copy=False)
    return table[pixels, np.arange(3)]


def normalize_pixels(
    pixels: np.ndarray, mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD
) -> np.ndarray:
    """Return ``(pixels - mean) / std`` as float32."""
    return (pixels.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(
        std, np.float32
    )


def set_input(interpreter: Any, data: np.ndarray) -> None:
    """Copy ``data`` (HxWxC or 1xHxWxC, already in the input dtype) into the input tensor.

    Raises:
        BadInputError: the shape or dtype does not match the input tensor.
    """
    details = input_details(interpreter)
    shape = tuple(int(s) for s in details["shape"])
    if data.ndim == len(shape) - 1:
        data = data[None]
    if tuple(data.shape) != shape:
        raise BadInputError(
            f"input shape {list(data.shape)} does not match the model's {list(shape)}"
        )
    if data.dtype != details["dtype"]:
        raise BadInputError(f"input dtype {data.dtype} does not match the model's "
                            f"{np.dtype(details['dtype'])}")
    interpreter.set_tensor(details["index"], data)


def set_pixels(
    interpreter: Any,
    pixels: np.ndarray,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> None:
    """Set uint8 RGB pixels (at the input size) as input, quantized or normalized as needed."""
    set_input(interpreter, pixels_to_input(interpreter, pixels, mean, std))


def dequantize(details: dict[str, Any], values: np.ndarray) -> np.ndarray:
    """Return a tensor's values as float32 using its (scale, zero_point)."""
    scale, zero_point = details["quantization"]
    if np.dtype(details["dtype"]).kind == "f" or not scale:
        return values.astype(np.float32, copy=False)
    return (values.astype(np.float32) - zero_point) * np.float32(scale)


def classification_scores(interpreter: Any) -> np.ndarray:
    """Return the dequantized scores of the single classification output as a 1-D array.

    Raises:
        BadInputError: the model does not have exactly one output.
    """
    outputs = interpreter.get_output_details()
    if len(outputs) != 1:
        raise BadInputError(
            f"expected one classification output, found {len(outputs)} (a detection model?)"
        )
    details = outputs[0]
    return dequantize(details, interpreter.get_tensor(details["index"])).reshape(-1)


def is_detection_model(interpreter: Any) -> bool:
    """Return True when the outputs look like ``TFLite_Detection_PostProcess``."""
    try:
        detection_outputs(interpreter)
    except BadInputError:
        return False
    return True


def detection_outputs(interpreter: Any) -> DetectionOutputs:
    """Return the tensor indices of boxes [1,N,4], classes [1,N], scores [1,N], count [1].

    Boxes and count are identified by shape; classes and scores (both [1,N]) by the
    post-processing op's output name suffix (``:1`` classes, ``:2`` scores) or a name
    containing "class" / "score".

    Raises:
        BadInputError: the outputs are not those of a detection post-processing op.
    """
    outputs = interpreter.get_output_details()
    boxes = [d for d in outputs if len(d["shape"]) == 3 and d["shape"][-1] == 4]
    count = [d for d in outputs if list(d["shape"]) == [1]]
    pairs = [d for d in outputs if len(d["shape"]) == 2]
    if len(outputs) != 4 or len(boxes) != 1 or len(count) != 1 or len(pairs) != 2:
        shapes = [list(d["shape"]) for d in outputs]
        raise BadInputError(
            f"not a detection model: outputs {shapes}, expected boxes [1,N,4], classes [1,N], "
            "scores [1,N] and count [1] (TFLite_Detection_PostProcess)"
        )
    classes, scores = _split_classes_scores(pairs)
    return DetectionOutputs(boxes[0]["index"], classes["index"], scores["index"], count[0]["index"])


def _split_classes_scores(pairs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    def rank(details: dict[str, Any]) -> int:
        name = details["name"].lower()
        if "class" in name or name.endswith(":1"):
            return 0
        if "score" in name or name.endswith(":2"):
            return 1
        return -1

    ranks = [rank(d) for d in pairs]
    if sorted(ranks) != [0, 1]:
        names = [d["name"] for d in pairs]
        raise BadInputError(f"cannot tell detection classes from scores by name: {names}")
    ordered = sorted(pairs, key=rank)
    return ordered[0], ordered[1]


def get_objects(
    interpreter: Any,
    score_threshold: float = 0.0,
    image_scale: tuple[float, float] = (1.0, 1.0),
) -> list[Detection]:
    """Return the detections with score >= threshold, boxes scaled by (sx, sy).

    Boxes come out of the model normalized (ymin, xmin, ymax, xmax); ``image_scale`` of
    (image width, image height) gives pixel boxes.
    """
    index = detection_outputs(interpreter)
    boxes = interpreter.get_tensor(index.boxes)[0]
    classes = interpreter.get_tensor(index.classes)[0]
    scores = interpreter.get_tensor(index.scores)[0]
    count = min(int(interpreter.get_tensor(index.count)[0]), len(scores))
    sx, sy = image_scale
    return [
        Detection(
            int(classes[i]),
            float(scores[i]),
            BBox(float(boxes[i][1]), float(boxes[i][0]),
                 float(boxes[i][3]), float(boxes[i][2])).scale(sx, sy),
        )
        for i in range(count)
        if scores[i] >= score_threshold
    ]
