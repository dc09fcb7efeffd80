"""SSD MobileNet v2 MnasFPN against the Object Detection API's own source.

Expected names, shapes and counts are read off
``research/object_detection/models/ssd_mobilenet_v2_mnasfpn_feature_extractor.py``
(``mobilenet_base(final_endpoint='layer_18')`` under ``MobilenetV2``; ``MnasFPN/C6_downsample``
and ``C6_Conv1x1``; ``cell_N/block_M/input_K/{Downsample,Conv1x1}`` and ``block_M/SepConv``
from ``_mnasfpn_cell`` / ``_apply_size_dependent_ordering`` with ``_MNASFPN_CELL_CONFIG``;
BatchNorm epsilon 0.01 from its ``training_scope``), ``predictors/convolutional_box_predictor.py``
(``WeightSharedConvolutionalBoxPredictor._compute_base_tower``: ``slim.separable_conv2d`` with
``normalizer_fn=tf.identity``, so no biases, then ``conv2d_N/BatchNorm/feature_M``),
``predictors/heads/{box,class}_head.py`` (``WeightSharedConvolutional{Box,Class}Head`` with
``use_depthwise``: separable ``BoxPredictor`` / ``ClassPredictor`` with biases) and the sample
``ssd_mobilenet_v2_mnasfpn_shared_box_predictor_320x320_coco_sync.config``.
"""

from __future__ import annotations

import numpy as np
import pytest
from ssd_configs import int8_analysis, random_variables, write_export

from edgeq._tensorflow import keras
from edgeq.errors import BadInputError
from edgeq.textproto import parse_text_proto
from quant.checkpoints import checkpoint_variable_name
from quant.detection.mnasfpn import mnasfpn_feature_maps
from quant.detection.pipeline_config import ssd_config_from_message
from quant.detection.sources import feature_map_sizes, load_ssd_checkpoint
from quant.detection.ssd import build_ssd
from quant.models.stats import count_macs

