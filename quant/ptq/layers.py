"""The weighted layers of a calibrated float model: find them, and cut their input patches.

Between calibration and quantization the model is a float flatbuffer with BatchNorm folded
into the convolutions. Weight edits (bias correction, Hessian-aware rounding) work here, on
the very tensors the quantizer will turn into int8 (read and written with
:func:`quant.tflite_edit.get_array` and :func:`quant.tflite_edit.set_array`).

Layouts (TFLite): CONV_2D weights [out, kh, kw, in]; DEPTHWISE_CONV_2D [1, kh, kw, out];
FULLY_CONNECTED [out, in].
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import tflite

from quant.tflite_edit import builtin_code

if TYPE_CHECKING:
    from tensorflow.lite.python.schema_py_generated import ModelT, TensorT

_WEIGHTED = (tflite.BuiltinOperator.CONV_2D, tflite.BuiltinOperator.DEPTHWISE_CONV_2D,
             tflite.BuiltinOperator.FULLY_CONNECTED)


@dataclasses.dataclass(frozen=True)
class WeightedLayer:
    """One convolution or fully-connected op with float weights and a float bias.

    Attributes:
        op_index: position of the op in the main subgraph.
        kind: ``CONV_2D``, ``DEPTHWISE_CONV_2D`` or ``FULLY_CONNECTED``
            (``tflite.BuiltinOperator``).
        input: the activation tensor it reads.
        output: the tensor it writes.
        weights: weight tensor index.
        bias: bias tensor index.
        stride: (y, x).
        dilation: (y, x).
        same_padding: TensorFlow ``SAME`` padding (else ``VALID``).
    """

    op_index: int
    kind: int
    input: int
    output: int
    weights: int
    bias: int
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    same_padding: bool = False

    @property
    def channel_axis(self) -> int:
        """Return the weights' output-channel axis."""
        return 3 if self.kind == tflite.BuiltinOperator.DEPTHWISE_CONV_2D else 0


def weighted_layers(model_object: ModelT) -> list[WeightedLayer]:
    """Return the convolutions and fully-connected ops with constant float weights and bias."""
    graph = model_object.subgraphs[0]
    found = []
    for index, op in enumerate(graph.operators):
        kind = builtin_code(model_object, op)
        if kind not in _WEIGHTED or len(op.inputs) < 3 or op.inputs[2] < 0:
            continue
        weights, bias = graph.tensors[op.inputs[1]], graph.tensors[op.inputs[2]]
        if weights.type != tflite.TensorType.FLOAT32 or bias.type != tflite.TensorType.FLOAT32 \
                or not _has_data(model_object, weights) or not _has_data(model_object, bias):
            continue
        depthwise = kind == tflite.BuiltinOperator.DEPTHWISE_CONV_2D
        if depthwise and weights.shape[3] != graph.tensors[op.inputs[0]].shape[3]:
            continue  # depth multiplier > 1: not handled by the weight edits
        options = op.builtinOptions
        extra = {}
        if kind != tflite.BuiltinOperator.FULLY_CONNECTED:
            extra = {"stride": (int(options.strideH), int(options.strideW)),
                     "dilation": (int(options.dilationHFactor), int(options.dilationWFactor)),
                     "same_padding": int(options.padding) == tflite.Padding.SAME}
        found.append(WeightedLayer(index, kind, int(op.inputs[0]), int(op.outputs[0]),
                                   int(op.inputs[1]), int(op.inputs[2]), **extra))
    return found


def _has_data(model_object: ModelT, tensor: TensorT) -> bool:
    data = model_object.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def patches(activation: np.ndarray, layer: WeightedLayer, kernel: tuple[int, int]) -> np.ndarray:
    """Return the im2col patches of one input [H, W, C] as [positions, kh, kw, C].

    Follows TensorFlow's SAME / VALID padding, stride and dilation, so that
    ``patches @ weights`` reproduces the convolution.
    """
    kh, kw = kernel
    (sy, sx), (dy, dx) = layer.stride, layer.dilation
    height, width, _ = activation.shape
    span_y, span_x = (kh - 1) * dy + 1, (kw - 1) * dx + 1
    if layer.same_padding:
        out_y, out_x = -(-height // sy), -(-width // sx)
        pad_y = max((out_y - 1) * sy + span_y - height, 0)
        pad_x = max((out_x - 1) * sx + span_x - width, 0)
        activation = np.pad(activation, ((pad_y // 2, pad_y - pad_y // 2),
                                         (pad_x // 2, pad_x - pad_x // 2), (0, 0)))
    else:
        out_y, out_x = (height - span_y) // sy + 1, (width - span_x) // sx + 1
    windows = np.lib.stride_tricks.sliding_window_view(activation, (span_y, span_x), axis=(0, 1))
    windows = windows[: (out_y - 1) * sy + 1: sy, : (out_x - 1) * sx + 1: sx, :, ::dy, ::dx]
    # windows: [out_y, out_x, C, kh, kw] -> [positions, kh, kw, C]
    return windows.transpose(0, 1, 3, 4, 2).reshape(out_y * out_x, kh, kw, -1)
