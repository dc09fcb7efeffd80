"""SSD ResNet v1 FPN (RetinaNet) rows of the zoo against the Object Detection API's source.

Expected names, shapes and counts are read off ``nets/resnet_v1.py`` (``resnet_v1_50`` /
``resnet_v1_101``: root ``conv1`` 7x7 / 2 with 64 channels and ``pool1``, blocks of 3, 4, 6
(23), 3 ``unit_N/bottleneck_v1`` units with ``shortcut`` only where the depth changes,
``conv1`` / ``conv2`` / ``conv3``), ``models/ssd_resnet_v1_fpn_feature_extractor.py``
(scopes ``resnet_v1_50`` and ``fpn`` inside it, ``bottom_up_block5``..., VGG mean
subtraction, ``store_non_strided_activations=True``), ``feature_map_generators.py``
(``fpn_top_down_feature_maps``: ``projection_N`` with biases, ``smoothing_N``), and the
sample configs ``ssd_resnet50_v1_fpn_shared_box_predictor_640x640_coco14_sync.config`` and
``ssd_resnet101_v1_fpn_shared_box_predictor_oid_512x512_sync.config``.
"""

from __future__ import annotations

import numpy as np
import pytest
from ssd_configs import int8_analysis, random_variables, write_export

from edgeq.errors import BadInputError
from edgeq.textproto import parse_text_proto
from quant import zoo
from quant.checkpoints import checkpoint_variable_name
from quant.detection.pipeline_config import ssd_config_from_message
from quant.detection.preprocessing import VGG_MEANS
from quant.detection.sources import feature_map_sizes, load_ssd_checkpoint
from quant.detection.ssd import build_ssd
from quant.models.stats import count_macs

_HYPERPARAMS = "conv_hyperparams { activation: RELU_6, batch_norm { epsilon: 0.001 } }"
CONFIG = """\
model {
  ssd {
    num_classes: %(classes)d
    box_coder { faster_rcnn_box_coder { y_scale: 10.0 x_scale: 10.0 height_scale: 5.0
                                        width_scale: 5.0 } }
    encode_background_as_zeros: true
    anchor_generator {
      multiscale_anchor_generator { min_level: %(min_level)d max_level: 7 anchor_scale: 4.0
                                    aspect_ratios: [1.0, 2.0, 0.5] scales_per_octave: 2 }
    }
    image_resizer { fixed_shape_resizer { height: %(size)d width: %(size)d } }
    box_predictor {
      weight_shared_convolutional_box_predictor {
        depth: 256 class_prediction_bias_init: -4.6 %(hyperparams)s
        num_layers_before_predictor: %(tower)d kernel_size: 3
      }
    }
    feature_extractor {
      type: '%(type)s' %(fpn)s min_depth: 16 depth_multiplier: 1.0 %(hyperparams)s
      override_base_feature_extractor_hyperparams: true
    }
    post_processing {
      batch_non_max_suppression { score_threshold: 1e-8 iou_threshold: 0.6
                                  max_detections_per_class: 100 max_total_detections: 100 }
      score_converter: SIGMOID
    }
  }
}
"""
# zoo row -> sample config fields.
ROWS = {
    "ssd_resnet_50_fpn_coco": {"type": "ssd_resnet50_v1_fpn", "classes": 90, "size": 640,
                               "min_level": 3, "tower": 4, "fpn": ""},
    "ssd_resnet_101_fpn_oidv4": {"type": "ssd_resnet101_v1_fpn", "classes": 601, "size": 512,
                                 "min_level": 2, "tower": 2,
                                 "fpn": "fpn { min_level: 2 max_level: 7 }"},
}
# Checkpoint variables (5 per conv with BatchNorm, 2 per conv with bias):
# ResNet: conv1 + 15 per unit + a shortcut per block (units 16 / 33);
# FPN: projections with biases, smoothing below the top level, bottom_up_block5 and 6;
# predictor: 2 towers x tower convs x (weights + 4 BatchNorm values per feature map), heads.
VARIABLES = {
    "ssd_resnet_50_fpn_coco": 5 + 16 * 15 + 4 * 5 + (3 * 2 + 2 * 5 + 2 * 5)
    + 2 * 4 * (1 + 5 * 4) + 4,
    "ssd_resnet_101_fpn_oidv4": 5 + 33 * 15 + 4 * 5 + (4 * 2 + 3 * 5 + 2 * 5)
    + 2 * 2 * (1 + 6 * 4) + 4,
}
KNOWN_VARIABLES = {
    "resnet_v1_50/conv1/weights": (7, 7, 3, 64),
    "resnet_v1_50/conv1/BatchNorm/moving_variance": (64,),
    "resnet_v1_50/block1/unit_1/bottleneck_v1/shortcut/weights": (1, 1, 64, 256),
    "resnet_v1_50/block1/unit_1/bottleneck_v1/conv2/weights": (3, 3, 64, 64),
    "resnet_v1_50/block2/unit_4/bottleneck_v1/conv1/weights": (1, 1, 512, 128),
    "resnet_v1_50/block3/unit_1/bottleneck_v1/shortcut/weights": (1, 1, 512, 1024),
    "resnet_v1_50/block4/unit_3/bottleneck_v1/conv3/weights": (1, 1, 512, 2048),
    "resnet_v1_50/fpn/projection_1/weights": (1, 1, 512, 256),
    "resnet_v1_50/fpn/projection_3/biases": (256,),
    "resnet_v1_50/fpn/projection_3/weights": (1, 1, 2048, 256),
    "resnet_v1_50/fpn/smoothing_2/weights": (3, 3, 256, 256),
    "resnet_v1_50/fpn/bottom_up_block6/BatchNorm/beta": (256,),
}


