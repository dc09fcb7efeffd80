"""HARD_SWISH lowered to ADD + ReLU6, MUL, MUL: every op maps, and int8 accuracy is kept."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from edgeq._tensorflow import keras
from edgeq.images import inception_preprocess
from edgetpu.analyze import analyze_model
from quant.calibration import CalibrationSet
from quant.float_model import FloatModel
from quant.models.mobilenet_v3 import activation
from quant.ptq import QuantizeOptions, hard_swish, quantize_model

SIZE = 32


def _model():
    """Conv -> hard-swish -> depthwise -> hard-swish: the v3 pattern, activations out."""
    inputs = keras.Input((SIZE, SIZE, 3), batch_size=1)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(inputs)
    x = activation("hard_swish", "a")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    return keras.Model(inputs, activation("hard_swish", "b")(x))


def _outputs(tflite: bytes, pixels: np.ndarray) -> np.ndarray:
    from edgetpu.runtime import make_interpreter

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.tflite"
        path.write_bytes(tflite)
        interpreter = make_interpreter(path)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for image in pixels:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        scale, zero_point = out["quantization"]
        rows.append((interpreter.get_tensor(out["index"])[0].astype(np.float32) - zero_point)
                    * scale)
    return np.stack(rows)


@pytest.fixture(scope="module")
def quantized():
    rng = np.random.default_rng(0)
    model = _model()
    float_model = FloatModel(model=model, preprocess=inception_preprocess(SIZE), name="hs",
                             task="classify", source="test")
    pixels = rng.integers(0, 256, (16, SIZE, SIZE, 3), dtype=np.uint8)
    calibration = CalibrationSet(pixels[:8], (), "random", "-")
    lowered = quantize_model(float_model, calibration).tflite
    original = hard_swish.lower_hard_swish
    hard_swish.lower_hard_swish = lambda calibrated: calibrated
    try:
        fused = quantize_model(float_model, calibration,
                               QuantizeOptions(require_edgetpu=False)).tflite
    finally:
        hard_swish.lower_hard_swish = original
    reference = model.predict(inception_preprocess(SIZE).normalize(pixels[8:]), verbose=0)
    return lowered, fused, pixels[8:], reference


def test_every_op_maps_after_lowering(quantized, tmp_path):
    lowered, fused, _, _ = quantized
    for name, data in (("lowered", lowered), ("fused", fused)):
        (tmp_path / f"{name}.tflite").write_bytes(data)
    assert analyze_model(tmp_path / "fused.tflite").cpu_ops["HARD_SWISH"] == 2
    analysis = analyze_model(tmp_path / "lowered.tflite")
    assert not analysis.cpu_ops
    assert "HARD_SWISH" not in {op.opcode for op in analysis.ops}


def test_lowered_int8_is_as_accurate_as_the_fused_op(quantized):
    lowered, fused, pixels, reference = quantized
    error_lowered = np.abs(_outputs(lowered, pixels) - reference).mean()
    error_fused = np.abs(_outputs(fused, pixels) - reference).mean()
    assert error_lowered <= 1.5 * error_fused + 1e-3 * np.abs(reference).mean()


def test_models_without_hard_swish_are_unchanged():
    model = keras.Sequential([keras.Input((4,), batch_size=1), keras.layers.Dense(2)])
    from quant.ptq import convert
    from quant.tflite_edit import read_model

    calibrated = read_model(convert.calibrate(
        model, lambda: (np.ones((1, 4), np.float32) for _ in range(2))))
    assert hard_swish.lower_hard_swish(calibrated) is calibrated
