"""PTQ end to end on small real models: int8 only, batch 1, Edge TPU op set; CLE exactness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tflite
from PIL import Image

from edgeq._tensorflow import keras
from edgeq.errors import BadInputError
from edgeq.images import inception_preprocess
from quant.calibration import calibration_set
from quant.float_model import FloatModel
from quant.models import build_classifier
from quant.preprocess import PreprocessOptions
from quant.ptq import QuantizeOptions, quantize_model, save
from quant.ptq.equalize import equalize, find_pairs
from quant.sources import load_float_model
from quant.tflite_edit import get_array, read_model, write_model

INT8, UINT8, INT32 = tflite.TensorType.INT8, tflite.TensorType.UINT8, tflite.TensorType.INT32


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Twelve small random RGB JPEGs (and one file that is not an image)."""
    folder = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def small_v2():
    model = build_classifier("mobilenet_v2", 96, 0.35)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    return FloatModel(model=model, preprocess=inception_preprocess(96), name="tiny_v2",
                      task="classify", source="test")


def _assert_edgetpu_ready(tflite: bytes, io_type: str = "uint8") -> None:
    graph = read_model(tflite).subgraphs[0]
    io_code = {"uint8": UINT8, "int8": INT8}[io_type]
    io = {int(i) for i in graph.inputs} | {int(i) for i in graph.outputs}
    for index, tensor in enumerate(graph.tensors):
        allowed = {io_code} if index in io else {INT8, INT32}
        assert tensor.type in allowed | {INT8}, (tensor.name, tensor.type)
    assert list(graph.tensors[graph.inputs[0]].shape)[0] == 1
    assert all(s > 0 for t in graph.tensors for s in (t.shapeSignature
                                                         if t.shapeSignature is not None
                                                         else t.shape))


def test_small_mobilenet_v2_end_to_end(tmp_path, image_dir, small_v2):
    calibration = calibration_set(small_v2, str(image_dir), size=8, seed=0, progress=False)
    assert len(calibration.paths) == 8 and len(calibration.unused) == 4
    result = quantize_model(small_v2, calibration)
    _assert_edgetpu_ready(result.tflite)
    paths = save(result, tmp_path / "out")
    assert [p.name for p in paths] == ["tiny_v2_int8.tflite", "tiny_v2_int8.json",
                                       "tiny_v2_int8.md"]
    sidecar = json.loads(paths[1].read_text())
    assert sidecar["options"]["io_type"] == "uint8"
    assert sidecar["derived"]["dataset"]["images"] == 8
    assert sidecar["preprocess"]["height"] == 96
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left


def _user_model():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, activation="relu6")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def test_user_keras_and_saved_model(tmp_path, image_dir):
    model = _user_model()
    model.save(tmp_path / "user.keras")
    model.save(tmp_path / "user_saved", save_format="tf")
    for source in (tmp_path / "user.keras", tmp_path / "user_saved"):
        float_model = load_float_model(str(source), preprocess=PreprocessOptions(
            input_range=(0.0, 1.0)))
        calibration = calibration_set(float_model, str(image_dir), size=4, progress=False)
        _assert_edgetpu_ready(quantize_model(float_model, calibration).tflite)


def test_int8_io_per_tensor_mse_ranges(tmp_path, image_dir):
    model = _user_model()
    model.save(tmp_path / "user.keras")
    float_model = load_float_model(str(tmp_path / "user.keras"),
                                   preprocess=PreprocessOptions(input_range=(-1.0, 1.0)))
    calibration = calibration_set(float_model, str(image_dir), size=4, progress=False)
    result = quantize_model(float_model, calibration,
                            QuantizeOptions(io_type="int8", per_tensor=True, ranges="mse",
                                            range_images=2))
    _assert_edgetpu_ready(result.tflite, "int8")
    assert result.ranges_changed > 0


def test_cle_keeps_the_function(small_v2):
    """Equalization keeps ReLU6 and the float outputs on the images it measured."""
    rng = np.random.default_rng(2)
    # Large inputs: many channels reach the ReLU6 clip, where equalization must hold back.
    images = [rng.uniform(-30, 30, (1, 96, 96, 3)).astype(np.float32) for _ in range(4)]
    equalized, report = equalize(small_v2.model, images)
    assert len(report.pairs) == 34 == len(find_pairs(small_v2.model))
    changed = [a.name for a, b in zip(small_v2.model.layers, equalized.layers, strict=True)
               if a.get_weights() and not all(np.array_equal(x, y) for x, y in
                                              zip(a.get_weights(), b.get_weights(), strict=True))]
    assert changed  # something was rescaled
    assert all(type(a) is type(b) for a, b in zip(small_v2.model.layers, equalized.layers,
                                                  strict=True))
    for x in images:
        expected = small_v2.model(x).numpy()
        np.testing.assert_allclose(equalized(x).numpy(), expected, rtol=1e-4,
                                   atol=1e-4 * np.abs(expected).max())


