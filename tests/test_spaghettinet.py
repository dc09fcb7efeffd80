"""SSD SpaghettiNet-EdgeTPU S / M / L against the Object Detection API's own source.

Expected names, shapes and counts are read off ``ssd_spaghettinet_feature_extractor.py``
(``_spaghettinet_edgetpu_{s,m,l}``; ``SpaghettiNet._spaghetti_node`` / ``_spaghetti_edge`` /
``_expanded_conv`` / ``_ibn_fused_grouped`` / ``_sep_conv``; scope
``FeatureExtractor/<arch name>``, nodes under ``spaghetti_net/<node>_<layer>``, edges
``edge_<input>_<node>`` beside it) and its test ``ssd_spaghettinet_feature_extractor_tf1_test
.py`` (feature map shapes at 320x320). The zoo archives' ``pipeline.config`` is not in the
reference index; the network fields of :data:`PIPELINE` are reconstructed to match what the
released models show: 320x320 input, five SSDLite maps
with 3 anchors per location on the 20x20 map and 6 on the others (the uint8
``spaghettinet_edgetpu_l`` outputs 20x20x12 / 20x20x273 and 10x10x24 / 10x10x546 ... 3x3x24
/ 3x3x546, MLPerf mobile's IREE settings), depthwise box predictors
(``BoxPredictor_0/BoxEncodingPredictor_depthwise`` in a quantized training graph's log,
tensorflow/tensorflow PR 55919).
"""

from __future__ import annotations

import numpy as np
import pytest
from ssd_configs import int8_analysis, random_variables, write_export

from edgeq._tensorflow import keras
from edgeq.errors import BadInputError
from edgeq.images import inception_preprocess
from edgeq.textproto import parse_text_proto
from quant.checkpoints import checkpoint_variable_name
from quant.detection.pipeline_config import ssd_config_from_message
from quant.detection.sources import feature_map_sizes, load_ssd_checkpoint
from quant.detection.ssd import build_ssd
from quant.models.spaghettinet import (
    IbnFusedGrouped,
    IbnOp,
    Node,
    SepConvOp,
    SpaghettiNetSpec,
    spaghettinet_features,
)
from quant.models.stats import count_macs, count_params

VARIANTS = ("s", "m", "l")
PIPELINE = """\
model {
  ssd {
    num_classes: 90
    box_coder { faster_rcnn_box_coder { y_scale: 10.0 x_scale: 10.0 height_scale: 5.0
                                        width_scale: 5.0 } }
    anchor_generator {
      ssd_anchor_generator {
        num_layers: 5
        min_scale: 0.2
        max_scale: 0.95
        aspect_ratios: 1.0
        aspect_ratios: 2.0
        aspect_ratios: 0.5
        aspect_ratios: 3.0
        aspect_ratios: 0.3333
      }
    }
    image_resizer { fixed_shape_resizer { height: 320 width: 320 } }
    box_predictor {
      convolutional_box_predictor {
        min_depth: 0
        max_depth: 0
        num_layers_before_predictor: 0
        use_dropout: false
        kernel_size: 3
        use_depthwise: true
        box_code_size: 4
        apply_sigmoid_to_scores: false
        class_prediction_bias_init: -4.6
        conv_hyperparams {
          activation: RELU_6,
          regularizer { l2_regularizer { weight: 0.00004 } }
          initializer { random_normal_initializer { stddev: 0.03 mean: 0.0 } }
          batch_norm { train: true, scale: true, center: true, decay: 0.97, epsilon: 0.001 }
        }
      }
    }
    feature_extractor {
      type: 'ssd_spaghettinet'
      spaghettinet_arch_name: 'spaghettinet_edgetpu_%s'
      use_explicit_padding: false
      conv_hyperparams {
        activation: RELU_6,
        regularizer { l2_regularizer { weight: 0.00004 } }
        initializer { truncated_normal_initializer { stddev: 0.03 mean: 0.0 } }
        batch_norm { train: true, scale: true, center: true, decay: 0.97, epsilon: 0.001 }
      }
      override_base_feature_extractor_hyperparams: true
    }
    post_processing {
      batch_non_max_suppression {
        score_threshold: 1e-8
        iou_threshold: 0.6
        max_detections_per_class: 100
        max_total_detections: 100
        use_static_shapes: true
      }
      score_converter: SIGMOID
    }
  }
}
"""
# 20x20 x 3 + (10x10 + 5x5 + 3x3 + 3x3) x 6 anchors: the last node, c0n5 (level 8), is a
# passthrough of c0n4 with stride-1 layers, so it keeps c0n4's 3x3.
ANCHORS = 2058
FEATURE_MAPS = {  # ssd_spaghettinet_feature_extractor_tf1_test.py, 320x320 input
    "s": [(20, 20, 120), (10, 10, 168), (5, 5, 136), (3, 3, 136), (3, 3, 64)],
    "m": [(20, 20, 120), (10, 10, 168), (5, 5, 136), (3, 3, 136), (3, 3, 64)],
    "l": [(20, 20, 120), (10, 10, 168), (5, 5, 112), (3, 3, 128), (3, 3, 64)],
}
# Checkpoint variables: 5 per conv with BatchNorm (weights, gamma, beta, moving mean and
# variance). Stem: 5; IbnOp: 3 convs (15); SepConvOp: depthwise weights and biases (no
# BatchNorm), pointwise conv (7); IbnFusedGrouped: 5 per group slice, the concat's min and max,
# the projection (7 + 5 x groups); each of the 10 resample edges (two into each of c0n0..c0n4):
# a 1x1 conv (5); box predictors: 5 maps x 2 heads x (depthwise + BatchNorm, conv + biases)
# (70). Op counts read off the arch defs: (IbnOp, SepConvOp, IbnFusedGrouped, group slices).
_OPS = {"s": (19, 8, 5, 3 + 3 * 4 + 4), "m": (20, 10, 6, 3 + 4 * 4 + 4),
        "l": (29, 4, 5, 3 + 4 * 4)}
