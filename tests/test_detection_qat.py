"""Quantization-aware tflite_graph.pb -> uint8 .tflite with the post-processing op."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from edgeq._tensorflow import tf
from edgeq.errors import BadInputError
from edgetpu.adapters import detection_outputs, get_objects
from quant.detection.postprocess import read_postprocess
from quant.detection.tflite_graph import convert_tflite_graph


def _tflite_graph(path, max_detections: int = 5) -> None:
    """Write a tiny frozen graph as export_tflite_ssd_graph.py lays it out (fake-quant)."""
    from tensorflow.core.framework import attr_value_pb2, types_pb2

    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.float32, [1, 8, 8, 3],
                                         name="normalized_input_image_tensor")
        x = tf.quantization.fake_quant_with_min_max_args(image, -1.0, 1.0)
        kernel = tf.quantization.fake_quant_with_min_max_args(
            tf.constant(rng.normal(0, 0.1, (1, 1, 3, 7)).astype(np.float32)), -0.5, 0.5)
        y = tf.quantization.fake_quant_with_min_max_args(tf.nn.conv2d(x, kernel, 1, "SAME"),
                                                         -4.0, 4.0)
        tf.identity(tf.reshape(y[..., :4], [1, 64, 4]), name="raw_outputs/box_encodings")
        scores = tf.sigmoid(tf.reshape(y[..., 4:], [1, 64, 3]))
        tf.identity(tf.quantization.fake_quant_with_min_max_args(scores, 0.0, 1.0),
                    name="raw_outputs/class_predictions")
        centres = (np.arange(8) + 0.5) / 8
        yc, xc = np.meshgrid(centres, centres, indexing="ij")
        anchors = np.stack([yc.ravel(), xc.ravel(), np.full(64, 0.2), np.full(64, 0.2)], 1)
        tf.constant(anchors.astype(np.float32), name="anchors")
    graph_def = graph.as_graph_def()
    node = graph_def.node.add()
    node.name = node.op = "TFLite_Detection_PostProcess"
    node.input.extend(["raw_outputs/box_encodings", "raw_outputs/class_predictions", "anchors"])
    ints = {"max_detections": max_detections, "max_classes_per_detection": 1, "num_classes": 2}
    floats = {"nms_score_threshold": 1e-8, "nms_iou_threshold": 0.6, "y_scale": 10.0,
              "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0}
    for key, value in ints.items():
        node.attr[key].CopyFrom(attr_value_pb2.AttrValue(i=value))
    for key, value in floats.items():
        node.attr[key].CopyFrom(attr_value_pb2.AttrValue(f=value))
    node.attr["_output_quantized"].CopyFrom(attr_value_pb2.AttrValue(b=True))
    node.attr["_output_types"].list.type.extend([types_pb2.DT_FLOAT] * 4)
    path.write_bytes(graph_def.SerializeToString())


def test_archive_with_tflite_graph_converts_to_uint8_detector(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    folder = tmp_path / "ssd_tiny_quantized"
    folder.mkdir()
    _tflite_graph(folder / "tflite_graph.pb")
    archive = tmp_path / "ssd_tiny_quantized.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    data = convert_tflite_graph(archive, input_size=(8, 8))
    settings = read_postprocess(data)
    assert (settings.max_detections, settings.num_classes) == (5, 2)
    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    assert inp["dtype"] == np.uint8
    scale, zero_point = inp["quantization"]
    assert zero_point == 128 and scale == pytest.approx(1 / 128, rel=0.01)  # [-1, 1]
    detection_outputs(interpreter)  # four outputs found by shape and name
    interpreter.set_tensor(inp["index"], np.full((1, 8, 8, 3), 200, np.uint8))
    interpreter.invoke()
    objects = get_objects(interpreter)
    assert 0 < len(objects) <= 5
    assert all(0 <= o.label_id < 2 and 0 < o.score <= 1 for o in objects)


def test_float_archive_has_no_tflite_graph(shared_data):
    with pytest.raises(BadInputError, match="holds no tflite_graph.pb"):
        convert_tflite_graph(
            shared_data / "models/ssd_mobilenet_v1_0.75_depth_300x300_coco_float.tar.gz")


def test_garbage_graph_is_a_clear_error(tmp_path):
    (tmp_path / "tflite_graph.pb").write_bytes(b"\x00garbage")
    with pytest.raises(BadInputError, match="tflite_graph.pb"):
        convert_tflite_graph(tmp_path / "tflite_graph.pb", (8, 8))
