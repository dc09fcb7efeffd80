"""Hessian-aware weight rounding: choose int8 weights that keep each layer's output, not each
weight, closest to float.

Rounding every weight to its nearest int8 value is optimal per weight but not per layer:
the errors of one output channel add up over its inputs. With the second moment of a
layer's inputs ``H = E[x x^T]`` (measured on calibration images), the output error of a
weight error ``d`` is ``d^T H d``. Like AdaRound (Nagel et al. 2020) this learns the rounding
from data, but in closed form, as in GPTQ / OBQ (Frantar et al. 2022): weights are rounded
one input column at a time and the rounding error is pushed onto the columns not yet
rounded, weighted by the inverse of ``H``. No gradient descent, seconds for MobileNetV2.

The quantization grid is the converter's own: symmetric int8 in [-127, 127] with scale
``max|w| / 127`` per output channel (or per tensor). The rounded weights are written back as
float values on that grid, so the converter, which recomputes the scale from the weights,
reproduces them exactly; a channel whose largest weight would leave the grid keeps plain
rounding.
"""

from __future__ import annotations

import numpy as np

from quant.ptq.layers import DEPTHWISE_CONV_2D, FULLY_CONNECTED, WeightedLayer

_DAMP = 0.01  # fraction of the mean diagonal added to H (numerical stability)
_BLOCK = 128


def weight_scales(weights: np.ndarray, layer: WeightedLayer, per_tensor: bool) -> np.ndarray:
    """Return the converter's weight scales, broadcastable against ``weights``.

    Fully-connected layers always get one scale (per-channel dense weights are disabled for
    the Edge TPU).
    """
    if per_tensor or layer.kind == FULLY_CONNECTED:
        peak = np.abs(weights).max()
        return np.full([1] * weights.ndim, max(peak, 1e-12) / 127.0)
    axes = tuple(i for i in range(weights.ndim) if i != layer.channel_axis)
    return np.maximum(np.abs(weights).max(axis=axes, keepdims=True), 1e-12) / 127.0


def round_nearest(weights: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Return ``weights`` rounded to the nearest point of the int8 grid (as floats)."""
    return np.clip(np.round(weights / scales), -127, 127) * scales


def _rows(weights: np.ndarray, layer: WeightedLayer) -> np.ndarray:
    """Return weights as [channels, inputs] in the order of the input patches."""
    if layer.kind == DEPTHWISE_CONV_2D:
        return weights.reshape(-1, weights.shape[-1]).T
    return weights.reshape(weights.shape[0], -1)


def _unrows(rows: np.ndarray, shape: tuple[int, ...], layer: WeightedLayer) -> np.ndarray:
    if layer.kind == DEPTHWISE_CONV_2D:
        return rows.T.reshape(shape)
    return rows.reshape(shape)


def _inverse_factor(moment: np.ndarray) -> np.ndarray:
    """Return the upper Cholesky factor of ``inv(H + damping)`` (batched over leading dims)."""
    moment = np.array(moment, np.float64)
    index = np.arange(moment.shape[-1])
    diag = moment[..., index, index]
    diag[diag <= 0] = 1.0  # an input that is always zero: any rounding is as good
    diag += _DAMP * np.mean(diag, axis=-1, keepdims=True)
    moment[..., index, index] = diag
    inverse = np.linalg.inv(moment)
    return np.swapaxes(np.linalg.cholesky(inverse), -1, -2)


def _round_columns(rows: np.ndarray, scales: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """GPTQ column loop for one shared factor [d, d] (rows [r, d], scales [r, 1])."""
    work = rows.astype(np.float64).copy()
    result = np.zeros_like(work)
    width = work.shape[1]
    for start in range(0, width, _BLOCK):
        end = min(start + _BLOCK, width)
        errors = np.zeros((work.shape[0], end - start))
        for i in range(start, end):
            column = work[:, i]
            rounded = np.clip(np.round(column / scales[:, 0]), -127, 127) * scales[:, 0]
            result[:, i] = rounded
            error = (column - rounded) / factor[i, i]
            work[:, i + 1:end] -= np.outer(error, factor[i, i + 1:end])
            errors[:, i - start] = error
        work[:, end:] -= errors @ factor[start:end, end:]
    return result


def _round_depthwise(rows: np.ndarray, scales: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """GPTQ column loop with one factor per channel (rows [c, k], factor [c, k, k])."""
    work = rows.astype(np.float64).copy()
    result = np.zeros_like(work)
    for i in range(work.shape[1]):
        rounded = np.clip(np.round(work[:, i] / scales[:, 0]), -127, 127) * scales[:, 0]
        result[:, i] = rounded
        error = (work[:, i] - rounded) / factor[:, i, i]
        work[:, i + 1:] -= error[:, None] * factor[:, i, i + 1:]
    return result


def round_layer(weights: np.ndarray, second_moment: np.ndarray, layer: WeightedLayer,
                per_tensor: bool) -> tuple[np.ndarray, int]:
    """Return Hessian-aware rounded weights (float values on the int8 grid).

    Args:
        weights: the layer's float weights (TFLite layout).
        second_moment: the layer's input ``E[x x^T]`` (:mod:`quant.ptq.statistics`).
        layer: the layer.
        per_tensor: one weight scale for the tensor instead of one per channel.

    Returns:
        The rounded weights and how many channels kept plain rounding.
    """
    scales = weight_scales(weights, layer, per_tensor)
    rows = _rows(weights, layer)
    row_scales = np.broadcast_to(_rows(np.broadcast_to(scales, weights.shape), layer)[:, :1],
                                 (rows.shape[0], 1))
    factor = _inverse_factor(second_moment)
    if layer.kind == DEPTHWISE_CONV_2D:
        rounded = _round_depthwise(rows, row_scales, factor)
    else:
        rounded = _round_columns(rows, row_scales, factor)
    nearest = np.clip(np.round(rows / row_scales), -127, 127) * row_scales
    # The converter derives the scale from max|w|: keep it where the result would move it.
    if per_tensor or layer.kind == FULLY_CONNECTED:
        keeps = np.isclose(np.abs(rounded).max(), np.abs(nearest).max(), rtol=1e-6)
        fallback = np.full(rows.shape[0], not keeps)
    else:
        fallback = ~np.isclose(np.abs(rounded).max(axis=1), np.abs(nearest).max(axis=1),
                               rtol=1e-6)
    rounded[fallback] = nearest[fallback]
    return _unrows(rounded, weights.shape, layer).astype(np.float32), int(fallback.sum())
