"""The face SSD of the zoo (``facessd_mobilenet_v2_quantized_open_image_v4``): SSD MobileNet v2
with ``use_explicit_padding``.

Expected behaviour is read off TF-slim and the Object Detection API:
``nets/mobilenet/mobilenet.py`` (``mobilenet_base(use_explicit_padding=True)``: every conv
with a kernel above 1 reads ``_fixed_padding(net, kernel_size)`` and runs 'VALID'),
``nets/mobilenet/conv_blocks.py`` (``expanded_conv``: the same for its depthwise conv),
``models/feature_map_generators.py`` (``multi_resolution_feature_maps``: ``ops.fixed_padding``
before the 3x3 stride-2 extra convs when ``use_explicit_padding``), and the sample config
``samples/configs/facessd_mobilenet_v2_quantized_320x320_open_image_v4.config`` (one class,
320x320, ``pad_to_multiple: 32``, 3x3 box predictors, anchor strides 16 ... 512).
"""

from __future__ import annotations

import numpy as np
import pytest
from ssd_configs import int8_analysis, random_variables, write_export

from edgeq._tensorflow import keras, tf
from edgeq.errors import BadInputError
from edgeq.textproto import parse_text_proto
from quant.detection.anchors import ssd_anchors
from quant.detection.pipeline_config import ssd_config_from_message
from quant.detection.sources import feature_map_sizes, load_ssd_checkpoint
from quant.detection.ssd import build_ssd

_STRIDES = "".join(f"\n        height_stride: {s} width_stride: {s}"
                   for s in (16, 32, 64, 128, 256, 512))
# The network fields of the sample config.
CONFIG = """\
model {
  ssd {
    num_classes: 1
    image_resizer { fixed_shape_resizer { height: %(size)d width: %(size)d } }
    feature_extractor {
      type: "ssd_mobilenet_v2"
      depth_multiplier: 1.0
      min_depth: 16
      conv_hyperparams { activation: RELU_6 batch_norm { epsilon: 0.001 } }
      pad_to_multiple: 32
      use_explicit_padding: %(explicit)s
    }
    box_coder { faster_rcnn_box_coder { y_scale: 10.0 x_scale: 10.0 height_scale: 5.0
                                        width_scale: 5.0 } }
    box_predictor {
      convolutional_box_predictor {
        conv_hyperparams { activation: RELU_6 batch_norm { epsilon: 0.001 } }
        min_depth: 0 max_depth: 0 num_layers_before_predictor: 0 kernel_size: 3
        box_code_size: 4
      }
    }
    anchor_generator {
      ssd_anchor_generator {
        num_layers: 6 min_scale: 0.2 max_scale: 0.95
        aspect_ratios: [1.0, 2.0, 0.5, 3.0, 0.3333]%(strides)s
      }
    }
    post_processing {
      batch_non_max_suppression { score_threshold: 1e-8 iou_threshold: 0.5
                                  max_detections_per_class: 100 max_total_detections: 100 }
      score_converter: SIGMOID
    }
  }
}
"""
# MobileNet v2: the 3x3 stem and 17 depthwise convs; 4 extra 3x3 stride-2 maps.
PADDED_CONVS = 1 + 17 + 4
# 20x20 x 3 anchors (reduce_boxes_in_lowest_layer) + (10x10 + 5x5 + 3x3 + 2x2 + 1x1) x 6.
ANCHORS = 2034


def _text(size: int = 320, explicit: bool = True) -> str:
    return CONFIG % {"size": size, "explicit": str(explicit).lower(), "strides": _STRIDES}


def _config(**kwargs):
    return ssd_config_from_message(parse_text_proto(_text(**kwargs)))


@pytest.fixture(scope="module")
def model():
    return build_ssd(_config())


def test_every_conv_wider_than_1x1_reads_a_fixed_padding(model):
    padded = [layer for layer in model.layers
              if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D)
              and layer.kernel_size != (1, 1)
              and not layer.name.startswith("BoxPredictor")]
    assert len(padded) == PADDED_CONVS
    for layer in padded:
        assert layer.padding == "valid", layer.name
        pad = layer._inbound_nodes[0].inbound_layers
        assert isinstance(pad, keras.layers.ZeroPadding2D), layer.name
        assert pad.padding == ((1, 1), (1, 1)), layer.name
    # The box predictors are 'SAME' 3x3 stride-1 convs (ConvolutionalBoxPredictor has no
    # explicit padding), which pad (1, 1) as well.
    assert model.get_layer("BoxPredictor_0/BoxEncodingPredictor").padding == "same"


