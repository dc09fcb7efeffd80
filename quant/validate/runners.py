"""Run a model over pre-decoded pixels: a TFLite model with LiteRT, or a float Keras model.

Both runners take the same uint8 pixel array (decoded once) and apply their own input
conversion: normalization for float inputs, the input tensor's quantization for integer
inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeq.errors import BadInputError
from edgeq.images import Preprocess
from edgetpu import adapters
from edgetpu.runtime import make_interpreter
from edgetpu.tflite_model import ModelSource


@dataclass
class TfliteRunner:
    """A ``.tflite`` model: CPU (LiteRT, XNNPACK, all threads by default) or an Edge TPU.

    ``model`` is a file, or the bytes of a model this process made (no load probe, see
    :func:`edgetpu.runtime.make_interpreter`).
    """

    model: ModelSource
    preprocess: Preprocess
    num_threads: int | None = None
    device: str | None = None
    interpreter: Any = field(init=False, repr=False)
    kind: str = field(init=False, default="tflite")

    def __post_init__(self) -> None:
        self.interpreter = make_interpreter(self.model, num_threads=self.num_threads,
                                            device=self.device)
        self.interpreter.allocate_tensors()
        width, height = adapters.input_size(self.interpreter)
        if (width, height) != (self.preprocess.width, self.preprocess.height):
            self.preprocess = _resized(self.preprocess, width, height)
        self._table = adapters.pixel_table(self.interpreter, self.preprocess.mean,
                                           self.preprocess.std)

    @property
    def input_size(self) -> tuple[int, int]:
        """Return (width, height) of the model input."""
        return adapters.input_size(self.interpreter)

    @property
    def is_detector(self) -> bool:
        """Return True for a model ending in ``TFLite_Detection_PostProcess``."""
        return adapters.is_detection_model(self.interpreter)

    @property
    def is_quantized(self) -> bool:
        """Return True when some tensor is 8- or 16-bit integer (not a float model)."""
        return any(np.dtype(t["dtype"]) in (np.int8, np.uint8, np.int16)
                   for t in self.interpreter.get_tensor_details())

    @property
    def input_dtype(self) -> str:
        """Return the input tensor dtype name."""
        return np.dtype(adapters.input_details(self.interpreter)["dtype"]).name

    @property
    def num_outputs(self) -> int:
        """Return the size of the first output (classes of a classifier)."""
        return int(np.prod(self.interpreter.get_output_details()[0]["shape"][1:]))

    def _set(self, pixels: np.ndarray) -> None:
        adapters.set_input(self.interpreter, adapters.pixels_to_input(
            self.interpreter, pixels, self.preprocess.mean, self.preprocess.std, self._table))

    def classify(self, pixels: np.ndarray) -> np.ndarray:
        """Return dequantized outputs [N, C] for uint8 pixels [N, H, W, 3]."""
        rows = []
        for image in pixels:
            self._set(image)
            self.interpreter.invoke()
            rows.append(adapters.classification_scores(self.interpreter))
        return np.stack(rows)

    def detect(self, pixels: np.ndarray,
               sizes: list[tuple[int, int]]) -> list[list[adapters.Detection]]:
        """Return detections per image, boxes in pixels of the original (width, height)."""
        results = []
        for image, size in zip(pixels, sizes, strict=True):
            self._set(image)
            self.interpreter.invoke()
            results.append(adapters.get_objects(self.interpreter, 0.0, image_scale=size))
        return results


@dataclass
class KerasRunner:
    """A float tf-keras classification model, run in batches."""

    model: Any
    preprocess: Preprocess
    batch_size: int = 32
    kind: str = field(init=False, default="keras")
    is_detector: bool = field(init=False, default=False)
    input_dtype: str = field(init=False, default="float32")

    @property
    def input_size(self) -> tuple[int, int]:
        """Return (width, height) of the model input."""
        shape = self.model.input_shape
        return int(shape[2]), int(shape[1])

    @property
    def num_outputs(self) -> int:
        """Return the size of the first output (classes of a classifier)."""
        return int(np.prod(self.model.outputs[0].shape[1:]))

    def classify(self, pixels: np.ndarray) -> np.ndarray:
        """Return float outputs [N, C] for uint8 pixels [N, H, W, 3]."""
        from edgeq._tensorflow import tf

        predict = tf.function(lambda x: self.model(x, training=False))
        rows = []
        for start in range(0, len(pixels), self.batch_size):
            batch = self.preprocess.normalize(pixels[start:start + self.batch_size])
            rows.append(np.asarray(predict(tf.constant(batch)), np.float32))
        out = np.concatenate(rows)
        return out.reshape(len(out), -1)

    def detect(self, pixels: np.ndarray, sizes: list[tuple[int, int]]) -> list:
        """Keras detection references are not supported; use a float ``.tflite``."""
        raise BadInputError(
            "a float Keras detector cannot be scored directly; pass a float .tflite with "
            "TFLite_Detection_PostProcess as --float"
        )


def _resized(preprocess: Preprocess, width: int, height: int) -> Preprocess:
    data = preprocess.to_dict()
    data.update(width=width, height=height)
    return Preprocess.from_dict(data)
