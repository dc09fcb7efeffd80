"""SpaghettiNet-EdgeTPU S / M / L detection backbones as the Object Detection API builds them.

From ``research/object_detection/models/ssd_spaghettinet_feature_extractor.py``
(``SpaghettiNet`` and ``_spaghettinet_edgetpu_{s,m,l}``). A SpaghettiNet is a graph of nodes:
a stem conv (``s0``), then nodes that each merge their input edges and run a few layers. A
node's ``level`` is its nominal stride exponent (level 4: stride 16). Its edges are either one
passthrough (the input node's tensor as is) or several resample edges, each a 1x1 conv +
BatchNorm to the node's width after a stride-``2**d`` 'SAME' max pool (``d + 1`` window) from
a finer node, or before a ``2**d`` nearest-neighbour upsampling from a coarser one; the
resampled maps are cropped to the size of the edge from the finest input, summed, and
ReLU6'd. The layers:

- ``IbnOp``: 1x1 ``expansion`` to ``node filters * expansion`` (the node's output width, not
  its input's), ``depthwise`` k x k, 1x1 ``projection`` (no activation);
- ``IbnFusedGrouped``: the input channels cut into ``groups`` slices, each a k x k conv
  ``slice_i`` to ``slice channels * expansion``, concatenated (``concat``, see
  :class:`QuantizableConcat`), 1x1 ``projection`` (no activation): a grouped convolution
  built as the OD API builds it, because a grouped CONV_2D is not an Edge TPU op;
- ``SepConvOp``: a k x k ``depthwise`` with biases (no BatchNorm, no activation), then a 1x1
  ``pointwise`` conv + BatchNorm + ReLU6;

each followed by a residual add where the spec says so. Every other conv has BatchNorm
(epsilon 0.001) and ReLU6. Scopes, under ``FeatureExtractor/<arch name>``: nodes
``spaghetti_net/<node>_<layer index>/...``, the stem ``spaghetti_net/stem_node/stem``, edges
``edge_<input>_<node>/{1x1_no_resampling,1x1_after_downsampling,1x1_before_upsample}``
(outside ``spaghetti_net``, as in the OD API). Layer names are the checkpoint scopes (see
:mod:`quant.models._layers`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from edgeq._tensorflow import keras, tf
from edgeq.errors import BadInputError
from quant.models._layers import conv_bn, depthwise_bn, padded

if TYPE_CHECKING:
    from quant.detection.pipeline_config import SsdConfig

layers = keras.layers


@dataclasses.dataclass(frozen=True)
class IbnOp:
    """Inverted bottleneck: expansion 1x1, depthwise ``kernel`` / ``stride``, projection."""

    kernel: int
    expansion: int
    stride: int
    residual: bool


@dataclasses.dataclass(frozen=True)
class SepConvOp:
    """Depthwise ``kernel`` / ``stride`` (with biases) then a pointwise conv."""

    kernel: int
    stride: int
    residual: bool


@dataclasses.dataclass(frozen=True)
class IbnFusedGrouped:
    """Fused inverted bottleneck with a ``groups``-way grouped ``kernel`` x ``kernel``
    expansion conv, then a projection."""

    kernel: int
    expansion: int
    stride: int
    groups: int
    residual: bool


Layer = IbnOp | SepConvOp | IbnFusedGrouped


@dataclasses.dataclass(frozen=True)
class Node:
    """A SpaghettiNet node.

    Attributes:
        filters: output channels of every layer (and of the resample edges).
        level: nominal stride exponent; decides how each resample edge resamples.
        layers: the layers, in order.
        inputs: names of the input nodes.
        passthrough: a single edge that passes ``inputs[0]`` through unchanged (else every
            input is a resample edge).
    """

    filters: int
    level: int
    layers: tuple[Layer, ...]
    inputs: tuple[str, ...]
    passthrough: bool = False


@dataclasses.dataclass(frozen=True)
class SpaghettiNetSpec:
    """A SpaghettiNet: the stem (``s0``: kernel, filters, stride 2), the nodes in build
    order, and the output nodes (the SSD feature maps, finest first)."""

    stem: tuple[int, int]
    nodes: tuple[tuple[str, Node], ...]
    outputs: tuple[str, ...]


STEM = "s0"
_OUTPUTS = ("c0n1", "c0n2", "c0n3", "c0n4", "c0n5")


def _passthrough(source: str, filters: int, level: int, *ops: Layer) -> Node:
    return Node(filters, level, ops, (source,), passthrough=True)


def _merge(sources: tuple[str, str], filters: int, level: int, *ops: Layer) -> Node:
    return Node(filters, level, ops, sources)


# _spaghettinet_edgetpu_s.
SPAGHETTINET_EDGETPU_S = SpaghettiNetSpec((5, 24), (
    ("n0", _passthrough("s0", 48, 2, IbnFusedGrouped(3, 8, 2, 3, False))),
    ("n1", _passthrough("n0", 64, 3, IbnFusedGrouped(3, 4, 2, 4, False),
                        IbnFusedGrouped(3, 4, 1, 4, True), IbnFusedGrouped(3, 4, 1, 4, True))),
    ("n2", _passthrough("n1", 72, 4, IbnOp(3, 8, 2, False), IbnFusedGrouped(3, 8, 1, 4, True),
                        IbnOp(3, 8, 1, True), IbnOp(3, 4, 1, True))),
    ("n3", _passthrough("n2", 88, 5, IbnOp(3, 8, 2, False), IbnOp(3, 8, 1, True),
                        IbnOp(3, 4, 1, True), IbnOp(3, 4, 1, True))),
    ("n4", _passthrough("n3", 88, 6, IbnOp(3, 8, 2, False), SepConvOp(5, 1, True),
                        SepConvOp(5, 1, True), SepConvOp(5, 1, True))),
    ("n5", _passthrough("n4", 88, 7, SepConvOp(5, 2, False), SepConvOp(3, 1, True))),
    ("c0n0", _merge(("n3", "n4"), 144, 5, IbnOp(3, 4, 1, False), IbnOp(3, 4, 1, True),
                    IbnOp(3, 4, 1, True), IbnOp(3, 4, 1, True))),
    ("c0n1", _merge(("n2", "c0n0"), 120, 4, IbnOp(3, 8, 1, False), IbnOp(3, 4, 1, True),
                    IbnOp(3, 4, 1, True), IbnOp(3, 4, 1, True))),
    ("c0n2", _merge(("c0n1", "c0n0"), 168, 5, IbnOp(3, 4, 1, False))),
    ("c0n3", _merge(("n5", "c0n0"), 136, 6, IbnOp(3, 4, 1, False), SepConvOp(3, 1, True))),
    ("c0n4", _merge(("n5", "c0n0"), 136, 7, IbnOp(3, 4, 1, False))),
    ("c0n5", _passthrough("c0n4", 64, 8, SepConvOp(3, 1, False), SepConvOp(3, 1, True))),
), _OUTPUTS)
# _spaghettinet_edgetpu_m.
SPAGHETTINET_EDGETPU_M = SpaghettiNetSpec((5, 24), (
    ("n0", _passthrough("s0", 48, 2, IbnFusedGrouped(3, 8, 2, 3, False))),
    ("n1", _passthrough("n0", 64, 3, IbnFusedGrouped(3, 8, 2, 4, False),
                        IbnFusedGrouped(3, 4, 1, 4, True), IbnFusedGrouped(3, 4, 1, 4, True),
                        IbnFusedGrouped(3, 4, 1, 4, True))),
    ("n2", _passthrough("n1", 72, 4, IbnOp(3, 8, 2, False), IbnFusedGrouped(3, 8, 1, 4, True),
                        IbnOp(3, 8, 1, True), IbnOp(3, 8, 1, True))),
    ("n3", _passthrough("n2", 96, 5, IbnOp(3, 8, 2, False), IbnOp(3, 8, 1, True),
                        IbnOp(3, 8, 1, True), IbnOp(3, 4, 1, True))),
    ("n4", _passthrough("n3", 104, 6, IbnOp(3, 8, 2, False), IbnOp(3, 4, 1, True),
                        SepConvOp(5, 1, True), IbnOp(3, 4, 1, True))),
    ("n5", _passthrough("n4", 56, 7, SepConvOp(5, 2, False), SepConvOp(3, 1, True))),
    ("c0n0", _merge(("n3", "n4"), 152, 5, IbnOp(3, 8, 1, False), IbnOp(3, 4, 1, True),
                    IbnOp(3, 4, 1, True), IbnOp(3, 4, 1, True))),
    ("c0n1", _merge(("n2", "c0n0"), 120, 4, IbnOp(3, 8, 1, False), IbnOp(3, 4, 1, True),
                    IbnOp(3, 4, 1, True), IbnOp(3, 4, 1, True))),
    ("c0n2", _merge(("c0n1", "c0n0"), 168, 5, IbnOp(3, 4, 1, False), SepConvOp(3, 1, True))),
    ("c0n3", _merge(("n5", "c0n0"), 136, 6, SepConvOp(3, 1, False), SepConvOp(3, 1, True),
                    SepConvOp(3, 1, True))),
    ("c0n4", _merge(("n5", "c0n0"), 136, 7, IbnOp(3, 4, 1, False), SepConvOp(5, 1, True))),
    ("c0n5", _passthrough("c0n4", 64, 8, SepConvOp(3, 1, False), SepConvOp(3, 1, True))),
), _OUTPUTS)
# _spaghettinet_edgetpu_l.
SPAGHETTINET_EDGETPU_L = SpaghettiNetSpec((5, 24), (
    ("n0", _passthrough("s0", 48, 2, IbnFusedGrouped(3, 8, 2, 3, False))),
    ("n1", _passthrough("n0", 64, 3, IbnFusedGrouped(3, 8, 2, 4, False),
                        IbnFusedGrouped(3, 8, 1, 4, True), IbnFusedGrouped(3, 8, 1, 4, True),
                        IbnFusedGrouped(3, 4, 1, 4, True))),
    ("n2", _passthrough("n1", 80, 4, IbnOp(3, 8, 2, False), IbnOp(3, 8, 1, True),
                        IbnOp(3, 8, 1, True), IbnOp(3, 4, 1, True))),
    ("n3", _passthrough("n2", 104, 5, IbnOp(3, 8, 2, False), IbnOp(3, 8, 1, True),
                        IbnOp(3, 8, 1, True), IbnOp(3, 8, 1, True))),
    ("n4", _passthrough("n3", 88, 6, IbnOp(3, 8, 2, False), IbnOp(5, 4, 1, True),
                        IbnOp(3, 4, 1, True), IbnOp(3, 8, 1, True))),
    ("n5", _passthrough("n4", 56, 7, IbnOp(5, 4, 2, False), SepConvOp(5, 1, True))),
    ("c0n0", _merge(("n3", "n4"), 160, 5, IbnOp(3, 8, 1, False), IbnOp(3, 4, 1, True),
                    IbnOp(3, 4, 1, True), IbnOp(3, 4, 1, True))),
    ("c0n1", _merge(("n2", "c0n0"), 120, 4, IbnOp(3, 8, 1, False), IbnOp(3, 4, 1, True),
                    IbnOp(3, 4, 1, True), IbnOp(3, 8, 1, True))),
    ("c0n2", _merge(("c0n1", "c0n0"), 168, 5, IbnOp(3, 4, 1, False), IbnOp(3, 4, 1, True),
                    IbnOp(3, 4, 1, True), IbnOp(3, 4, 1, True))),
    ("c0n3", _merge(("n5", "c0n0"), 112, 6, IbnOp(3, 8, 1, False), IbnOp(3, 4, 1, True),
                    SepConvOp(3, 1, True))),
    ("c0n4", _merge(("n5", "c0n0"), 128, 7, IbnOp(3, 4, 1, False), IbnOp(3, 4, 1, True))),
    ("c0n5", _passthrough("c0n4", 64, 8, SepConvOp(5, 1, False), SepConvOp(5, 1, True))),
), _OUTPUTS)

#: ``spaghettinet_arch_name`` -> architecture (``lookup_spaghetti_arch``).
ARCHITECTURES = {
    "spaghettinet_edgetpu_s": SPAGHETTINET_EDGETPU_S,
    "spaghettinet_edgetpu_m": SPAGHETTINET_EDGETPU_M,
    "spaghettinet_edgetpu_l": SPAGHETTINET_EDGETPU_L,
}


class QuantizableConcat(layers.Concatenate):
    """Channel concatenation that holds the OD API's ``_quantizable_concat`` ranges.

    The OD API fake-quantizes each input of the grouped convs' concat to the range in the
    checkpoint variables ``concat/min`` and ``concat/max``: moving averages of the inputs'
    min and max (from 0 and 6), and the inputs are ReLU6 outputs, so the range is about
    [0, 6] and the fake-quant is mostly its 8-bit rounding. This layer keeps the two
    variables as weights (they load with the checkpoint) and concatenates its inputs
    unchanged: our PTQ calibrates the concat's range itself, and a FakeQuant op in the
    float model makes the TFLite quantizer fail.
    """

    def build(self, input_shape) -> None:
        """Create the ``min`` and ``max`` range weights, then build the concatenation."""
        for name, value in (("min", 0.0), ("max", 6.0)):
            self.add_weight(name=name, shape=(), trainable=False,
                            initializer=keras.initializers.Constant(value))
        super().build(input_shape)


def spaghettinet_features(inputs, spec: SpaghettiNetSpec, scope: str,
                          explicit_padding: bool = False) -> list:
    """Build SpaghettiNet ``spec`` on ``inputs`` and return its output nodes, finest first.

    Args:
        inputs: a Keras tensor (batch, height, width, 3).
        spec: the architecture (:data:`ARCHITECTURES`).
        scope: name prefix (``FeatureExtractor/spaghettinet_edgetpu_m`` in detection models).
        explicit_padding: the OD API's ``use_explicit_padding``: TF-slim fixed padding and
            'VALID' convs and pools for the stem and every stride > 1 layer or downsampling.
    """
    kernel, filters = spec.stem
    nodes = {STEM: conv_bn(inputs, filters, kernel, 2, f"{scope}/spaghetti_net/stem_node/stem",
                           explicit_padding=explicit_padding)}
    levels = {name: node.level for name, node in spec.nodes}
    for name, node in spec.nodes:
        if node.passthrough:
            x = nodes[node.inputs[0]]
        else:
            x = _merge_edges(nodes, levels, name, node, scope, explicit_padding)
        for index, op in enumerate(node.layers):
            layer_scope = f"{scope}/spaghetti_net/{name}_{index}"
            y = _layer(x, op, node.filters, layer_scope, explicit_padding)
            x = layers.Add(name=f"{layer_scope}/add")([y, x]) if op.residual else y
        nodes[name] = x
    return [nodes[name] for name in spec.outputs]


def spaghettinet_feature_maps(inputs, config: SsdConfig) -> list:
    """The five SSD feature maps of the ``ssd_spaghettinet`` extractor of an ``SsdConfig``.

    Raises:
        BadInputError: an unknown ``spaghettinet_arch_name``.
    """
    fe = config.feature_extractor
    spec = ARCHITECTURES.get(fe.spaghettinet_arch_name)
    if spec is None:
        raise BadInputError(
            f"spaghettinet_arch_name {fe.spaghettinet_arch_name!r} is not one of "
            f"{sorted(ARCHITECTURES)}"
        )
    return spaghettinet_features(inputs, spec, f"FeatureExtractor/{fe.spaghettinet_arch_name}",
                                 fe.use_explicit_padding)


def _merge_edges(nodes: dict, levels: dict[str, int], name: str, node: Node, scope: str,
                 explicit_padding: bool):
    """Resample every input to the node, crop to the finest input's edge, add, ReLU6."""
    edges = [_edge(nodes[source], levels[source], node, f"{scope}/edge_{source}_{name}",
                   explicit_padding) for source in node.inputs]
    finest = min(range(len(edges)), key=lambda i: levels[node.inputs[i]])
    height, width = edges[finest].shape[1:3]
    cropped = []
    for source, edge in zip(node.inputs, edges, strict=True):
        extra = (int(edge.shape[1]) - height, int(edge.shape[2]) - width)
        if any(extra):
            edge = layers.Cropping2D(((0, extra[0]), (0, extra[1])),
                                     name=f"{scope}/edge_{source}_{name}/crop")(edge)
        cropped.append(edge)
    x = layers.Add(name=f"{scope}/spaghetti_net/{name}/add")(cropped)
    return layers.ReLU(6.0, name=f"{scope}/spaghetti_net/{name}/Relu6")(x)


