"""The MnasFPN feature extractor (``ssd_mobilenet_v2_mnasfpn``) as the OD API builds it.

From ``research/object_detection/models/ssd_mobilenet_v2_mnasfpn_feature_extractor.py``
(Chen et al., https://arxiv.org/abs/1912.01106):

- backbone: TF-slim MobileNet v2 up to ``layer_18`` (``expanded_conv_16``, no ``Conv_1``)
  under ``FeatureExtractor/MobilenetV2``; ``C3``, ``C4``, ``C5`` are ``layer_7``,
  ``layer_14``, ``layer_18`` (the outputs of ``expanded_conv_5``, ``_12``, ``_16``);
- ``C6``: a 3x3 / 2 'SAME' max pool of ``C5`` (``MnasFPN/C6_downsample``), then a 1x1 conv
  with BatchNorm and no activation (``MnasFPN/C6_Conv1x1``);
- four cells ``MnasFPN/cell_N`` of five blocks ``block_M`` (:data:`MNASFPN_CELL`). A block
  resizes each of its two inputs to its level (``input_K``): a coarser or equal input gets a
  1x1 conv + BatchNorm (``Conv1x1``) then nearest-neighbour upsampling; a finer one a 3x3 /
  ``2**levels`` 'SAME' max pool (``Downsample``) then ``Conv1x1`` (size-dependent ordering:
  the 1x1 runs on the smaller map). The sum goes through ReLU6 and a separable conv to
  ``additional_layer_depth`` channels with BatchNorm and no activation (``SepConv``, one
  scope: ``depthwise_weights`` and ``pointwise_weights``);
- the last four blocks (levels 3, 4, 5, 6) are the cell's outputs; each gets a residual add
  of the cell input of the same shape (in the first cell only ``C6`` matches).

Every BatchNorm of the extractor, backbone included, has epsilon 0.01 (the extractor's own
``training_scope``; its ``conv_hyperparams`` are never used). Layer names are the
checkpoint scopes (see :mod:`quant.models._layers`).
"""

from __future__ import annotations

import dataclasses

from edgeq._tensorflow import keras
from edgeq.errors import BadInputError
from quant.detection.pipeline_config import SsdConfig
from quant.models._layers import conv_bn
from quant.models.mobilenet_v2 import mobilenet_v2_features

layers = keras.layers

SCOPE = "FeatureExtractor/MnasFPN"
BACKBONE_SCOPE = "FeatureExtractor/MobilenetV2"
#: BatchNorm epsilon of the whole extractor (its ``training_scope``).
EPSILON = 0.01
#: Pyramid levels of the cell inputs and outputs (``MNASFPN_DEF['feature_levels']``).
FEATURE_LEVELS = (3, 4, 5, 6)
# MobileNet v2 layers of C3, C4, C5: layer_7, layer_14, layer_18 (layer_N is block N - 2).
_BACKBONE_ENDPOINTS = ("expanded_conv_5/add", "expanded_conv_12/add",
                       "expanded_conv_16/project/BatchNorm")
_MIN_IMAGE_DIM = 33  # shape_utils.check_min_image_dim in extract_features


@dataclasses.dataclass(frozen=True)
class Block:
    """One MnasFPN block: the indices of its two inputs among the cell's features so far
    (the cell inputs first), its output level, separable conv kernel and expansion width."""

    inputs: tuple[int, int]
    output_level: int
    kernel_size: int
    expansion_size: int


#: ``_MNASFPN_CELL_CONFIG``; every one of the four cells has these blocks.
MNASFPN_CELL = (
    Block((1, 2), 4, 3, 256),
    Block((0, 4), 3, 3, 128),
    Block((5, 4), 4, 3, 128),
    Block((4, 3), 5, 5, 128),
    Block((4, 3), 6, 3, 96),
)
NUM_CELLS = 4


def mnasfpn_feature_maps(inputs, config: SsdConfig) -> list:
    """Build MobileNet v2 + MnasFPN on ``inputs``; return the level 3 ... 6 maps, finest first.

    Raises:
        BadInputError: settings the OD API extractor refuses (fpn levels other than 3 ... 6,
            an input whose levels do not halve exactly) or this builder does not implement
            (a depth multiplier other than 1.0).
    """
    fe = config.feature_extractor
    problems = []
    if (fe.fpn_min_level, fe.fpn_max_level) != (FEATURE_LEVELS[0], FEATURE_LEVELS[-1]):
        problems.append(f"fpn levels {fe.fpn_min_level}..{fe.fpn_max_level} (MnasFPN needs "
                        f"{FEATURE_LEVELS[0]}..{FEATURE_LEVELS[-1]})")
    if fe.depth_multiplier != 1.0:
        problems.append(f"depth_multiplier {fe.depth_multiplier} (only 1.0)")
    if min(config.image_size) < _MIN_IMAGE_DIM:
        problems.append(f"image size {config.image_size} (at least {_MIN_IMAGE_DIM})")
    if problems:
        raise BadInputError(
            f"unsupported {fe.type} settings in pipeline.config: {'; '.join(problems)}")
    features = _backbone(inputs)
    x = layers.MaxPooling2D(3, 2, padding="same", name=f"{SCOPE}/C6_downsample")(features[-1])
    features.append(_conv1x1(x, fe.additional_layer_depth, f"{SCOPE}/C6_Conv1x1"))
    _check_levels(features)
    for cell in range(NUM_CELLS):
        features = _cell(features, fe.additional_layer_depth, f"{SCOPE}/cell_{cell}")
    return features


