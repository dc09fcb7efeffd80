"""SSD Inception v2 (``ssd_inception_v2_coco``) against the Object Detection API's source.

Expected names, shapes and counts are read off ``nets/inception_v2.py``
(``inception_v2_base``: the separable ``Conv2d_1a_7x7`` with a depthwise multiplier of 8,
``Conv2d_2b_1x1``, ``Conv2d_2c_3x3``, modules ``Mixed_3b`` ... ``Mixed_5c`` with
``Branch_N/Conv2d_0a_1x1``..., ``Mixed_5c``'s ``Branch_3/MaxPool_0a_3x3``),
``models/ssd_inception_v2_feature_extractor.py`` (scope ``InceptionV2``, ``from_layer``
``Mixed_4c`` and ``Mixed_5c`` then 512, 256, 256, 128, the config's hyperparameters over
the backbone) and ``samples/configs/ssd_inception_v2_coco.config`` (3x3 box predictors).
"""

from __future__ import annotations

import pytest
from ssd_configs import int8_analysis, random_variables, write_export

from edgeq.errors import BadInputError
from edgeq.textproto import parse_text_proto
from quant.checkpoints import checkpoint_variable_name
from quant.detection.pipeline_config import ssd_config_from_message
from quant.detection.sources import feature_map_sizes, load_ssd_checkpoint
from quant.detection.ssd import build_ssd
from quant.models.stats import count_macs

# The network fields of the sample config.
CONFIG = """\
model {
  ssd {
    num_classes: 90
    box_coder { faster_rcnn_box_coder { y_scale: 10.0 x_scale: 10.0 height_scale: 5.0
                                        width_scale: 5.0 } }
    anchor_generator {
      ssd_anchor_generator { num_layers: 6 min_scale: 0.2 max_scale: 0.95
                             aspect_ratios: [1.0, 2.0, 0.5, 3.0, 0.3333]
                             reduce_boxes_in_lowest_layer: true }
    }
    image_resizer { fixed_shape_resizer { height: 300 width: 300 } }
    box_predictor {
      convolutional_box_predictor {
        min_depth: 0 max_depth: 0 num_layers_before_predictor: 0 use_dropout: false
        kernel_size: 3 box_code_size: 4
        conv_hyperparams { activation: RELU_6 }
      }
    }
    feature_extractor {
      type: 'ssd_inception_v2' min_depth: 16 depth_multiplier: 1.0
      conv_hyperparams { activation: RELU_6, batch_norm { epsilon: 0.001 } }
      override_base_feature_extractor_hyperparams: %(override)s
    }
    post_processing {
      batch_non_max_suppression { score_threshold: 1e-8 iou_threshold: 0.6
                                  max_detections_per_class: 100 max_total_detections: 100 }
      score_converter: SIGMOID
    }
  }
}
"""
SCOPE = "FeatureExtractor/InceptionV2"
# Stem: separable conv (depthwise + pointwise weights + 4 BatchNorm) and two convs (5 each);
# 8 modules of 7 convs, 2 reductions of 5 convs; extra maps 4 x 2 convs; box predictors
# 6 maps x 2 heads x (weights, biases).
VARIABLES = 6 + 2 * 5 + 8 * 7 * 5 + 2 * 5 * 5 + 4 * 2 * 5 + 6 * 2 * 2
KNOWN_VARIABLES = {
    "Conv2d_1a_7x7/depthwise_weights": (7, 7, 3, 8),
    "Conv2d_1a_7x7/pointwise_weights": (1, 1, 24, 64),
    "Conv2d_1a_7x7/BatchNorm/beta": (64,),
    "Conv2d_2c_3x3/weights": (3, 3, 64, 192),
    "Mixed_3b/Branch_3/Conv2d_0b_1x1/weights": (1, 1, 192, 32),
    "Mixed_3c/Branch_2/Conv2d_0c_3x3/weights": (3, 3, 96, 96),
    "Mixed_4a/Branch_1/Conv2d_1a_3x3/weights": (3, 3, 96, 96),
    "Mixed_4b/Branch_0/Conv2d_0a_1x1/weights": (1, 1, 576, 224),
    "Mixed_5a/Branch_0/Conv2d_1a_3x3/weights": (3, 3, 128, 192),
    "Mixed_5c/Branch_1/Conv2d_0b_3x3/weights": (3, 3, 192, 320),
    "Mixed_5c/Branch_3/Conv2d_0b_1x1/BatchNorm/moving_mean": (128,),
    "Mixed_5c_1_Conv2d_2_1x1_256/weights": (1, 1, 1024, 256),
    "Mixed_5c_2_Conv2d_5_3x3_s2_128/weights": (3, 3, 64, 128),
}