def _text(row: str) -> str:
    return CONFIG % {**ROWS[row], "hyperparams": _HYPERPARAMS}


def _config(row: str):
    return ssd_config_from_message(parse_text_proto(_text(row)))


@pytest.fixture(scope="module")
def models():
    return {row: build_ssd(_config(row)) for row in ROWS}


def _shapes(model) -> dict[str, tuple]:
    return {checkpoint_variable_name(layer.name, w.name): tuple(w.shape)
            for layer in model.layers for w in layer.weights}


def test_resnet50_fpn_names_shapes_and_maps(models):
    model = models["ssd_resnet_50_fpn_coco"]
    shapes = _shapes(model)
    for short, shape in KNOWN_VARIABLES.items():
        assert shapes.get(f"FeatureExtractor/{short}") == shape, short
    predictor = "WeightSharedConvolutionalBoxPredictor"
    assert shapes[f"{predictor}/ClassPredictor/weights"] == (3, 3, 256, 6 * 91)
    assert shapes[f"{predictor}/BoxPredictionTower/conv2d_3/BatchNorm/feature_4/moving_mean"] \
        == (256,)
    # Identity shortcuts have no variables.
    assert not any("block1/unit_2/bottleneck_v1/shortcut" in name for name in shapes)
    assert len(shapes) == VARIABLES["ssd_resnet_50_fpn_coco"]
    # Levels 3..7 at 640: strides 8..128; 6 anchors per location.
    assert feature_map_sizes(model) == [(80, 80), (40, 40), (20, 20), (10, 10), (5, 5)]
    assert tuple(model.outputs[1].shape) == (1, (6400 + 1600 + 400 + 100 + 25) * 6, 91)
    # ResNet-50 (23.5 M without its classifier) + FPN + towers: 32.9 M; 76.3 B MACs.
    assert model.count_params() / 1e6 == pytest.approx(32.92, abs=0.01)
    assert count_macs(model) / 1e9 == pytest.approx(76.34, abs=0.01)