NAME = "ssd_mobilenet_v2_mnasfpn"
# The network fields of samples/configs/
# ssd_mobilenet_v2_mnasfpn_shared_box_predictor_320x320_coco_sync.config (training fields out).
CONFIG_TEXT = """\
model {
  ssd {
    num_classes: %(num_classes)d
    box_coder {
      faster_rcnn_box_coder { y_scale: 10.0 x_scale: 10.0 height_scale: 5.0 width_scale: 5.0 }
    }
    encode_background_as_zeros: true
    anchor_generator {
      multiscale_anchor_generator {
        min_level: 3
        max_level: 6
        anchor_scale: 3.0
        aspect_ratios: [1.0, 2.0, 0.5]
        scales_per_octave: 3
      }
    }
    image_resizer { fixed_shape_resizer { height: %(size)d width: %(size)d } }
    box_predictor {
      weight_shared_convolutional_box_predictor {
        depth: 64
        class_prediction_bias_init: -4.6
        conv_hyperparams {
          activation: RELU_6,
          regularizer { l2_regularizer { weight: 0.00004 } }
          initializer { random_normal_initializer { stddev: 0.01 mean: 0.0 } }
          batch_norm { scale: true, decay: 0.997, epsilon: 0.001, }
        }
        num_layers_before_predictor: 4
        share_prediction_tower: true
        use_depthwise: true
        kernel_size: 3
      }
    }
    feature_extractor {
      type: 'ssd_mobilenet_v2_mnasfpn'
      fpn { min_level: 3 max_level: 6 additional_layer_depth: 48 }
      min_depth: 16
      depth_multiplier: 1.0
      conv_hyperparams {
        activation: RELU_6,
        regularizer { l2_regularizer { weight: 0.00004 } }
        initializer { random_normal_initializer { stddev: 0.01 mean: 0.0 } }
        batch_norm { scale: true, decay: 0.97, epsilon: 0.001, }
      }
      override_base_feature_extractor_hyperparams: true
    }
    post_processing {
      batch_non_max_suppression {
        score_threshold: 1e-8
        iou_threshold: 0.6
        max_detections_per_class: 100
        max_total_detections: 100
      }
      score_converter: SIGMOID
    }
  }
}
"""
# (40x40 + 20x20 + 10x10 + 5x5) x 9 anchors (3 aspect ratios x 3 scales per octave) at 320.
ANCHORS = (1600 + 400 + 100 + 25) * 9
# Checkpoint variables: 5 per conv with BatchNorm (weights, gamma, beta, moving mean and
# variance), 6 per separable conv with BatchNorm (depthwise and pointwise weights + 4).
# MobileNet v2 to layer_18: stem 5, expanded_conv (depthwise, project) 10, expanded_conv_1
# ... _16 3 x 5 each. MnasFPN: C6_Conv1x1 5, 4 cells x 5 blocks x (2 Conv1x1 + SepConv) 16.
# Predictor: 4 separable tower convs (2 weights each, no biases) with 4 x 4 BatchNorms
# (4 variables each), BoxPredictor and ClassPredictor (depthwise, pointwise, biases).
VARIABLES = (5 + 10 + 16 * 15) + (5 + 4 * 5 * 16) + (4 * 2 + 4 * 4 * 4 + 2 * 3)
# The sample config's header: "0.92B MulAdds, 2.5M Parameters". We count 2.50 M parameters
# (BatchNorm moving statistics included; 2.46 M without) and 0.880 B MACs of convolutions:
# 0.040 B under the figure, the size of MobileNet v2's Conv_1 at 10x10 (320 x 1280 x 100 =
# 0.041 B), a layer the extractor never builds (final_endpoint='layer_18').
PUBLISHED_PARAMS_M = 2.5
PUBLISHED_MACS_B = 0.92
FE = "FeatureExtractor"
WS = "WeightSharedConvolutionalBoxPredictor"
# Representative variables and shapes: C3, C4, C5 have 32, 96, 320 channels (layer_7, _14,
# _18); every block's inputs get a 1x1 to its expansion size, its SepConv maps that to
# additional_layer_depth 48; the tower is 64 wide; 9 anchors x 4 codes / x 91 class slots.
KNOWN_VARIABLES = {
    f"{FE}/MobilenetV2/Conv/weights": (3, 3, 3, 32),
    f"{FE}/MobilenetV2/expanded_conv_5/project/weights": (1, 1, 192, 32),
    f"{FE}/MobilenetV2/expanded_conv_16/project/BatchNorm/gamma": (320,),
    f"{FE}/MnasFPN/C6_Conv1x1/weights": (1, 1, 320, 48),
    f"{FE}/MnasFPN/C6_Conv1x1/BatchNorm/moving_variance": (48,),
    f"{FE}/MnasFPN/cell_0/block_0/input_0/Conv1x1/weights": (1, 1, 96, 256),
    f"{FE}/MnasFPN/cell_0/block_0/input_1/Conv1x1/weights": (1, 1, 320, 256),
    f"{FE}/MnasFPN/cell_0/block_0/SepConv/depthwise_weights": (3, 3, 256, 1),
    f"{FE}/MnasFPN/cell_0/block_0/SepConv/pointwise_weights": (1, 1, 256, 48),
    f"{FE}/MnasFPN/cell_0/block_0/SepConv/BatchNorm/beta": (48,),
    f"{FE}/MnasFPN/cell_0/block_1/input_0/Conv1x1/weights": (1, 1, 32, 128),
    f"{FE}/MnasFPN/cell_0/block_1/input_1/Conv1x1/weights": (1, 1, 48, 128),
    f"{FE}/MnasFPN/cell_0/block_3/SepConv/depthwise_weights": (5, 5, 128, 1),
    f"{FE}/MnasFPN/cell_0/block_4/input_1/Conv1x1/weights": (1, 1, 48, 96),
    f"{FE}/MnasFPN/cell_1/block_0/input_1/Conv1x1/weights": (1, 1, 48, 256),
    f"{FE}/MnasFPN/cell_3/block_4/SepConv/pointwise_weights": (1, 1, 96, 48),
    f"{WS}/PredictionTower/conv2d_0/depthwise_weights": (3, 3, 48, 1),
    f"{WS}/PredictionTower/conv2d_0/pointwise_weights": (1, 1, 48, 64),
    f"{WS}/PredictionTower/conv2d_3/BatchNorm/feature_3/moving_mean": (64,),
    f"{WS}/BoxPredictor/pointwise_weights": (1, 1, 64, 36),
    f"{WS}/BoxPredictor/biases": (36,),
    f"{WS}/ClassPredictor/depthwise_weights": (3, 3, 64, 1),
    f"{WS}/ClassPredictor/pointwise_weights": (1, 1, 64, 819),
    f"{WS}/ClassPredictor/biases": (819,),
}
# Variables the OD API never creates: MobileNet v2 stops at layer_18 (no Conv_1); no bias
# under a BatchNorm; no Downsample pool variables.
ABSENT_PREFIXES = (f"{FE}/MobilenetV2/Conv_1/", f"{WS}/PredictionTower/conv2d_0/biases",
                   f"{FE}/MnasFPN/cell_0/block_2/input_0/Downsample")