def _backbone(inputs) -> list:
    """``C3``, ``C4``, ``C5`` of MobileNet v2 with the extractor's BatchNorm epsilon.

    :func:`mobilenet_v2_features` builds through ``Conv_1``; the SSD model keeps only the
    layers its outputs depend on, so ``Conv_1`` (which the OD API never creates) drops out.
    """
    trunk = keras.Model(inputs, mobilenet_v2_features(inputs, 1.0, BACKBONE_SCOPE,
                                                      epsilon=EPSILON))
    return [trunk.get_layer(f"{BACKBONE_SCOPE}/{name}").output for name in _BACKBONE_ENDPOINTS]


def _check_levels(features: list) -> None:
    """``_verify_config``: each input is ``2**level`` times smaller than the image that
    ``C3`` implies (the OD API checks widths; heights must match as well for the adds)."""
    base = [int(side) * 2 ** FEATURE_LEVELS[0] for side in features[0].shape[1:3]]
    for feature, level in zip(features, FEATURE_LEVELS, strict=True):
        actual = tuple(int(side) for side in feature.shape[1:3])
        expected = tuple(side // 2 ** level for side in base)
        if actual != expected:
            raise BadInputError(
                f"MnasFPN: the level-{level} map is {actual}, not {expected}; every level must "
                "halve the one below exactly (an input size that is a multiple of 64, such as "
                "320)"
            )


def _conv1x1(x, filters: int, scope: str):
    """1x1 conv without bias + BatchNorm, no activation (slim ``conv2d`` in the MnasFPN
    arg scopes)."""
    return conv_bn(x, filters, 1, 1, scope, activation=False, epsilon=EPSILON)


def _cell(inputs: list, depth: int, scope: str) -> list:
    """``_mnasfpn_cell``: the blocks of :data:`MNASFPN_CELL`, then the cell-wide residuals."""
    features, levels = list(inputs), list(FEATURE_LEVELS)
    for index, block in enumerate(MNASFPN_CELL):
        features.append(_block(features, levels, block, depth, f"{scope}/block_{index}"))
        levels.append(block.output_level)
    outputs = features[-len(inputs):]
    for index, (cell_input, output) in enumerate(zip(inputs, outputs, strict=True)):
        if tuple(cell_input.shape) == tuple(output.shape):
            outputs[index] = layers.Add(name=f"{scope}/residual_{index}")([output, cell_input])
    return outputs


def _block(features: list, levels: list[int], block: Block, depth: int, scope: str):
    """One block: both inputs resized to its level and summed, ReLU6, separable conv + BN."""
    resized = [_resize(features[source], levels[source], block, f"{scope}/input_{index}")
               for index, source in enumerate(block.inputs)]
    x = layers.Add(name=f"{scope}/add")(resized)
    x = layers.ReLU(6.0, name=f"{scope}/Relu6")(x)
    x = layers.SeparableConv2D(depth, block.kernel_size, padding="same", use_bias=False,
                               name=f"{scope}/SepConv")(x)
    return layers.BatchNormalization(epsilon=EPSILON, name=f"{scope}/SepConv/BatchNorm")(x)


def _resize(x, level: int, block: Block, scope: str):
    """``_apply_size_dependent_ordering``: 1x1 then upsample, or max pool then 1x1."""
    if level >= block.output_level:
        x = _conv1x1(x, block.expansion_size, f"{scope}/Conv1x1")
        if level == block.output_level:
            return x
        # ops.nearest_neighbor_upsampling: every value repeated scale x scale times.
        return layers.UpSampling2D(2 ** (level - block.output_level), interpolation="nearest",
                                   name=f"{scope}/nearest_neighbor_upsampling")(x)
    stride = 2 ** (block.output_level - level)
    x = layers.MaxPooling2D(3, stride, padding="same", name=f"{scope}/Downsample")(x)
    return _conv1x1(x, block.expansion_size, f"{scope}/Conv1x1")
