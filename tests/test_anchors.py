"""SSD anchors against the real anchor tensor of Google's SSD MobileNet v1 detect.tflite."""

from __future__ import annotations

import numpy as np
import pytest

from quant.anchors import AnchorConfig, anchors_per_location, box_specs, ssd_anchors
from quant.errors import BadInputError

SIZES_300 = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
SIZES_320 = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def _oracle(shared_data):
    from edgetpu.runtime import make_interpreter

    interpreter = make_interpreter(
        shared_data / "models/ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite")
    interpreter.allocate_tensors()
    (details,) = [d for d in interpreter.get_tensor_details() if d["name"] == "anchors"]
    scale, zero_point = details["quantization"]
    values = interpreter.get_tensor(details["index"]).astype(np.float32)
    return (values - zero_point) * np.float32(scale), scale


def test_anchors_match_the_oracle_to_quantization_precision(shared_data):
    oracle, scale = _oracle(shared_data)
    anchors = ssd_anchors(AnchorConfig(), SIZES_300, (300, 300))
    assert anchors.shape == oracle.shape == (1917, 4)
    assert np.abs(anchors - oracle).max() <= scale / 2 + 1e-6


def test_counts_for_300_and_320():
    config = AnchorConfig()
    assert anchors_per_location(config) == [3, 6, 6, 6, 6, 6]
    assert len(ssd_anchors(config, SIZES_320, (320, 320))) == 2034


def test_layout_is_row_column_then_box():
    anchors = ssd_anchors(AnchorConfig(), SIZES_300)
    first = anchors[:3]
    np.testing.assert_allclose(first[:, :2], [[0.5 / 19, 0.5 / 19]] * 3, rtol=1e-6)
    # lowest layer: (0.1, 1), (0.2, 2), (0.2, 0.5) -> h = s / sqrt(r), w = s * sqrt(r)
    np.testing.assert_allclose(first[:, 2], [0.1, 0.2 / np.sqrt(2), 0.2 * np.sqrt(2)], rtol=1e-6)
    np.testing.assert_allclose(anchors[3, :2], [0.5 / 19, 1.5 / 19], rtol=1e-6)
    last = anchors[-1]  # 1x1 map, interpolated box: sqrt(0.95 * 1.0), ratio 1
    np.testing.assert_allclose(last, [0.5, 0.5, np.sqrt(0.95), np.sqrt(0.95)], rtol=1e-6)


def test_explicit_scales_and_no_interpolated_box():
    config = AnchorConfig(num_layers=2, scales=(0.3, 0.6), aspect_ratios=(1.0,),
                          interpolated_scale_aspect_ratio=0.0,
                          reduce_boxes_in_lowest_layer=False)
    assert box_specs(config) == [[(0.3, 1.0)], [(0.6, 1.0)]]


def test_wrong_number_of_feature_maps_is_a_clear_error():
    with pytest.raises(BadInputError, match="6 layers but the model has 5"):
        ssd_anchors(AnchorConfig(), SIZES_300[:5])