_BUILT: dict[str, object] = {}


def _text(num_classes: int = 90, size: int = 320) -> str:
    return CONFIG_TEXT % {"num_classes": num_classes, "size": size}


def _config(**kwargs):
    return ssd_config_from_message(parse_text_proto(_text(**kwargs)))


def _built():
    if "model" not in _BUILT:
        _BUILT["model"] = build_ssd(_config())
    return _BUILT["model"]


def test_names_shapes_and_parameters_follow_the_od_api():
    model = _built()
    shapes = {checkpoint_variable_name(layer.name, w.name): tuple(w.shape)
              for layer in model.layers for w in layer.weights}
    for name, shape in KNOWN_VARIABLES.items():
        assert shapes.get(name) == shape, name
    assert not [name for name in shapes if name.startswith(ABSENT_PREFIXES)]
    assert len(shapes) == VARIABLES
    assert round(model.count_params() / 1e6, 1) == PUBLISHED_PARAMS_M
    macs = count_macs(model)
    assert macs / 1e9 == pytest.approx(PUBLISHED_MACS_B, rel=0.05)
    assert feature_map_sizes(model) == [(40, 40), (20, 20), (10, 10), (5, 5)]
    assert tuple(model.outputs[0].shape) == (1, ANCHORS, 4)
    assert tuple(model.outputs[1].shape) == (1, ANCHORS, 91)
    # BatchNorm epsilon: 0.01 in the whole extractor (MnasFPN's training_scope), the
    # predictor's conv_hyperparams 0.001.
    for name in (f"{FE}/MobilenetV2/Conv/BatchNorm",
                 f"{FE}/MobilenetV2/expanded_conv_16/project/BatchNorm",
                 f"{FE}/MnasFPN/C6_Conv1x1/BatchNorm",
                 f"{FE}/MnasFPN/cell_2/block_3/SepConv/BatchNorm"):
        assert model.get_layer(name).epsilon == 0.01, name
    assert model.get_layer(f"{WS}/PredictionTower/conv2d_1/BatchNorm/feature_2").epsilon == 0.001


def test_cells_resample_as_size_dependent_ordering():
    """Block 4 of a cell takes level 4 to level 6 by a 3x3 / 4 max pool before its 1x1;
    block 0 takes C5 to level 4 by a 1x1 then a 2x nearest upsampling; the cell residual
    adds only the inputs whose shape matches (C6 alone in cell 0, every level later)."""
    model = _built()
    scope = f"{FE}/MnasFPN"
    pool = model.get_layer(f"{scope}/cell_1/block_4/input_0/Downsample")
    assert (pool.pool_size, pool.strides, pool.padding) == ((3, 3), (4, 4), "same")
    assert pool.output.shape[1:3] == (5, 5)
    upsample = model.get_layer(f"{scope}/cell_0/block_0/input_1/nearest_neighbor_upsampling")
    assert upsample.size == (2, 2) and upsample.interpolation == "nearest"
    assert upsample.input.node.layer.name == f"{scope}/cell_0/block_0/input_1/Conv1x1/BatchNorm"
    residuals = {layer.name for layer in model.layers if "/residual_" in layer.name}
    assert {name for name in residuals if "/cell_0/" in name} == {f"{scope}/cell_0/residual_3"}
    assert len(residuals) == 1 + 3 * 4


