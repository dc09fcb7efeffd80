"""SSD anchors against the real anchor tensor of Google's SSD MobileNet v1 detect.tflite, and
multiscale (RetinaNet / FPN) anchors against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.errors import BadInputError
from quant.detection.anchors import (
    AnchorConfig,
    MultiscaleAnchorConfig,
    anchors_per_location,
    box_specs,
    ssd_anchors,
)

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


SMALL_MULTISCALE = MultiscaleAnchorConfig(min_level=3, max_level=4, anchor_scale=4.0,
                                          aspect_ratios=(1.0, 2.0), scales_per_octave=2)


def test_multiscale_first_cells_by_hand():
    """64x64 image, levels 3 (stride 8, 8x8 map) and 4 (stride 16, 4x4 map): base box
    4 * stride pixels, scales 1 and sqrt(2), ratios 1 and 2 (ratio-major), centre offset half a
    stride, all divided by 64."""
    anchors = ssd_anchors(SMALL_MULTISCALE, [(8, 8), (4, 4)], (64, 64))
    assert anchors_per_location(SMALL_MULTISCALE) == [4, 4]
    assert anchors.shape == ((64 + 16) * 4, 4)
    r2 = np.sqrt(2.0)
    # level 3, cell (0, 0): centre 4 px; base 32 px = 0.5
    np.testing.assert_allclose(anchors[:4], [
        [0.0625, 0.0625, 0.5, 0.5],            # ratio 1, scale 1
        [0.0625, 0.0625, 0.5 * r2, 0.5 * r2],  # ratio 1, scale sqrt(2)
        [0.0625, 0.0625, 0.5 / r2, 0.5 * r2],  # ratio 2 (w / h), scale 1
        [0.0625, 0.0625, 0.5, 1.0],            # ratio 2, scale sqrt(2)
    ], rtol=1e-6)
    np.testing.assert_allclose(anchors[4, :2], [4 / 64, 12 / 64], rtol=1e-6)  # cell (0, 1)
    np.testing.assert_allclose(anchors[8 * 4, :2], [12 / 64, 4 / 64], rtol=1e-6)  # cell (1, 0)
    # level 4, cell (0, 0): centre 8 px, base 64 px
    np.testing.assert_allclose(anchors[256], [0.125, 0.125, 1.0, 1.0], rtol=1e-6)


def test_multiscale_offset_is_zero_where_the_side_is_no_multiple_of_the_stride():
    """72 rows: 72 % 8 == 0 (level 3 offset 4 px), 72 % 16 != 0 (level 4 offset 0); each
    side is normalized by its own length."""
    anchors = ssd_anchors(SMALL_MULTISCALE, [(9, 8), (5, 4)], (72, 64))
    np.testing.assert_allclose(anchors[0], [4 / 72, 4 / 64, 32 / 72, 32 / 64], rtol=1e-6)
    np.testing.assert_allclose(anchors[9 * 8 * 4], [0.0, 8 / 64, 64 / 72, 1.0], rtol=1e-6)
    pixels = ssd_anchors(
        MultiscaleAnchorConfig(3, 4, 4.0, (1.0, 2.0), 2, normalize_coordinates=False),
        [(9, 8), (5, 4)], (72, 64))
    np.testing.assert_allclose(pixels[0], [4, 4, 32, 32], rtol=1e-6)


def test_multiscale_zoo_fpn_640():
    anchors = ssd_anchors(MultiscaleAnchorConfig(), [(80, 80), (40, 40), (20, 20), (10, 10),
                                                     (5, 5)], (640, 640))
    assert anchors.shape == (6 * (80**2 + 40**2 + 20**2 + 10**2 + 5**2), 4) == (51150, 4)
    np.testing.assert_allclose(anchors[0], [4 / 640, 4 / 640, 32 / 640, 32 / 640], rtol=1e-6)
    # level 7 (stride 128, base 512 px), last cell (4, 4), ratio 0.5, scale sqrt(2)
    h, w = 512 * np.sqrt(2) / np.sqrt(0.5), 512 * np.sqrt(2) * np.sqrt(0.5)
    np.testing.assert_allclose(anchors[-1], np.array([576, 576, h, w]) / 640, rtol=1e-6)
    with pytest.raises(BadInputError, match="5 layers but the model has 4"):
        ssd_anchors(MultiscaleAnchorConfig(), [(80, 80)] * 4, (640, 640))