VARIABLES = {variant: 5 + 15 * ibn + 7 * sep + 7 * fused + 5 * slices + 10 * 5 + 70
             for variant, (ibn, sep, fused, slices) in _OPS.items()}
# No published parameter or MAC counts were found (the zoo table gives Pixel 6 latency and
# mAP only); these are our counts (parameters without BatchNorm moving statistics, MACs of
# the convolutions), kept to catch changes.
PARAMS_M = {"s": 3.48, "m": 4.17, "l": 5.76}
MACS_B = {"s": 1.039, "m": 1.244, "l": 1.564}
# Representative variables: IbnOp expansions are node filters x rate (the node's output
# width, not its input's); grouped slices take input channels / groups and expand them;
# edges convert to the receiving node's width.
KNOWN_VARIABLES = {
    "s": {
        "spaghetti_net/stem_node/stem/weights": (5, 5, 3, 24),
        "spaghetti_net/n0_0/slice_2/weights": (3, 3, 8, 64),
        "spaghetti_net/n0_0/concat/min": (),
        "spaghetti_net/n0_0/projection/weights": (1, 1, 192, 48),
        "spaghetti_net/n1_0/slice_3/weights": (3, 3, 12, 48),
        "spaghetti_net/n1_1/slice_0/weights": (3, 3, 16, 64),
        "spaghetti_net/n1_2/projection/weights": (1, 1, 256, 64),
        "spaghetti_net/n2_0/expansion/weights": (1, 1, 64, 576),
        "spaghetti_net/n2_0/depthwise/depthwise_weights": (3, 3, 576, 1),
        "spaghetti_net/n2_1/slice_3/weights": (3, 3, 18, 144),
        "spaghetti_net/n2_1/projection/weights": (1, 1, 576, 72),
        "spaghetti_net/n4_1/depthwise/depthwise_weights": (5, 5, 88, 1),
        "spaghetti_net/n4_1/depthwise/biases": (88,),
        "spaghetti_net/n4_1/pointwise/weights": (1, 1, 88, 88),
        "spaghetti_net/n5_0/depthwise/depthwise_weights": (5, 5, 88, 1),
        "edge_n3_c0n0/1x1_no_resampling/weights": (1, 1, 88, 144),
        "edge_n4_c0n0/1x1_before_upsample/weights": (1, 1, 88, 144),
        "spaghetti_net/c0n0_0/expansion/weights": (1, 1, 144, 576),
        "edge_c0n0_c0n1/1x1_before_upsample/BatchNorm/gamma": (120,),
        "edge_n2_c0n1/1x1_no_resampling/weights": (1, 1, 72, 120),
        "spaghetti_net/c0n1_0/expansion/weights": (1, 1, 120, 960),
        "edge_c0n1_c0n2/1x1_after_downsampling/weights": (1, 1, 120, 168),
        "edge_c0n0_c0n2/1x1_no_resampling/weights": (1, 1, 144, 168),
        "edge_n5_c0n3/1x1_before_upsample/weights": (1, 1, 88, 136),
        "edge_c0n0_c0n3/1x1_after_downsampling/weights": (1, 1, 144, 136),
        "edge_c0n0_c0n4/1x1_after_downsampling/weights": (1, 1, 144, 136),
        "edge_n5_c0n4/1x1_no_resampling/weights": (1, 1, 88, 136),
        "spaghetti_net/c0n5_0/pointwise/weights": (1, 1, 136, 64),
        "spaghetti_net/c0n5_1/pointwise/weights": (1, 1, 64, 64),
        "BoxPredictor_0/BoxEncodingPredictor_depthwise/depthwise_weights": (3, 3, 120, 1),
        "BoxPredictor_0/ClassPredictor/weights": (1, 1, 120, 273),
        "BoxPredictor_3/ClassPredictor/weights": (1, 1, 136, 546),
        "BoxPredictor_4/BoxEncodingPredictor/weights": (1, 1, 64, 24),
    },
    "m": {
        "spaghetti_net/n1_0/slice_0/weights": (3, 3, 12, 96),
        "spaghetti_net/n1_0/projection/weights": (1, 1, 384, 64),
        "spaghetti_net/n1_3/slice_3/weights": (3, 3, 16, 64),
        "spaghetti_net/n3_0/expansion/weights": (1, 1, 72, 768),
        "spaghetti_net/n4_2/depthwise/depthwise_weights": (5, 5, 104, 1),
        "spaghetti_net/n4_2/depthwise/biases": (104,),
        "spaghetti_net/n4_3/expansion/weights": (1, 1, 104, 416),
        "spaghetti_net/n5_0/pointwise/weights": (1, 1, 104, 56),
        "spaghetti_net/c0n0_0/expansion/weights": (1, 1, 152, 1216),
        "edge_n4_c0n0/1x1_before_upsample/weights": (1, 1, 104, 152),
        "edge_n5_c0n3/1x1_before_upsample/weights": (1, 1, 56, 136),
        "spaghetti_net/c0n2_1/pointwise/weights": (1, 1, 168, 168),
        "spaghetti_net/c0n3_0/depthwise/depthwise_weights": (3, 3, 136, 1),
        "spaghetti_net/c0n3_0/pointwise/weights": (1, 1, 136, 136),
        "spaghetti_net/c0n4_1/depthwise/depthwise_weights": (5, 5, 136, 1),
    },
    "l": {
        "spaghetti_net/n1_1/slice_2/weights": (3, 3, 16, 128),
        "spaghetti_net/n1_3/slice_0/weights": (3, 3, 16, 64),
        "spaghetti_net/n2_0/expansion/weights": (1, 1, 64, 640),
        "spaghetti_net/n4_1/depthwise/depthwise_weights": (5, 5, 352, 1),
        "spaghetti_net/n5_0/expansion/weights": (1, 1, 88, 224),
        "spaghetti_net/n5_0/depthwise/depthwise_weights": (5, 5, 224, 1),
        "spaghetti_net/n5_1/depthwise/depthwise_weights": (5, 5, 56, 1),
        "spaghetti_net/c0n0_0/expansion/weights": (1, 1, 160, 1280),
        "spaghetti_net/c0n3_0/expansion/weights": (1, 1, 112, 896),
        "spaghetti_net/c0n4_1/projection/weights": (1, 1, 512, 128),
        "spaghetti_net/c0n5_0/depthwise/depthwise_weights": (5, 5, 128, 1),
        "spaghetti_net/c0n5_0/pointwise/weights": (1, 1, 128, 64),
        "edge_n5_c0n4/1x1_no_resampling/weights": (1, 1, 56, 128),
        "BoxPredictor_2/ClassPredictor/weights": (1, 1, 112, 546),
    },
}
# Variables that no variant has: slices beyond the groups, a second projection, layers past
# a node's last one.
ABSENT = ("spaghetti_net/n0_0/slice_3/weights", "spaghetti_net/n0_0/expansion/weights",
          "spaghetti_net/c0n5_2/pointwise/weights", "spaghetti_net/n5_0/depthwise/BatchNorm/gamma")

