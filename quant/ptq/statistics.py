"""Input statistics of every weighted layer, measured by running the calibrated float model.

For each layer: the mean input patch (what bias correction needs) and, on request, the
second moment of the input patches ``H = E[x x^T]`` (what Hessian-aware rounding needs):
one matrix per layer for convolutions and fully-connected ops, one small matrix per channel
for depthwise convolutions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import tflite

from quant.ptq.layers import WeightedLayer, patches
from quant.tflite_edit import get_array, write_model

if TYPE_CHECKING:
    from tensorflow.lite.python.schema_py_generated import ModelT

_MAX_POSITIONS = 1024  # input positions sampled per image for the second moment


@dataclasses.dataclass
class LayerStats:
    """Accumulated input statistics of one layer.

    Attributes:
        mean: mean input patch, shaped like one output channel's weights
            ([kh, kw, in] for CONV_2D, [kh, kw, channels] for depthwise, [in] for dense).
        second_moment: ``E[x x^T]`` over flattened patches ([d, d]), or per channel for
            depthwise ([channels, kh*kw, kh*kw]); None when not collected.
        count: positions summed into ``mean``.
        moment_count: positions summed into ``second_moment``.
    """

    mean: np.ndarray
    second_moment: np.ndarray | None = None
    count: int = 0
    moment_count: int = 0


def _layer_patches(activation: np.ndarray, layer: WeightedLayer, weights_shape) -> np.ndarray:
    if layer.kind == tflite.BuiltinOperator.FULLY_CONNECTED:
        return activation.reshape(-1, weights_shape[1])
    kernel = (weights_shape[1], weights_shape[2])
    return patches(activation.reshape(activation.shape[-3:]), layer, kernel)


def interpreter_keeping_tensors(model: ModelT) -> Any:
    """Return an allocated interpreter of ``model`` whose every tensor stays readable."""
    from edgetpu.runtime import make_interpreter

    return make_interpreter(write_model(model), preserve_all_tensors=True)


def collect(model: ModelT, inputs: Iterable[np.ndarray], layers: list[WeightedLayer],
            second_moment: bool = False, seed: int = 0) -> list[LayerStats]:
    """Run the float ``model`` on ``inputs`` and accumulate each layer's input statistics.

    Args:
        model: the calibrated float model.
        inputs: float model inputs [1, H, W, C].
        layers: the layers to measure (from :func:`quant.ptq.layers.weighted_layers`).
        second_moment: also accumulate ``E[x x^T]`` (sampled positions).
        seed: position sampling seed.

    Returns:
        One :class:`LayerStats` per layer, in order.
    """
    shapes = [get_array(model, layer.weights).shape for layer in layers]
    interpreter = interpreter_keeping_tensors(model)
    input_index = interpreter.get_input_details()[0]["index"]
    rng = np.random.default_rng(seed)
    stats: list[LayerStats | None] = [None] * len(layers)
    for x in inputs:
        interpreter.set_tensor(input_index, np.asarray(x, np.float32))
        interpreter.invoke()
        for i, (layer, shape) in enumerate(zip(layers, shapes, strict=True)):
            cols = _layer_patches(interpreter.get_tensor(layer.input), layer, shape)
            stats[i] = _accumulate(stats[i], cols, layer, second_moment, rng)
    return [_finish(s) for s in stats]


def _accumulate(stats: LayerStats | None, cols: np.ndarray, layer: WeightedLayer,
                second_moment: bool, rng) -> LayerStats:
    cols = cols.astype(np.float64)
    if stats is None:
        size = cols.shape[1] if layer.kind == tflite.BuiltinOperator.FULLY_CONNECTED else None
        stats = LayerStats(mean=np.zeros(cols.shape[1:] if size is None else (size,)))
    stats.mean += cols.sum(axis=0)
    stats.count += cols.shape[0]
    if second_moment:
        if cols.shape[0] > _MAX_POSITIONS:
            cols = cols[rng.choice(cols.shape[0], _MAX_POSITIONS, replace=False)]
        if layer.kind == tflite.BuiltinOperator.DEPTHWISE_CONV_2D:
            flat = cols.reshape(cols.shape[0], -1, cols.shape[-1])  # [p, k, c]
            moment = np.einsum("pkc,plc->ckl", flat, flat)
        else:
            flat = cols.reshape(cols.shape[0], -1)
            moment = flat.T @ flat
        stats.second_moment = moment if stats.second_moment is None \
            else stats.second_moment + moment
        stats.moment_count += cols.shape[0]
    return stats


def _finish(stats: LayerStats | None) -> LayerStats:
    if stats is None:
        raise ValueError("no calibration inputs to measure the layers on")
    stats.mean /= max(stats.count, 1)
    if stats.second_moment is not None:
        stats.second_moment /= max(stats.moment_count, 1)
    return stats
