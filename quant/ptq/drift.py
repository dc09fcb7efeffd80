"""Quick drift of a fresh int8 classifier on held-out images, for the sidecar."""

from __future__ import annotations

from typing import Any

import numpy as np


def quick_drift(result: Any, pixels: np.ndarray) -> dict[str, Any]:
    """Return top-1 agreement and mean |output difference| of float vs int8 on ``pixels``.

    Args:
        result: a :class:`quant.ptq.QuantizedModel` of a classifier.
        pixels: held-out uint8 images [N, H, W, 3] at the model's input size.
    """
    from quant.validate.runners import KerasRunner, TfliteRunner

    preprocess = result.float_model.preprocess
    reference = KerasRunner(result.float_model.model, preprocess).classify(pixels)
    quantized = TfliteRunner(result.tflite, preprocess).classify(pixels)
    return {
        "images": int(len(pixels)),
        "agreement": float(np.mean(reference.argmax(1) == quantized.argmax(1))),
        "mean_abs_diff": float(np.mean(np.abs(reference - quantized))),
    }