_BUILT: dict[str, object] = {}


def _config(variant: str, text: str = PIPELINE):
    return ssd_config_from_message(parse_text_proto(text % variant))


def _built(variant: str):
    if variant not in _BUILT:
        _BUILT[variant] = build_ssd(_config(variant))
    return _BUILT[variant]


def _full_name(variant: str, short: str) -> str:
    return short if short.startswith("BoxPredictor") \
        else f"FeatureExtractor/spaghettinet_edgetpu_{variant}/{short}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_names_shapes_and_counts_follow_the_od_api(variant):
    model = _built(variant)
    shapes = {checkpoint_variable_name(layer.name, w.name): tuple(w.shape)
              for layer in model.layers for w in layer.weights}
    for short, shape in KNOWN_VARIABLES[variant].items():
        assert shapes.get(_full_name(variant, short)) == shape, short
    # SepConvOp (n5_0 in S and M) has no BatchNorm; L's n5_0 is an IbnOp, whose has one.
    absent = ABSENT[:3] if variant == "l" else ABSENT
    assert not {_full_name(variant, short) for short in absent} & set(shapes)
    assert len(shapes) == VARIABLES[variant]
    assert round(count_params(model) / 1e6, 2) == PARAMS_M[variant]
    assert count_macs(model) / 1e9 == pytest.approx(MACS_B[variant], abs=0.001)
    maps = [tuple(layer.input.shape[1:]) for layer in model.layers
            if layer.name.endswith("BoxEncodingPredictor_depthwise")]
    assert maps == FEATURE_MAPS[variant]
    assert feature_map_sizes(model) == [shape[:2] for shape in FEATURE_MAPS[variant]]
    assert tuple(model.outputs[1].shape) == (1, ANCHORS, 91)
    # Grouped convs are per-slice convs (no grouped CONV_2D); n5's upsampled 6x6 is cropped
    # to c0n0's downsampled 5x5 in c0n3 (the crop to the finest input's edge).
    assert all(layer.groups == 1 for layer in model.layers
               if isinstance(layer, keras.layers.Conv2D))
    crop = model.get_layer(f"FeatureExtractor/spaghettinet_edgetpu_{variant}/edge_n5_c0n3/crop")
    assert tuple(crop.input.shape[1:3]) == (6, 6) and tuple(crop.output.shape[1:3]) == (5, 5)