def test_stride_2_conv_centres_its_window_as_the_od_api(model):
    """An even map: 'SAME' would pad only after, the fixed padding pads 1 on each side."""
    scope = "FeatureExtractor/MobilenetV2/Conv"
    stem = keras.Model(model.inputs, model.get_layer(f"{scope}/BatchNorm").output)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 320, 320, 3)).astype(np.float32)
    weights = model.get_layer(scope).kernel
    bn = model.get_layer(f"{scope}/BatchNorm")
    conv = tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), weights, 2, "VALID")
    expected = bn(conv, training=False).numpy()
    np.testing.assert_allclose(stem(x).numpy(), expected, atol=1e-5)
    same = bn(tf.nn.conv2d(x, weights, 2, "SAME"), training=False).numpy()
    assert np.abs(same - expected).max() > 1e-3


def test_same_variables_as_without_explicit_padding_and_the_archive_loads(model, tmp_path):
    plain = build_ssd(_config(explicit=False))
    assert sorted(w.name for w in model.weights) == sorted(w.name for w in plain.weights)
    assert feature_map_sizes(model) == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert tuple(model.outputs[1].shape) == (1, ANCHORS, 2)
    variables = random_variables(model)
    # The archive is quantization-aware trained: its graph_rewriter adds range variables,
    # which the loader leaves aside (our PTQ measures its own ranges).
    ranges = {f"FeatureExtractor/MobilenetV2/Conv/{kind}_quant/{end}": np.float32(end == "max")
              for kind in ("weights", "act") for end in ("min", "max")}
    loaded = load_ssd_checkpoint(write_export(tmp_path / "face", _text(), variables | ranges))
    assert loaded.loaded == len(variables)
    config = _config()
    anchors = ssd_anchors(config.anchors, feature_map_sizes(model), config.image_size)
    np.testing.assert_allclose(loaded.head.anchors, anchors)
    # Explicit strides: the first layer's centres step 16 px of 320 (0.05), offset 8 px.
    assert config.anchors.height_stride == (16, 32, 64, 128, 256, 512)
    np.testing.assert_allclose(np.unique(anchors[:1200, 0])[:2], [0.025, 0.075], atol=1e-6)


def test_refusals_name_the_setting():
    with pytest.raises(BadInputError, match="pad_to_multiple 32 with a 300x300 input"):
        build_ssd(_config(size=300))
    text = _text().replace('"ssd_mobilenet_v2"', '"ssd_mobilenet_v1"')
    with pytest.raises(BadInputError, match="use_explicit_padding in ssd_mobilenet_v1"):
        build_ssd(ssd_config_from_message(parse_text_proto(text)))


@pytest.mark.slow  # about 60 s on 2 busy cores
def test_int8_maps_to_the_edgetpu_but_the_postprocessing(tmp_path):
    """The converter folds a fixed padding that equals 'SAME' into its conv; the 7 that
    differ (stride 2 on an even map: the stem, 4 depthwise convs, the 10x10 and 2x2 extra
    convs) stay PAD ops, which the Edge TPU runs."""
    from quant.detection.sources import random_ssd

    float_model = random_ssd(_config(), "facessd")
    unlike_same = [layer.name for layer in float_model.model.layers
                   if isinstance(layer, keras.layers.ZeroPadding2D)
                   and layer.input.shape[1] % 2 == 0
                   and layer._outbound_nodes[0].outbound_layer.strides == (2, 2)]
    assert len(unlike_same) == 7
    analysis = int8_analysis(float_model, 320, tmp_path)
    assert analysis.cpu_ops == {"TFLite_Detection_PostProcess": 1}
    assert sum(op.opcode == "PAD" for op in analysis.ops) == len(unlike_same)
    # Raw pixels in exactly (scale 1 / 127.5, zero point 128), through the stem's PAD.
    from quant.tflite_edit import read_model

    graph = read_model((tmp_path / "model.tflite").read_bytes()).subgraphs[0]
    quantization = graph.tensors[graph.inputs[0]].quantization
    assert (quantization.scale[0], quantization.zeroPoint[0]) == (pytest.approx(1 / 127.5), 128)