def test_resnet_blocks_keep_the_non_strided_activations_and_the_config_activation(models):
    model = models["ssd_resnet_50_fpn_coco"]
    scope = "FeatureExtractor/resnet_v1_50"
    # The endpoint of block1 is at stride 4 (160x160): its stride is a later 1x1 max pool.
    assert tuple(model.get_layer(f"{scope}/block1/unit_3/bottleneck_v1/Relu").output.shape) \
        == (1, 160, 160, 256)
    assert model.get_layer(f"{scope}/block1/subsample").strides == (2, 2)
    assert model.get_layer(f"{scope}/block1/unit_3/bottleneck_v1/conv2").strides == (1, 1)
    # conv2d_same: a 3 + 3 padding then 'VALID'.
    assert model.get_layer(f"{scope}/conv1/Pad").padding == ((3, 3), (3, 3))
    assert model.get_layer(f"{scope}/conv1").padding == "valid"
    # override_base_feature_extractor_hyperparams: ReLU6 and epsilon 0.001 in the backbone;
    # the unit's output stays a plain ReLU (hard-coded in bottleneck).
    assert model.get_layer(f"{scope}/conv1/Relu6").max_value == 6.0
    assert model.get_layer(f"{scope}/conv1/BatchNorm").epsilon == 0.001
    assert model.get_layer(f"{scope}/block4/unit_1/bottleneck_v1/Relu").max_value is None


def test_resnet_default_hyperparams_without_override():
    text = _text("ssd_resnet_50_fpn_coco").replace(
        "override_base_feature_extractor_hyperparams: true", "").replace("640", "256")
    model = build_ssd(ssd_config_from_message(parse_text_proto(text)))
    scope = "FeatureExtractor/resnet_v1_50"
    assert model.get_layer(f"{scope}/conv1/BatchNorm").epsilon == 1e-5
    assert model.get_layer(f"{scope}/conv1/Relu").max_value is None


def test_resnet101_oid_row(models):
    model = models["ssd_resnet_101_fpn_oidv4"]
    shapes = _shapes(model)
    scope = "FeatureExtractor/resnet_v1_101"
    assert shapes[f"{scope}/block3/unit_23/bottleneck_v1/conv3/weights"] == (1, 1, 256, 1024)
    assert shapes[f"{scope}/fpn/projection_1/weights"] == (1, 1, 256, 256)  # block1, level 2
    assert len(shapes) == VARIABLES["ssd_resnet_101_fpn_oidv4"]
    assert feature_map_sizes(model)[0] == (128, 128)
    assert tuple(model.outputs[1].shape) == (1, 21840 * 6, 602)


def test_synthetic_checkpoint_loads_and_a_stray_variable_is_refused(models, tmp_path):
    row = "ssd_resnet_50_fpn_coco"
    variables = random_variables(models[row])
    # The variables do not depend on the input size: the loader builds at 256x256.
    text = _text(row).replace("height: 640 width: 640", "height: 256 width: 256")
    loaded = load_ssd_checkpoint(write_export(tmp_path / "ok", text, variables))
    assert loaded.loaded == len(variables) == VARIABLES[row]
    stray = {"FeatureExtractor/resnet_v1_50/block1/unit_2/bottleneck_v1/shortcut/weights":
             np.zeros((1, 1, 256, 256), np.float32)}
    with pytest.raises(BadInputError, match="took .* of the checkpoint"):
        load_ssd_checkpoint(write_export(tmp_path / "stray", text, variables | stray))


def test_zoo_rows_subtract_the_vgg_means():
    for row in ROWS:
        spec = zoo.get_model(row)
        assert spec.builder == ROWS[row]["type"]
        assert spec.preprocess.mean == VGG_MEANS
        assert spec.preprocess.std == (1.0, 1.0, 1.0)
        assert spec.preprocess.height == ROWS[row]["size"]


@pytest.mark.slow  # about 110 s on 2 busy cores
def test_int8_verdict_names_the_score_tail(tmp_path):
    """Every conv, pool and add of the backbone, FPN and towers maps. 51,150 anchors exceed
    the compiler's row size: the box-offset ADD ([1, 51150, 4]), the class reshapes of the
    three finest levels, both concatenations, the sigmoid and the quantizations before the
    post-processing stay on the CPU, all after the Edge TPU part (as for SSD MobileNet v1
    FPN, with the same anchors)."""
    from quant.detection.sources import random_ssd

    row = "ssd_resnet_50_fpn_coco"
    analysis = int8_analysis(random_ssd(_config(row), row), 640, tmp_path)
    assert analysis.cpu_ops == {"ADD": 1, "CONCATENATION": 2, "LOGISTIC": 1, "QUANTIZE": 2,
                                "RESHAPE": 3, "TFLite_Detection_PostProcess": 1}