def test_arch_name_defaults_to_m_and_unknown_names_are_refused():
    # SSDSpaghettinetFeatureExtractor's default spaghettinet_arch_name.
    default = PIPELINE.replace("spaghettinet_arch_name: 'spaghettinet_edgetpu_%s'", "")
    config = ssd_config_from_message(parse_text_proto(default))
    assert config.feature_extractor.spaghettinet_arch_name == "spaghettinet_edgetpu_m"
    with pytest.raises(BadInputError, match="spaghettinet_edgetpu_xl"):
        build_ssd(_config("xl"))


def test_synthetic_checkpoint_loads_and_a_stray_variable_is_refused(tmp_path):
    variant = "s"
    text = PIPELINE % variant
    variables = random_variables(_built(variant))
    loaded = load_ssd_checkpoint(write_export(tmp_path / "ok", text, variables))
    assert loaded.loaded == len(variables) == VARIABLES[variant]
    assert len(loaded.head.anchors) == ANCHORS
    stray = {_full_name(variant, "spaghetti_net/n0_0/slice_3/weights"):
             np.zeros((3, 3, 8, 64), np.float32)}
    with pytest.raises(BadInputError, match="took .* of the checkpoint"):
        load_ssd_checkpoint(write_export(tmp_path / "stray", text, variables | stray))


