"""TFLite_Detection_PostProcess appended to converted models: attributes and real decoding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeq._tensorflow import keras, tf
from edgeq.errors import BadInputError
from quant.detection.postprocess import (
    DetectionHead,
    PostProcessSettings,
    append_postprocess,
    read_postprocess,
    replace_postprocess_settings,
)

# Four anchors (yc, xc, h, w) and two classes + background.
ANCHORS = np.array([[0.25, 0.25, 0.2, 0.2], [0.25, 0.75, 0.3, 0.2],
                    [0.75, 0.25, 0.2, 0.4], [0.75, 0.75, 0.4, 0.4]], np.float32)
# Class scores per anchor (background, class 0, class 1); anchor 2 is below threshold.
SCORES = np.array([[0.0, 0.9, 0.1], [0.0, 0.2, 0.8], [0.0, 0.05, 0.02], [0.0, 0.6, 0.3]],
                  np.float32)
SETTINGS = PostProcessSettings(num_classes=2, max_detections=4, nms_score_threshold=0.1,
                               nms_iou_threshold=0.5)


def _tiny_ssd():
    """A model whose outputs are constant: zero box encodings, the SCORES above."""
    inputs = keras.Input((4, 4, 3), batch_size=1)
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    zero = keras.layers.Dense(16, kernel_initializer="zeros", bias_initializer="zeros")(pooled)
    boxes = keras.layers.Reshape((4, 4))(zero)
    clipped = np.clip(SCORES, 1e-4, 1 - 1e-4)
    dense = keras.layers.Dense(12, kernel_initializer="zeros", bias_initializer=(
        keras.initializers.Constant(np.log(clipped / (1 - clipped)).ravel())))(pooled)
    scores = keras.layers.Activation("sigmoid")(keras.layers.Reshape((4, 3))(dense))
    return keras.Model(inputs, [boxes, scores])


def _convert(model, quantized: str | None) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantized:
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.uniform(-1, 1, (1, 4, 4, 3)).astype(np.float32)] for _ in range(4))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = {
            "uint8": tf.uint8, "int8": tf.int8}[quantized]
    return converter.convert()


def _run(data: bytes) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"])
            for d in interpreter.get_output_details()}


@pytest.fixture(scope="module")
def tiny_ssd():
    return _tiny_ssd()


@pytest.mark.parametrize(("quantized", "exact"), [
    (None, False), ("uint8", False), ("int8", False), ("int8", True)])
def test_appended_op_decodes_the_anchors(tiny_ssd, quantized, exact):
    data = append_postprocess(_convert(tiny_ssd, quantized), DetectionHead(SETTINGS, ANCHORS),
                              exact_anchors=exact)
    assert read_postprocess(data) == SETTINGS
    out = _run(data)
    count = int(out["TFLite_Detection_PostProcess:3"][0])
    classes = out["TFLite_Detection_PostProcess:1"][0, :count]
    scores = out["TFLite_Detection_PostProcess:2"][0, :count]
    boxes = out["TFLite_Detection_PostProcess"][0, :count]
    # Zero encodings decode to the anchors themselves; anchor 2 is under the threshold.
    assert count == 3
    assert classes.tolist() == [0, 1, 0]
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.6], atol=0.02)
    corners = np.stack([ANCHORS[:, 0] - ANCHORS[:, 2] / 2, ANCHORS[:, 1] - ANCHORS[:, 3] / 2,
                        ANCHORS[:, 0] + ANCHORS[:, 2] / 2, ANCHORS[:, 1] + ANCHORS[:, 3] / 2], 1)
    tolerance = 1e-5 if quantized is None or exact else 0.01
    np.testing.assert_allclose(boxes, corners[[0, 1, 3]], atol=tolerance)


def test_settings_round_trip_and_replace(tiny_ssd):
    data = append_postprocess(_convert(tiny_ssd, None), DetectionHead(SETTINGS, ANCHORS))
    changed = replace_postprocess_settings(data, max_detections=2, nms_iou_threshold=0.3)
    assert read_postprocess(changed) == dataclasses.replace(
        SETTINGS, max_detections=2, nms_iou_threshold=0.3)
    assert (_run(changed)["TFLite_Detection_PostProcess"]).shape == (1, 2, 4)
    with pytest.raises(BadInputError, match="already ends"):
        append_postprocess(data, DetectionHead(SETTINGS, ANCHORS))
    with pytest.raises(BadInputError, match="unexpected keyword|got an unexpected"):
        replace_postprocess_settings(data, max_boxes=3)


def test_shared_model_settings_are_read(shared_data):
    path = shared_data / "models/ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite"
    settings = read_postprocess(path.read_bytes())
    assert (settings.num_classes, settings.max_detections) == (90, 10)
    assert settings.nms_iou_threshold == pytest.approx(0.6)
    assert (settings.y_scale, settings.h_scale) == (10.0, 5.0)


def test_mismatched_outputs_and_plain_models_are_refused(tiny_ssd):
    data = _convert(tiny_ssd, None)
    assert read_postprocess(data) is None
    with pytest.raises(BadInputError, match="not box encodings"):
        append_postprocess(data, DetectionHead(SETTINGS, np.zeros((5, 4), np.float32)))
    with pytest.raises(BadInputError, match="no TFLite_Detection_PostProcess"):
        replace_postprocess_settings(data, max_detections=3)


def _offset_ssd(encodings: np.ndarray):
    """A model whose box encodings are the constant ``encodings`` [A, 4] (scores as above)."""
    inputs = keras.Input((4, 4, 3), batch_size=1)
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(encodings.size, kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(encodings.ravel()))
    boxes = keras.layers.Reshape(encodings.shape)(dense(pooled))
    scores = keras.layers.Dense(len(encodings) * 3, kernel_initializer="zeros",
                                bias_initializer="ones")(pooled)
    scores = keras.layers.Activation("sigmoid")(keras.layers.Reshape((len(encodings), 3))(scores))
    return keras.Model(inputs, [boxes, scores])


def _decode(encodings: np.ndarray, anchors: np.ndarray, settings) -> np.ndarray:
    """Return the corner boxes [A, 4] the op decodes (numpy, float anchors)."""
    y = encodings[:, 0] / settings.y_scale * anchors[:, 2] + anchors[:, 0]
    x = encodings[:, 1] / settings.x_scale * anchors[:, 3] + anchors[:, 1]
    h = np.exp(encodings[:, 2] / settings.h_scale) * anchors[:, 2]
    w = np.exp(encodings[:, 3] / settings.w_scale) * anchors[:, 3]
    return np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], 1)


@pytest.mark.parametrize("offsets", [False, True])
def test_box_offsets_make_uint8_anchors_decode_like_float_ones(offsets):
    from quant.detection.postprocess import anchor_offsets
    from quant.ptq import box_offsets, convert
    from quant.tflite_edit import read_model, write_model

    rng = np.random.default_rng(3)
    count = 6
    # Small anchors off the uint8 grid (the largest value, 0.9, sets the step 0.0035).
    anchors = np.column_stack([rng.uniform(0.1, 0.9, (count, 2)), rng.uniform(0.03, 0.1,
                               (count, 2))]).astype(np.float32)
    anchors[0, 0] = 0.9
    encodings = rng.uniform(-0.5, 0.5, (count, 4)).astype(np.float32)
    settings = PostProcessSettings(num_classes=2, max_detections=count,
                                   max_classes_per_detection=1, nms_score_threshold=0.1,
                                   nms_iou_threshold=1.0)
    head = DetectionHead(settings, anchors)
    calibrated = convert.calibrate(_offset_ssd(encodings), lambda: (
        rng.uniform(-1, 1, (1, 4, 4, 3)).astype(np.float32) for _ in range(4)))
    if offsets:
        calibrated = write_model(box_offsets.add_box_offsets(read_model(calibrated),
                                                             anchor_offsets(head)))
    out = _run(append_postprocess(convert.quantize(calibrated, "uint8"), head))
    boxes = out["TFLite_Detection_PostProcess"][0, :count]
    expected = _decode(encodings, anchors, settings)
    # Each decoded box matches one expected box; compare with the nearest.
    errors = np.abs(boxes[:, None, :] - expected[None]).max(-1).min(-1)
    sizes = anchors[:, 2:].min()
    if offsets:
        assert errors.max() < 0.02 * sizes  # within 2% of the smallest anchor
    else:
        assert errors.max() > 0.02 * sizes  # uint8 anchors alone are off by more