def test_batch_norm_epsilon_is_applied_when_the_model_runs():
    """The backbone's BatchNorms use epsilon 0.01: the output must follow that value (a
    64x64 input keeps this small: levels 8, 4, 2, 1)."""
    inputs = keras.Input((64, 64, 3), batch_size=1)
    maps = mnasfpn_feature_maps(inputs, _config(size=64))
    assert [tuple(m.shape[1:]) for m in maps] == [(8, 8, 48), (4, 4, 48), (2, 2, 48), (1, 1, 48)]
    model = keras.Model(inputs, maps)
    conv = model.get_layer(f"{FE}/MobilenetV2/Conv")
    norm = model.get_layer(f"{FE}/MobilenetV2/Conv/BatchNorm")
    channels = conv.filters
    norm.set_weights([np.ones(channels), np.zeros(channels), np.zeros(channels),
                      np.zeros(channels)])
    probe = keras.Model(inputs, [conv.output, norm.output])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    before, after = (t.numpy() for t in probe(x))
    np.testing.assert_allclose(after, before / np.sqrt(0.01), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("text, match", [
    (_text().replace("max_level: 6 additional", "max_level: 7 additional"), "fpn levels 3..7"),
    (_text().replace("depth_multiplier: 1.0", "depth_multiplier: 0.5"), "depth_multiplier 0.5"),
    (_text(size=300), r"level-5 map is \(10, 10\), not \(9, 9\)"),
])
def test_settings_the_extractor_refuses(text, match):
    with pytest.raises(BadInputError, match=match):
        build_ssd(ssd_config_from_message(parse_text_proto(text)))


def test_synthetic_checkpoint_loads_and_a_stray_variable_is_refused(tmp_path):
    # The variables do not depend on the input size: 64x64 keeps this quick.
    text = _text(size=64)
    source = build_ssd(_config(size=64))
    variables = random_variables(source)
    for layer in source.layers:
        layer.set_weights([variables[checkpoint_variable_name(layer.name, w.name)]
                           for w in layer.weights])
    loaded = load_ssd_checkpoint(write_export(tmp_path / "ok", text, variables))
    assert loaded.loaded == len(variables) == VARIABLES
    assert len(loaded.head.anchors) == (8 * 8 + 4 * 4 + 2 * 2 + 1) * 9
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    for ours, reference in zip(loaded.model(x), source(x), strict=True):
        np.testing.assert_allclose(ours.numpy(), reference.numpy(), atol=1e-5)
    stray = {f"{FE}/MobilenetV2/Conv_1/weights": np.zeros((1, 1, 320, 1280), np.float32)}
    with pytest.raises(BadInputError, match="took .* of the checkpoint"):
        load_ssd_checkpoint(write_export(tmp_path / "stray", text, variables | stray))


@pytest.mark.slow  # about 85 s on 2 busy cores (the converter's SavedModel export)
def test_int8_maps_to_the_edgetpu_but_the_score_tail(tmp_path):
    """Measured verdict: every convolution, pool, upsampling and add maps; the class-score
    tail does not. With 19,125 anchors x 91 class slots the score tensors pass the
    compiler's limit of 196,608 elements in the two innermost dimensions (analyzer rule
    ``row_size``, seen in real compiles): the class reshapes of levels 3 and 4
    ([1, 14400, 91], [1, 3600, 91]; levels 5 and 6 fit), their CONCATENATION, the sigmoid
    (LOGISTIC) and the QUANTIZE before the post-processing, which runs on the CPU anyway.
    They all follow the Edge TPU part, so it stays one piece."""
    from quant.detection.sources import random_ssd

    analysis = int8_analysis(random_ssd(_config(), NAME), 320, tmp_path)
    assert analysis.cpu_ops == {"RESHAPE": 2, "CONCATENATION": 1, "LOGISTIC": 1, "QUANTIZE": 1,
                                "TFLite_Detection_PostProcess": 1}
    tail = [op for op in analysis.ops if not op.mapped]
    assert {op.rule for op in tail[:-1]} == {"row_size"}
    assert all(op.mapped for op in analysis.ops if op.index < tail[0].index)
