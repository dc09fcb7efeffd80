"""SSD / SSDLite detectors as the TF1 Object Detection API builds them, from a pipeline config.

The network ends before post-processing: outputs are the raw box encodings ``[1, A, 4]``
and the class scores after the score converter (sigmoid) ``[1, A, num_classes + 1]``, the
inputs of ``TFLite_Detection_PostProcess``. Layer names are the OD API checkpoint scopes:
the backbone under ``FeatureExtractor/<Backbone>``, extra feature maps named by
``multi_resolution_feature_maps`` (``Conv2d_13_pointwise_2_Conv2d_2_3x3_s2_512``), box
predictors ``BoxPredictor_N/{BoxEncodingPredictor,ClassPredictor}`` (with ``_depthwise``
separable parts in SSDLite). See :mod:`quant.models._layers` for the naming rule. The
MobileDet extractors (``ssd_mobiledet_{cpu,dsp,edgetpu,gpu}``, :mod:`quant.models.mobiledet`)
feed ``C4`` and ``C5`` to the same extra feature maps (``MobileDetEdgeTPU/C5_2_Conv2d_2_...``),
as ``ssd_inception_v2`` feeds ``Mixed_4c`` and ``Mixed_5c`` (:mod:`quant.models.inception_v2`).
``use_explicit_padding`` (``ssd_mobilenet_v2``, the face SSD) pads every conv wider than 1x1
with TF-slim's fixed padding and runs it 'VALID'.

Some extractors build their own feature maps: ``ssd_mobilenet_v1_ppn`` pools
``Conv2d_11_pointwise`` five times (``pooling_pyramid_feature_maps``); the FPN extractors add a
feature pyramid over MobileNet v1 or ResNet v1 50 / 101 (:mod:`quant.models.resnet_v1`):
``FeatureExtractor/{MobilenetV1,resnet_v1_50}/fpn/{projection_N,smoothing_N,bottom_up_...}``;
``ssd_mobilenet_v2_mnasfpn`` runs MnasFPN cells over MobileNet v2
(:mod:`quant.detection.mnasfpn`); ``ssd_spaghettinet`` is a SpaghettiNet graph whose output
nodes are the maps (:mod:`quant.models.spaghettinet`). The FPN, PPN and MnasFPN extractors
come with the ``weight_shared_convolutional_box_predictor`` (separable with
``use_depthwise``, as in MnasFPN):
one set of convolutions (``WeightSharedConvolutionalBoxPredictor/{BoxPredictionTower,
ClassPredictionTower or PredictionTower}/conv2d_N``, ``.../{BoxPredictor,ClassPredictor}``)
applied to every feature map, with one BatchNorm per map (``conv2d_N/BatchNorm/feature_M``).

Example::

    config = read_ssd_config("pipeline.config")
    model = build_ssd(config)              # random weights
    load_weights(model, "model.ckpt", scope="FeatureExtractor")
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from edgeq._tensorflow import keras
from edgeq.errors import BadInputError
from quant.detection.anchors import anchors_per_location
from quant.detection.mnasfpn import mnasfpn_feature_maps
from quant.detection.pipeline_config import SsdConfig
from quant.models._layers import BATCH_NORM_EPSILON, conv_bn, depthwise_bn
from quant.models.inception_v2 import inception_v2_features
from quant.models.mobiledet import (
    MOBILEDET_CPU,
    MOBILEDET_DSP,
    MOBILEDET_EDGETPU,
    MOBILEDET_GPU,
    MobileDetSpec,
    mobiledet_backbone,
)
from quant.models.mobilenet_edgetpu import V3_EDGETPU
from quant.models.mobilenet_v1 import mobilenet_v1_features
from quant.models.mobilenet_v2 import mobilenet_v2_features
from quant.models.mobilenet_v3 import V3_LARGE_DETECTION, V3_SMALL_DETECTION, mobilenet_v3_trunk
from quant.models.resnet_v1 import ConvStyle, resnet_v1_features
from quant.models.spaghettinet import spaghettinet_feature_maps

layers = keras.layers

# Depth of the extra feature maps added after the backbone ("-1": a backbone endpoint).
EXTRA_LAYER_DEPTHS = (512, 256, 256, 128)
BOX_ENCODINGS = "box_encodings"
CLASS_SCORES = "class_scores"
WEIGHT_SHARED = "WeightSharedConvolutionalBoxPredictor"
_V1_SCOPE = "FeatureExtractor/MobilenetV1"
# MobileNet v1 endpoints of FPN levels 2, 3, 4, 5 (ssd_mobilenet_v1_fpn_feature_extractor.py).
_FPN_BLOCKS = ("Conv2d_3_pointwise", "Conv2d_5_pointwise", "Conv2d_11_pointwise",
               "Conv2d_13_pointwise")
_PPN_LAYERS = 6
# Extractors that implement use_explicit_padding (TF-slim fixed padding before 'VALID' convs).
_EXPLICIT_PADDING = ("ssd_mobilenet_v2", "ssd_spaghettinet")
# Extractors whose own arg scope sets every layer: the config's conv_hyperparams do not apply.
_OWN_ARG_SCOPE = ("ssd_mobilenet_v2_mnasfpn", "ssd_spaghettinet")


@dataclasses.dataclass(frozen=True)
class _Backbone:
    """A feature extractor: its scope, endpoints builder and the two endpoints it feeds."""

    scope: str
    endpoints: Callable[[object, SsdConfig, str], list]
    base_name: str


def _mobilenet_v1_endpoints(inputs, config: SsdConfig, scope: str) -> list:
    fe = config.feature_extractor
    ends = mobilenet_v1_features(inputs, fe.depth_multiplier, fe.min_depth, scope)
    return [ends["Conv2d_11_pointwise"], ends["Conv2d_13_pointwise"]]


def _mobilenet_v2_endpoints(inputs, config: SsdConfig, scope: str) -> list:
    fe = config.feature_extractor
    if fe.depth_multiplier < 1.0:
        raise BadInputError(
            f"ssd_mobilenet_v2 with depth_multiplier {fe.depth_multiplier} is not supported "
            "(the builder keeps Conv_1 at 1280 channels below 1.0, the OD API does not)"
        )
    top = mobilenet_v2_features(inputs, fe.depth_multiplier, scope, fe.use_explicit_padding)
    trunk = keras.Model(inputs, top)
    # layer_15/expansion_output of TF-slim: the expand conv (after ReLU6) of expanded_conv_13.
    return [trunk.get_layer(f"{scope}/expanded_conv_13/expand/Relu6").output, top]


def _inception_v2_endpoints(inputs, config: SsdConfig, scope: str) -> list:
    fe = config.feature_extractor
    ends = inception_v2_features(inputs, scope, fe.depth_multiplier, fe.min_depth)
    return [ends["Mixed_4c"], ends["Mixed_5c"]]


def _trunk_endpoints(spec, first: str, last: str) -> Callable[[object, SsdConfig, str], list]:
    """Endpoints of a block-spec trunk (MobileNet v3 / EdgeTPU): ``first`` and ``last``."""

    def endpoints(inputs, config: SsdConfig, scope: str) -> list:
        fe = config.feature_extractor
        ends = mobilenet_v3_trunk(inputs, spec, scope, fe.depth_multiplier, fe.min_depth)
        return [ends[first], ends[last]]

    return endpoints


def _mobiledet_endpoints(spec: MobileDetSpec) -> Callable[[object, SsdConfig, str], list]:
    """Endpoints ``C4`` and ``C5`` of a MobileDet backbone (the extractor's ``from_layer``)."""

    def endpoints(inputs, config: SsdConfig, scope: str) -> list:
        ends = mobiledet_backbone(inputs, spec, scope, config.feature_extractor.depth_multiplier)
        return [ends["C4"], ends["C5"]]

    return endpoints


_BACKBONES: dict[str, _Backbone] = {
    "ssd_mobilenet_v1": _Backbone(_V1_SCOPE, _mobilenet_v1_endpoints, "Conv2d_13_pointwise"),
    "ssd_mobilenet_v2": _Backbone("FeatureExtractor/MobilenetV2", _mobilenet_v2_endpoints,
                                  "layer_19"),
    # ssd_inception_v2_feature_extractor.py: from_layer Mixed_4c, Mixed_5c.
    "ssd_inception_v2": _Backbone("FeatureExtractor/InceptionV2", _inception_v2_endpoints,
                                  "Mixed_5c"),
    # ssd_mobilenet_v3_feature_extractor.py: from_layer of the large / small extractors.
    "ssd_mobilenet_v3_large": _Backbone(
        "FeatureExtractor/MobilenetV3",
        _trunk_endpoints(V3_LARGE_DETECTION, "layer_14/expansion_output", "layer_17"),
        "layer_17"),
    "ssd_mobilenet_v3_small": _Backbone(
        "FeatureExtractor/MobilenetV3",
        _trunk_endpoints(V3_SMALL_DETECTION, "layer_10/expansion_output", "layer_13"),
        "layer_13"),
    # ssd_mobilenet_edgetpu_feature_extractor.py.
    "ssd_mobilenet_edgetpu": _Backbone(
        "FeatureExtractor/MobilenetEdgeTPU",
        _trunk_endpoints(V3_EDGETPU, "layer_18/expansion_output", "layer_23"),
        "layer_23"),
    # ssd_mobiledet_feature_extractor.py: SSDMobileDet{CPU,DSP,EdgeTPU,GPU}FeatureExtractor.
    **{f"ssd_mobiledet_{kind.lower()}": _Backbone(
        f"FeatureExtractor/MobileDet{kind}", _mobiledet_endpoints(spec), "C5")
       for kind, spec in (("CPU", MOBILEDET_CPU), ("DSP", MOBILEDET_DSP),
                          ("EdgeTPU", MOBILEDET_EDGETPU), ("GPU", MOBILEDET_GPU))},
}


def _depth(config: SsdConfig, channels: int) -> int:
    fe = config.feature_extractor
    return max(int(channels * fe.depth_multiplier), fe.min_depth)


def _multi_resolution_feature_maps(backbone: _Backbone, inputs, config: SsdConfig) -> list:
    """Two backbone endpoints and four stride-2 maps (``multi_resolution_feature_maps``)."""
    feature_maps = backbone.endpoints(inputs, config, backbone.scope)
    x = feature_maps[-1]
    prefix = f"{backbone.scope}/{backbone.base_name}"
    for index, layer_depth in enumerate(EXTRA_LAYER_DEPTHS, start=len(feature_maps)):
        half = _depth(config, layer_depth // 2)
        x = conv_bn(x, half, 1, 1, f"{prefix}_1_Conv2d_{index}_1x1_{half}")
        scope = f"{prefix}_2_Conv2d_{index}_3x3_s2_{_depth(config, layer_depth)}"
        explicit = config.feature_extractor.use_explicit_padding
        if config.feature_extractor.use_depthwise:
            x = depthwise_bn(x, 2, f"{scope}_depthwise", explicit_padding=explicit)
            x = conv_bn(x, _depth(config, layer_depth), 1, 1, scope)
        else:
            x = conv_bn(x, _depth(config, layer_depth), 3, 2, scope, explicit_padding=explicit)
        feature_maps.append(x)
    return feature_maps


def _ppn_feature_maps(inputs, config: SsdConfig) -> list:
    """``Conv2d_11_pointwise`` and five 2x2 / 2 'SAME' max pools of it (the OD API PPN)."""
    fe = config.feature_extractor
    x = mobilenet_v1_features(inputs, fe.depth_multiplier, fe.min_depth,
                              _V1_SCOPE)["Conv2d_11_pointwise"]
    feature_maps = [x]
    for index in range(_PPN_LAYERS - 1):
        x = layers.MaxPooling2D(2, 2, padding="same",
                                name=f"FeatureExtractor/MaxPool2d_{index}_2x2")(x)
        feature_maps.append(x)
    return feature_maps


@dataclasses.dataclass(frozen=True)
class _FpnBackbone:
    """An FPN feature extractor: its scope, its level 2 ... 5 endpoints (finest first), and
    the scope of the stride-2 conv that makes each level above 5 (from the level below)."""

    scope: str
    endpoints: Callable[[object, SsdConfig, str], list]
    bottom_up: Callable[[int], str]


def _mobilenet_v1_fpn_endpoints(inputs, config: SsdConfig, scope: str) -> list:
    fe = config.feature_extractor
    ends = mobilenet_v1_features(inputs, fe.depth_multiplier, fe.min_depth, scope)
    return [ends[block] for block in _FPN_BLOCKS]


def _resnet_fpn_endpoints(depth: int) -> Callable[[object, SsdConfig, str], list]:
    """``block1`` ... ``block4`` of ResNet v1 ``depth`` (``_SSDResnetV1FpnFeatureExtractor``:
    the detection config's hyperparameters apply to the backbone when it overrides them)."""

    def endpoints(inputs, config: SsdConfig, scope: str) -> list:
        fe = config.feature_extractor
        # The override brings ReLU6 (the only activation _check_supported lets through).
        style = ConvStyle(6.0, fe.batch_norm_epsilon) if fe.override_base_hyperparams \
            else ConvStyle()
        ends = resnet_v1_features(inputs, depth, scope, fe.depth_multiplier, fe.min_depth, style)
        return [ends[f"block{index}"] for index in range(1, 5)]

    return endpoints


_FPN_BACKBONES: dict[str, _FpnBackbone] = {
    # ssd_mobilenet_v1_fpn_feature_extractor.py: bottom_up_Conv2d_14, _15 for levels 6, 7.
    "ssd_mobilenet_v1_fpn": _FpnBackbone(_V1_SCOPE, _mobilenet_v1_fpn_endpoints,
                                         lambda level: f"bottom_up_Conv2d_{level + 8}"),
    # ssd_resnet_v1_fpn_feature_extractor.py: bottom_up_block5, _block6 for levels 6, 7.
    **{f"ssd_resnet{depth}_v1_fpn": _FpnBackbone(
        f"FeatureExtractor/resnet_v1_{depth}", _resnet_fpn_endpoints(depth),
        lambda level: f"bottom_up_block{level - 1}") for depth in (50, 101)},
}


def _fpn_feature_maps(backbone: _FpnBackbone, inputs, config: SsdConfig) -> list:
    """FPN levels ``fpn_min_level`` ... ``fpn_max_level`` (the OD API FPN extractors).

    Levels up to 5 are the top-down maps (under ``<scope>/fpn``) of the backbone's
    endpoints from ``fpn_min_level``; higher levels are 3x3 / 2 convs on the level below.
    """
    fe = config.feature_extractor
    ends = backbone.endpoints(inputs, config, backbone.scope)
    base_max_level = min(fe.fpn_max_level, 5)
    depth = _depth(config, fe.additional_layer_depth)
    scope = f"{backbone.scope}/fpn"
    feature_maps = _fpn_top_down(ends[fe.fpn_min_level - 2:base_max_level - 1], depth, scope)
    x = feature_maps[-1]
    for level in range(base_max_level + 1, fe.fpn_max_level + 1):
        x = conv_bn(x, depth, 3, 2, f"{scope}/{backbone.bottom_up(level)}")
        feature_maps.append(x)
    return feature_maps


def _fpn_top_down(features: list, depth: int, scope: str) -> list:
    """``fpn_top_down_feature_maps`` (TF-slim): finest map first.

    The coarsest map is a 1x1 projection (with bias); each finer one is its own projection
    plus the 2x nearest-neighbour upsampled sum above it, then a 3x3 ``smoothing`` conv. As
    in the slim version, the sum (not the smoothed map) is what goes up to the next level.
    """
    levels = len(features)
    top_down = layers.Conv2D(depth, 1, use_bias=True,
                             name=f"{scope}/projection_{levels}")(features[-1])
    outputs = [top_down]
    for level in reversed(range(levels - 1)):
        top_down = layers.UpSampling2D(
            2, interpolation="nearest", name=f"{scope}/top_down/upsampling_{level + 1}")(top_down)
        residual = layers.Conv2D(depth, 1, use_bias=True,
                                 name=f"{scope}/projection_{level + 1}")(features[level])
        if tuple(top_down.shape[1:3]) != tuple(residual.shape[1:3]):
            raise BadInputError(
                f"FPN: an upsampled {tuple(top_down.shape[1:3])} map does not match the "
                f"{tuple(residual.shape[1:3])} map below it; every FPN level must halve the "
                "one below exactly (an image size that is a multiple of 32, 640 in the zoo)"
            )
        top_down = layers.Add(name=f"{scope}/top_down/add_{level + 1}")([top_down, residual])
        outputs.append(conv_bn(top_down, depth, 3, 1, f"{scope}/smoothing_{level + 1}"))
    return outputs[::-1]


_FEATURE_EXTRACTORS: dict[str, Callable[[object, SsdConfig], list]] = {
    **{kind: functools.partial(_multi_resolution_feature_maps, backbone)
       for kind, backbone in _BACKBONES.items()},
    **{kind: functools.partial(_fpn_feature_maps, backbone)
       for kind, backbone in _FPN_BACKBONES.items()},
    "ssd_mobilenet_v1_ppn": _ppn_feature_maps,
    "ssd_mobilenet_v2_mnasfpn": mnasfpn_feature_maps,
    "ssd_spaghettinet": spaghettinet_feature_maps,
}
# Checkpoint scopes the OD API builds but no feature map reads (the PPN stops at Conv2d_11).
_UNUSED_SCOPES = {"ssd_mobilenet_v1_ppn": (f"{_V1_SCOPE}/Conv2d_12_", f"{_V1_SCOPE}/Conv2d_13_")}


def list_feature_extractors() -> list[str]:
    """Return the ``feature_extractor.type`` values :func:`build_ssd` supports."""
    return sorted(_FEATURE_EXTRACTORS)


def unused_checkpoint_scopes(config: SsdConfig) -> tuple[str, ...]:
    """Return the prefixes of checkpoint variables the OD API creates but the network of
    ``config`` never uses (MobileNet v1 ``Conv2d_12`` / ``Conv2d_13`` of the PPN)."""
    return _UNUSED_SCOPES.get(config.feature_extractor.type, ())


def build_ssd(config: SsdConfig, name: str | None = None):
    """Build the SSD network of ``config`` (random weights), batch 1, float32 input in [-1, 1].

    Args:
        config: the parsed ``pipeline.config``.
        name: the Keras model name (default: the feature extractor type).

    Returns:
        A tf-keras Model with outputs ``box_encodings`` [1, A, 4] and ``class_scores``
        [1, A, num_classes + 1].

    Raises:
        BadInputError: an architecture option this builder does not implement.
    """
    fe = config.feature_extractor
    extractor = _FEATURE_EXTRACTORS.get(fe.type)
    if extractor is None:
        raise BadInputError(
            f"feature extractor {fe.type!r} is not supported; supported: "
            f"{list_feature_extractors()}"
        )
    _check_supported(config)
    height, width = config.image_size
    inputs = keras.Input((height, width, 3), batch_size=1, name="normalized_input_image_tensor")
    feature_maps = extractor(inputs, config)
    per_location = anchors_per_location(config.anchors)
    if len(per_location) != len(feature_maps):
        raise BadInputError(
            f"unsupported SSD settings in pipeline.config: {len(per_location)} anchor layers "
            f"for the {len(feature_maps)} feature maps of {fe.type}"
        )
    predict = _weight_shared_predictions if config.box_predictor.weight_shared \
        else _convolutional_predictions
    boxes, scores = predict(feature_maps, per_location, config)
    box_encodings = layers.Concatenate(axis=1, name=BOX_ENCODINGS)(boxes)
    logits = layers.Concatenate(axis=1, name="concat_1")(scores)
    class_scores = layers.Activation("sigmoid", name=CLASS_SCORES)(logits)
    return keras.Model(inputs, [box_encodings, class_scores], name=name or fe.type)


def _convolutional_predictions(feature_maps: list, per_location: list[int],
                               config: SsdConfig) -> tuple[list, list]:
    """``ConvolutionalBoxPredictor``: one ``BoxPredictor_N`` per feature map."""
    predictor = config.box_predictor
    boxes, scores = [], []
    num_slots = config.num_classes + 1
    for index, (feature_map, anchors) in enumerate(zip(feature_maps, per_location, strict=True)):
        scope = f"BoxPredictor_{index}"
        box = _predictor_conv(feature_map, anchors * predictor.box_code_size,
                              f"{scope}/BoxEncodingPredictor", config)
        cls = _predictor_conv(feature_map, anchors * num_slots, f"{scope}/ClassPredictor", config)
        boxes.append(layers.Reshape((-1, predictor.box_code_size), name=f"{scope}/Reshape")(box))
        scores.append(layers.Reshape((-1, num_slots), name=f"{scope}/Reshape_1")(cls))
    return boxes, scores


def _predictor_conv(x, filters: int, scope: str, config: SsdConfig):
    """One box-predictor head: [separable 3x3 + BN + ReLU6, then] conv with bias."""
    kernel = config.box_predictor.kernel_size
    if config.box_predictor.use_depthwise:
        x = depthwise_bn(x, 1, f"{scope}_depthwise", kernel=kernel)
        kernel = 1
    return layers.Conv2D(filters, kernel, padding="same", use_bias=True, name=scope)(x)


def _weight_shared_predictions(feature_maps: list, per_location: list[int],
                               config: SsdConfig) -> tuple[list, list]:
    """``WeightSharedConvolutionalBoxPredictor``: the same layers on every feature map.

    Each tower is ``num_layers_before_predictor`` convs (no bias when BatchNorm follows),
    each followed by that feature map's own BatchNorm and ReLU6; the box and class
    predictors read their tower (or the shared ``PredictionTower``). With ``use_depthwise``
    every one of these convs is separable (``depthwise_weights`` and ``pointwise_weights``
    under one scope, as ``slim.separable_conv2d`` names them).
    """
    predictor = config.box_predictor
    conv = layers.SeparableConv2D if predictor.use_depthwise else layers.Conv2D
    channels = {int(feature_map.shape[-1]) for feature_map in feature_maps}
    if len(set(per_location)) > 1 or len(channels) > 1:
        raise BadInputError(
            f"weight_shared_convolutional_box_predictor needs the same anchors per location "
            f"({per_location}) and channels ({sorted(channels)}) on every feature map"
        )
    towers = ("PredictionTower",) if predictor.share_prediction_tower \
        else ("BoxPredictionTower", "ClassPredictionTower")
    convs = {tower: [conv(predictor.depth, predictor.kernel_size, padding="same",
                          use_bias=not predictor.batch_norm,
                          name=f"{WEIGHT_SHARED}/{tower}/conv2d_{i}")
                     for i in range(predictor.num_layers_before_predictor)]
             for tower in towers}
    num_slots = config.num_classes + 1
    box_head, class_head = (
        conv(per_location[0] * size, predictor.kernel_size, padding="same", use_bias=True,
             name=f"{WEIGHT_SHARED}/{head}")
        for head, size in (("BoxPredictor", predictor.box_code_size),
                           ("ClassPredictor", num_slots)))
    boxes, scores = [], []
    for index, feature_map in enumerate(feature_maps):
        features = [_tower(feature_map, convs[tower], index, predictor.batch_norm)
                    for tower in towers]
        # Op scopes of the OD API graph: WeightSharedConvolutionalBoxPredictor, ..._1, ...
        scope = f"{WEIGHT_SHARED}_{index}" if index else WEIGHT_SHARED
        boxes.append(layers.Reshape((-1, predictor.box_code_size), name=f"{scope}/Reshape")(
            box_head(features[0])))
        scores.append(layers.Reshape((-1, num_slots), name=f"{scope}/Reshape_1")(
            class_head(features[-1])))
    return boxes, scores


def _tower(x, convs: list, feature_index: int, batch_norm: bool):
    """Shared convs, each with feature map ``feature_index``'s BatchNorm, then ReLU6."""
    for conv in convs:
        x = conv(x)
        if batch_norm:
            x = layers.BatchNormalization(
                epsilon=BATCH_NORM_EPSILON,
                name=f"{conv.name}/BatchNorm/feature_{feature_index}")(x)
        x = layers.ReLU(6.0, name=f"{conv.name}/Relu6_{feature_index}")(x)
    return x


def _check_supported(config: SsdConfig) -> None:
    fe, predictor = config.feature_extractor, config.box_predictor
    problems = []
    activations = [] if fe.type in _OWN_ARG_SCOPE else [fe.activation]
    if predictor.use_depthwise:
        activations.append(predictor.activation)
    problems += [f"activation {name} (only RELU_6)" for name in activations if name != "RELU_6"]
    if fe.use_explicit_padding and fe.type not in _EXPLICIT_PADDING:
        problems.append(f"use_explicit_padding in {fe.type} (supported in "
                        f"{', '.join(_EXPLICIT_PADDING)})")
    height, width = config.image_size
    if fe.pad_to_multiple > 1 and (height % fe.pad_to_multiple or width % fe.pad_to_multiple):
        problems.append(f"pad_to_multiple {fe.pad_to_multiple} with a {height}x{width} input "
                        "(use an input size that is a multiple of it)")
    if fe.type == "ssd_inception_v2" and not fe.override_base_hyperparams:
        problems.append("ssd_inception_v2 without override_base_feature_extractor_hyperparams "
                        "(the Object Detection API refuses it too)")
    if predictor.num_layers_before_predictor and not predictor.weight_shared:
        problems.append(f"num_layers_before_predictor {predictor.num_layers_before_predictor}")
    if fe.type in _FPN_BACKBONES:
        if fe.use_depthwise:
            problems.append(f"use_depthwise in {fe.type} (its modified conv defs)")
        if not 2 <= fe.fpn_min_level <= min(fe.fpn_max_level, 5):
            problems.append(f"fpn levels {fe.fpn_min_level}..{fe.fpn_max_level} (min in 2..5)")
    if config.nms.score_converter not in ("SIGMOID",):
        problems.append(f"score_converter {config.nms.score_converter} (only SIGMOID)")
    if problems:
        raise BadInputError(f"unsupported SSD settings in pipeline.config: {'; '.join(problems)}")
