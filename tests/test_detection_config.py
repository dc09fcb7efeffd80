"""pipeline.config parsing and label files."""

from __future__ import annotations

import pytest
from ssd_configs import pipeline_text

from edgeq.errors import BadInputError
from edgeq.textproto import parse_text_proto
from edgetpu.labels import label_name, read_labels
from quant.detection.anchors import AnchorConfig, MultiscaleAnchorConfig
from quant.detection.pipeline_config import read_ssd_config, ssd_config_from_message
from quant.fetch import locate_checkpoint


def test_text_format_values_lists_and_comments():
    message = parse_text_proto(
        "a: 1 b: -2.5e-3 c: 'x y' d: true # comment\n"
        "e { f: RELU_6, g < h: [1, 2] > } e { f: RELU }\n"
    )
    assert message["a"] == [1] and message["b"] == [-2.5e-3] and message["c"] == ["x y"]
    assert message["d"] == [True]
    assert [e["f"][0] for e in message["e"]] == ["RELU_6", "RELU"]
    assert message["e"][0]["g"][0]["h"] == [1, 2]


@pytest.mark.parametrize("text", ["a { b: 1", "a: ", "a { } }", "a: 'open"])
def test_malformed_text_is_a_clear_error(text):
    with pytest.raises(BadInputError):
        parse_text_proto(text, "bad.config")


def test_the_shared_archive_config(shared_data):
    files = locate_checkpoint(
        shared_data / "models/ssd_mobilenet_v1_0.75_depth_300x300_coco_float.tar.gz")
    config = read_ssd_config(files.pipeline_config)
    assert config.num_classes == 90 and config.image_size == (300, 300)
    extractor = config.feature_extractor
    assert (extractor.type, extractor.depth_multiplier, extractor.min_depth) == (
        "ssd_mobilenet_v1", 0.75, 16)
    assert extractor.activation == "RELU_6"
    assert config.anchors.aspect_ratios == (1.0, 2.0, 0.5, 3.0, 0.3333)
    assert (config.box_coder.y_scale, config.box_coder.height_scale) == (10.0, 5.0)
    assert (config.nms.iou_threshold, config.nms.max_total_detections) == (0.6, 100)
    assert config.nms.score_converter == "SIGMOID"


def test_ssdlite_config_fields():
    config = ssd_config_from_message(parse_text_proto(pipeline_text("ssdlite_mobilenet_v2")))
    assert config.feature_extractor.use_depthwise and config.box_predictor.use_depthwise
    assert config.box_predictor.kernel_size == 3


def test_ppn_zoo_config_fields():
    config = ssd_config_from_message(parse_text_proto(pipeline_text("ssd_mobilenet_v1_ppn")))
    assert config.feature_extractor.type == "ssd_mobilenet_v1_ppn"
    predictor = config.box_predictor
    assert predictor.weight_shared and predictor.share_prediction_tower and predictor.batch_norm
    assert (predictor.depth, predictor.num_layers_before_predictor, predictor.kernel_size) == (
        512, 1, 1)
    assert isinstance(config.anchors, AnchorConfig)
    assert config.anchors.min_scale == 0.15 and not config.anchors.reduce_boxes_in_lowest_layer


def test_fpn_zoo_config_fields():
    text = pipeline_text("ssd_mobilenet_v1_fpn")
    config = ssd_config_from_message(parse_text_proto(text))
    extractor, predictor = config.feature_extractor, config.box_predictor
    assert (extractor.type, extractor.fpn_min_level, extractor.fpn_max_level,
            extractor.additional_layer_depth) == ("ssd_mobilenet_v1_fpn", 3, 7, 256)
    assert predictor.weight_shared and not predictor.share_prediction_tower
    assert (predictor.depth, predictor.num_layers_before_predictor, predictor.kernel_size) == (
        256, 4, 3)
    assert config.anchors == MultiscaleAnchorConfig(3, 7, 4.0, (1.0, 2.0, 0.5), 2)
    assert config.image_size == (640, 640) and config.encode_background_as_zeros
    text = text.replace("type: 'ssd_mobilenet_v1_fpn'", "type: 'ssd_mobilenet_v1_fpn' fpn { "
                        "min_level: 2 max_level: 6 additional_layer_depth: 128 }")
    text = text.replace("kernel_size: 3", "").replace("scales_per_octave: 2", "")
    text = text.replace("anchor_scale: 4.0", "anchor_scale: 3.0 normalize_coordinates: false")
    config = ssd_config_from_message(parse_text_proto(text))
    extractor = config.feature_extractor
    assert (extractor.fpn_min_level, extractor.fpn_max_level,
            extractor.additional_layer_depth) == (2, 6, 128)
    assert config.box_predictor.kernel_size == 3  # the weight-shared predictor's default
    assert config.anchors == MultiscaleAnchorConfig(3, 7, 3.0, (1.0, 2.0, 0.5), 2, False)


def test_non_ssd_and_dynamic_resizer_are_refused():
    with pytest.raises(BadInputError, match="not ssd"):
        ssd_config_from_message(parse_text_proto("model { faster_rcnn { num_classes: 3 } }"))
    text = pipeline_text("ssd_mobilenet_v2").replace(
        "fixed_shape_resizer { height: 300 width: 300 }",
        "keep_aspect_ratio_resizer { min_dimension: 300 }")
    with pytest.raises(BadInputError, match="fixed_shape_resizer"):
        ssd_config_from_message(parse_text_proto(text))


def test_label_formats(tmp_path, shared_data):
    od_map = read_labels(shared_data / "models/ssd_mobilenet_v1_0.75_depth_labelmap.txt")
    coral = read_labels(shared_data / "coral/coco_labels.txt")
    assert od_map[0] == coral[0] == "person" and od_map[37] == coral[37] == "kite"
    assert 11 not in od_map and 11 not in coral  # '???' / 'n/a' placeholders
    (tmp_path / "pairs.txt").write_text("0  person\n1  bicycle\n")
    (tmp_path / "ids.txt").write_text("1 person\n2 bicycle\n")
    (tmp_path / "map.pbtxt").write_text(
        "item { id: 1 name: '/m/01g317' display_name: 'person' }\n"
        "item { id: 2 name: 'bicycle' }\n")
    for name in ("pairs.txt", "ids.txt", "map.pbtxt"):
        assert read_labels(tmp_path / name) == {0: "person", 1: "bicycle"}, name
    assert label_name({}, 5) == "5"
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(BadInputError, match="empty"):
        read_labels(tmp_path / "empty.txt")