# Every layer and edge kind at 40x40: stem 20x20, n0 10x10 (level 2), n1 5x5, n2 3x3;
# c0 (level 3) upsamples n2 to 6x6 and crops it to n1's 5x5; c1 (level 4) max-pools n0 by 4.
_SMALL = SpaghettiNetSpec((3, 8), (
    ("n0", Node(16, 2, (IbnFusedGrouped(3, 2, 2, 2, False),), ("s0",), passthrough=True)),
    ("n1", Node(16, 3, (IbnOp(3, 2, 2, False), SepConvOp(3, 1, True)), ("n0",),
                passthrough=True)),
    ("n2", Node(16, 4, (SepConvOp(3, 2, False),), ("n1",), passthrough=True)),
    ("c0", Node(24, 3, (IbnFusedGrouped(3, 2, 1, 2, True),), ("n1", "n2"))),
    ("c1", Node(24, 4, (IbnOp(3, 2, 1, False),), ("n0", "n2"))),
), ("c0", "c1"))


def test_explicit_padding_keeps_the_sizes_and_pads_before_strided_layers():
    """use_explicit_padding: a Pad before the stem, every stride-2 layer and max pool, none
    before stride-1 layers (``add_fixed_padding = use_explicit_padding and stride > 1``)."""
    inputs = keras.Input((40, 40, 3), batch_size=1)
    same = spaghettinet_features(inputs, _SMALL, "same")
    padded = spaghettinet_features(inputs, _SMALL, "pad", explicit_padding=True)
    assert [tuple(x.shape) for x in same] == [tuple(x.shape) for x in padded] \
        == [(1, 5, 5, 24), (1, 3, 3, 24)]
    model = keras.Model(inputs, padded)
    pads = {layer.name[len("pad/"):] for layer in model.layers
            if isinstance(layer, keras.layers.ZeroPadding2D)}
    assert pads == {"spaghetti_net/stem_node/stem/Pad", "spaghetti_net/n0_0/slice_0/Pad",
                    "spaghetti_net/n0_0/slice_1/Pad", "spaghetti_net/n1_0/depthwise/Pad",
                    "spaghetti_net/n2_0/depthwise/Pad", "edge_n0_c1/maxpool_downsampling/Pad"}


@pytest.mark.slow  # about 10 s; the full variants' verdicts (slow too) cover every kind
def test_every_layer_and_edge_kind_maps_to_the_edgetpu(tmp_path):
    """The grouped conv's SLICEs and CONCATENATION, the biased depthwise, the max pool, the
    nearest-neighbour upsampling (x2, RESIZE_NEAREST_NEIGHBOR) and the crop (STRIDED_SLICE)
    all map after our PTQ."""
    from quant.float_model import FloatModel

    size = 40
    inputs = keras.Input((size, size, 3), batch_size=1)
    model = keras.Model(inputs, spaghettinet_features(inputs, _SMALL, "FeatureExtractor/net"))
    analysis = int8_analysis(FloatModel(model=model, preprocess=inception_preprocess(size),
                                   name="nodes", task="classify", source="test"),
                        size, tmp_path)
    assert analysis.cpu_ops == {}
    opcodes = {op.opcode for op in analysis.ops}
    assert {"SLICE", "CONCATENATION", "MAX_POOL_2D", "RESIZE_NEAREST_NEIGHBOR",
            "STRIDED_SLICE"} <= opcodes


@pytest.mark.slow  # 75-110 s each on 2 busy cores (the converter's SavedModel export)
@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_maps_to_the_edgetpu_but_the_postprocessing(variant, tmp_path):
    """Measured verdicts: every variant maps all ops but TFLite_Detection_PostProcess (the
    grouped convs' SLICE / CONCATENATION, the crops' STRIDED_SLICE, the max pools and the x2
    nearest-neighbour upsamplings included; 2058 anchors x 91 classes)."""
    from quant.detection.sources import random_ssd

    name = f"spaghettinet_edgetpu_{variant}"
    analysis = int8_analysis(random_ssd(_config(variant), name), 320, tmp_path)
    assert analysis.cpu_ops == {"TFLite_Detection_PostProcess": 1}