def test_empty_calibration_folder(tmp_path, small_v2):
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(BadInputError, match="no calibration images"):
        calibration_set(small_v2, str(tmp_path), progress=False)


def test_unreadable_images_are_counted(tmp_path, small_v2):
    for i in range(3):
        (tmp_path / f"broken{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BadInputError, match="none of the 3 calibration files"):
        calibration_set(small_v2, str(tmp_path), progress=False)


def test_manifest(tmp_path, image_dir, small_v2):
    manifest = tmp_path / "set.txt"
    manifest.write_text("\n".join(str(p) for p in sorted(image_dir.glob("*.jpg"))[:3]))
    assert len(calibration_set(small_v2, str(manifest), progress=False).paths) == 3
    manifest.write_text("missing.jpg\n")
    with pytest.raises(BadInputError, match="listed files are missing"):
        calibration_set(small_v2, str(manifest), progress=False)


def test_raw_pixel_input_is_exact(image_dir):
    """uint8 input with scale 1/std and zero point round(mean); the shift folded into biases."""
    from quant.ptq import convert
    from quant.ptq.pixel_input import exact_pixel_input

    model = _user_model()
    preprocess = inception_preprocess(32)
    images = [preprocess.load(p)[None] for p in sorted(image_dir.glob("*.jpg"))[:4]]
    calibrated = convert.calibrate(model, lambda: iter(images))
    fixed = write_model(exact_pixel_input(read_model(calibrated), preprocess, "uint8"))
    before, after = read_model(calibrated).subgraphs[0], read_model(fixed).subgraphs[0]
    stats = after.tensors[after.inputs[0]].quantization
    assert (stats.min[0], stats.max[0]) == pytest.approx((-128 / 127.5, 127 / 127.5))
    weights = model.layers[1].get_weights()[0]  # [kh, kw, in, out]
    delta = (127.5 - 128) / 127.5
    conv = before.operators[0]
    old = np.frombuffer(bytes(read_model(calibrated).buffers[
        before.tensors[conv.inputs[2]].buffer].data), np.float32)
    new = np.frombuffer(bytes(read_model(fixed).buffers[
        after.tensors[conv.inputs[2]].buffer].data), np.float32)
    np.testing.assert_allclose(old - new, delta * weights.sum(axis=(0, 1, 2)), rtol=1e-4,
                               atol=1e-7)
    quantized = read_model(convert.quantize(fixed, "uint8")).subgraphs[0]
    scale, zero_point = (quantized.tensors[quantized.inputs[0]].quantization.scale[0],
                         quantized.tensors[quantized.inputs[0]].quantization.zeroPoint[0])
    assert (scale, zero_point) == (pytest.approx(1 / 127.5), 128)


def test_raw_pixel_input_is_exact_through_an_explicit_padding(image_dir):
    """TF-slim's fixed padding before a stride-2 conv stays a PAD op (it is not 'SAME'):
    the PAD output keeps the input's range and the conv behind it gets the bias shift."""
    from quant.ptq import convert
    from quant.ptq.pixel_input import exact_pixel_input

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.ZeroPadding2D(((1, 1), (1, 1)))(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    preprocess = inception_preprocess(32)
    images = [preprocess.load(p)[None] for p in sorted(image_dir.glob("*.jpg"))[:4]]
    calibrated = read_model(convert.calibrate(model, lambda: iter(images)))
    graph = calibrated.subgraphs[0]
    pad, conv = graph.operators[:2]
    old_bias = get_array(calibrated, conv.inputs[2]).copy()
    fixed = exact_pixel_input(calibrated, preprocess, "uint8")
    for index in (graph.inputs[0], pad.outputs[0]):
        stats = graph.tensors[index].quantization
        assert (stats.min[0], stats.max[0]) == pytest.approx((-128 / 127.5, 127 / 127.5))
    weights = model.layers[2].get_weights()[0]
    np.testing.assert_allclose(old_bias - get_array(fixed, conv.inputs[2]),
                               (127.5 - 128) / 127.5 * weights.sum(axis=(0, 1, 2)), rtol=1e-4,
                               atol=1e-7)


def test_bias_correction_modes():
    auto, on, off = (QuantizeOptions(bias_correction=m) for m in ("auto", "on", "off"))
    assert auto.corrects_bias("classify") and not auto.corrects_bias("detect")
    assert on.corrects_bias("detect") and not off.corrects_bias("classify")
    with pytest.raises(BadInputError, match="bias_correction"):
        QuantizeOptions(bias_correction="yes")
