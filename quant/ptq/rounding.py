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
rounding. The grid's range is searched as well: clipping the weights to a fraction of their
peak shrinks the step, and the fraction with the least output error is kept.
"""

from __future__ import annotations

import numpy as np
import tflite

from quant.ptq.layers import WeightedLayer

_DAMP = 0.01  # fraction of the mean diagonal added to H (numerical stability)
_BLOCK = 128
#: Fractions of the weight peak tried as the grid's range (1.0 = the converter's own).
CLIP_RATIOS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def weight_scales(weights: np.ndarray, layer: WeightedLayer, per_tensor: bool) -> np.ndarray:
    """Return the converter's weight scales, broadcastable against ``weights``.

    Fully-connected layers always get one scale (per-channel dense weights are disabled for
    the Edge TPU).
    """
    if per_tensor or layer.kind == tflite.BuiltinOperator.FULLY_CONNECTED:
        peak = np.abs(weights).max()
        return np.full([1] * weights.ndim, max(peak, 1e-12) / 127.0)
    axes = tuple(i for i in range(weights.ndim) if i != layer.channel_axis)
    return np.maximum(np.abs(weights).max(axis=axes, keepdims=True), 1e-12) / 127.0


def round_nearest(weights: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Return ``weights`` rounded to the nearest point of the int8 grid (as floats)."""
    return np.clip(np.round(weights / scales), -127, 127) * scales


def _rows(weights: np.ndarray, layer: WeightedLayer) -> np.ndarray:
    """Return weights as [channels, inputs] in the order of the input patches."""
    if layer.kind == tflite.BuiltinOperator.DEPTHWISE_CONV_2D:
        return weights.reshape(-1, weights.shape[-1]).T
    return weights.reshape(weights.shape[0], -1)


def _unrows(rows: np.ndarray, shape: tuple[int, ...], layer: WeightedLayer) -> np.ndarray:
    if layer.kind == tflite.BuiltinOperator.DEPTHWISE_CONV_2D:
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


def _output_error(rows: np.ndarray, rounded: np.ndarray, moment: np.ndarray,
                  depthwise: bool) -> np.ndarray:
    """Return each row's output error ``d H d^T`` (``d`` = rounded - float)."""
    delta = rounded - rows
    if depthwise:
        return np.einsum("ck,ckl,cl->c", delta, moment, delta)
    return ((delta @ moment) * delta).sum(axis=1)


def round_layer(weights: np.ndarray, second_moment: np.ndarray, layer: WeightedLayer,
                per_tensor: bool) -> tuple[np.ndarray, int]:
    """Return Hessian-aware rounded weights (float values on the int8 grid).

    The grid's range is chosen too: the weights are clipped to a fraction of their peak
    (:data:`CLIP_RATIOS`; per channel, or for the whole tensor when it has one scale), which
    the converter then reads back as the scale, and the fraction with the least output error
    ``d H d^T`` wins. Clipping matters with one scale per tensor, where the largest channel
    sets the step for all the others.

    Args:
        weights: the layer's float weights (TFLite layout).
        second_moment: the layer's input ``E[x x^T]`` (:mod:`quant.ptq.statistics`).
        layer: the layer.
        per_tensor: one weight scale for the tensor instead of one per channel.

    Returns:
        The rounded weights and how many channels kept plain rounding.
    """
    depthwise = layer.kind == tflite.BuiltinOperator.DEPTHWISE_CONV_2D
    one_scale = per_tensor or layer.kind == tflite.BuiltinOperator.FULLY_CONNECTED
    rows = _rows(weights, layer).astype(np.float64)
    count = rows.shape[0]
    peaks = np.abs(rows).max(axis=1, keepdims=True)
    if one_scale:
        peaks = np.full_like(peaks, peaks.max())
    peaks = np.maximum(peaks, 1e-12)
    # Every clip ratio at once: the column loop costs the same for more rows.
    limits = np.concatenate([peaks * ratio for ratio in CLIP_RATIOS])
    clipped = np.clip(np.tile(rows, (len(CLIP_RATIOS), 1)), -limits, limits)
    scales = limits / 127.0
    factor = _inverse_factor(second_moment)
    if depthwise:
        rounded = _round_depthwise(clipped, scales, np.tile(factor, (len(CLIP_RATIOS), 1, 1)))
    else:
        rounded = _round_columns(clipped, scales, factor)
    nearest = np.clip(np.round(clipped / scales), -127, 127) * scales
    # The converter derives the scale from max|w|: keep it where the result would move it.
    peak_rounded, peak_nearest = np.abs(rounded).max(axis=1), np.abs(nearest).max(axis=1)
    if one_scale:  # one peak per ratio
        peak_rounded, peak_nearest = (np.repeat(p.reshape(len(CLIP_RATIOS), count).max(axis=1),
                                                count) for p in (peak_rounded, peak_nearest))
    moved = ~np.isclose(peak_rounded, peak_nearest, rtol=1e-6)
    rounded[moved] = nearest[moved]
    error = _output_error(np.tile(rows, (len(CLIP_RATIOS), 1)), rounded,
                          np.tile(second_moment, (len(CLIP_RATIOS), 1, 1)) if depthwise
                          else second_moment, depthwise).reshape(len(CLIP_RATIOS), count)
    if one_scale:
        error = np.repeat(error.sum(axis=1, keepdims=True), count, axis=1)
    choice = error.argmin(axis=0) * count + np.arange(count)
    best = rounded[choice]
    return _unrows(best, weights.shape, layer).astype(np.float32), int(moved[choice].sum())