def _text(override: bool = True) -> str:
    return CONFIG % {"override": str(override).lower()}


def _config(**kwargs):
    return ssd_config_from_message(parse_text_proto(_text(**kwargs)))


@pytest.fixture(scope="module")
def model():
    return build_ssd(_config())


def test_names_shapes_and_maps_follow_the_od_api(model):
    shapes = {checkpoint_variable_name(layer.name, w.name): tuple(w.shape)
              for layer in model.layers for w in layer.weights}
    for short, shape in KNOWN_VARIABLES.items():
        assert shapes.get(f"{SCOPE}/{short}") == shape, short
    assert shapes["BoxPredictor_0/ClassPredictor/weights"] == (3, 3, 576, 3 * 91)
    assert shapes["BoxPredictor_1/BoxEncodingPredictor/weights"] == (3, 3, 1024, 6 * 4)
    assert len(shapes) == VARIABLES
    assert feature_map_sizes(model) == [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert tuple(model.outputs[1].shape) == (1, 1917, 91)
    # Mixed_5c's pool branch is a max pool, the others average.
    assert model.get_layer(f"{SCOPE}/Mixed_5c/Branch_3/MaxPool_0a_3x3")
    assert model.get_layer(f"{SCOPE}/Mixed_5b/Branch_3/AvgPool_0a_3x3")
    # Inception v2 to Mixed_5c: 10.17 M (11.2 M for the classifier with its 1.02 M logits).
    backbone = sum(w.numpy().size for layer in model.layers if layer.name.startswith(
        f"{SCOPE}/") and "Mixed_5c_" not in layer.name for w in layer.trainable_weights)
    assert backbone / 1e6 == pytest.approx(10.17, abs=0.01)
    # + extra maps (2.22 M) + 3x3 box predictors (12.6 M, 12.1 M of them class heads);
    # the separable stem alone is 0.06 B MACs at 300x300.
    assert model.count_params() / 1e6 == pytest.approx(25.05, abs=0.01)
    assert count_macs(model) / 1e9 == pytest.approx(4.80, abs=0.01)


def test_synthetic_checkpoint_loads_and_a_missing_variable_is_named(model, tmp_path):
    variables = random_variables(model)
    loaded = load_ssd_checkpoint(write_export(tmp_path / "ok", _text(), variables))
    assert loaded.loaded == len(variables) == VARIABLES
    assert len(loaded.head.anchors) == 1917
    missing = f"{SCOPE}/Conv2d_1a_7x7/pointwise_weights"
    with pytest.raises(BadInputError, match=missing):
        load_ssd_checkpoint(write_export(
            tmp_path / "missing", _text(), {k: v for k, v in variables.items() if k != missing}))


def test_the_backbone_needs_the_config_hyperparameters():
    with pytest.raises(BadInputError, match="override_base_feature_extractor_hyperparams"):
        build_ssd(_config(override=False))


@pytest.mark.slow  # about 60 s on 2 busy cores
def test_int8_maps_to_the_edgetpu_but_the_postprocessing(tmp_path):
    """The stem's depthwise conv with 8 outputs per channel and the 3x3 / 1 average pools
    (whose 'SAME' windows count only the pixels inside the image) included."""
    from quant.detection.sources import random_ssd

    analysis = int8_analysis(random_ssd(_config(), "ssd_inception_v2"), 300, tmp_path)
    assert analysis.cpu_ops == {"TFLite_Detection_PostProcess": 1}