def _edge(x, level: int, node: Node, scope: str, explicit_padding: bool):
    """A resample edge from a node at ``level`` to ``node`` (``_spaghetti_edge``)."""
    if node.level < level:
        x = conv_bn(x, node.filters, 1, 1, f"{scope}/1x1_before_upsample", activation=False)
        return layers.UpSampling2D(2 ** (level - node.level), interpolation="nearest",
                                   name=f"{scope}/nearest_neighbor_upsampling")(x)
    if node.level > level:
        ratio = 2 ** (node.level - level)
        x, padding = padded(x, ratio + 1, f"{scope}/maxpool_downsampling", explicit_padding)
        x = layers.MaxPooling2D(ratio + 1, ratio, padding=padding,
                                name=f"{scope}/maxpool_downsampling")(x)
        return conv_bn(x, node.filters, 1, 1, f"{scope}/1x1_after_downsampling",
                       activation=False)
    return conv_bn(x, node.filters, 1, 1, f"{scope}/1x1_no_resampling", activation=False)


def _layer(x, op: Layer, filters: int, scope: str, explicit_padding: bool):
    """One node layer, before its residual add."""
    explicit = explicit_padding and op.stride > 1
    if isinstance(op, IbnOp):
        x = conv_bn(x, filters * op.expansion, 1, 1, f"{scope}/expansion")
        x = depthwise_bn(x, op.stride, f"{scope}/depthwise", op.kernel, explicit)
    elif isinstance(op, IbnFusedGrouped):
        x = _grouped_expansion(x, op, scope, explicit)
    else:
        x, padding = padded(x, op.kernel, f"{scope}/depthwise", explicit)
        x = layers.DepthwiseConv2D(op.kernel, op.stride, padding=padding, use_bias=True,
                                   name=f"{scope}/depthwise")(x)
        return conv_bn(x, filters, 1, 1, f"{scope}/pointwise")
    return conv_bn(x, filters, 1, 1, f"{scope}/projection", activation=False)


def _grouped_expansion(x, op: IbnFusedGrouped, scope: str, explicit: bool):
    """``groups`` channel slices, a k x k conv + BatchNorm + ReLU6 each, concatenated."""
    channels = int(x.shape[-1])
    if channels % op.groups:
        raise BadInputError(f"{scope}: {channels} channels do not split into {op.groups} groups")
    width = channels // op.groups
    slices = [
        conv_bn(tf.slice(x, [0, 0, 0, i * width], [-1, -1, -1, width]), width * op.expansion,
                op.kernel, op.stride, f"{scope}/slice_{i}", explicit_padding=explicit)
        for i in range(op.groups)
    ]
    return QuantizableConcat(name=f"{scope}/concat")(slices)
