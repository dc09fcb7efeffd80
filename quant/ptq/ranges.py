"""Activation ranges between calibration and quantization: read, choose, write back.

The calibrated float model stores each activation tensor's observed min / max. Plain
min / max lets one outlier widen the quantization step for every other value; MSE-optimal
clipping picks, per tensor, the range that minimises the 8-bit quantization error on
sampled activations (collected by running the calibrated model with all tensors kept).
``relu6`` gives every ReLU6 output its true range [0, 6]: with few calibration images, min /
max clips values that other images reach (measured on SSD detection, see the README).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tflite

from quant.modes import RangeMethod, parse
from quant.ptq.statistics import interpreter_keeping_tensors
from quant.tflite_edit import builtin_code, set_range

if TYPE_CHECKING:
    from tensorflow.lite.python.schema_py_generated import ModelT

_CLIP_FRACTIONS = np.linspace(0.3, 1.0, 36)


def calibrated_ranges(model: ModelT) -> dict[int, tuple[float, float]]:
    """Return {tensor index: (min, max)} of the main subgraph's calibrated activations."""
    ranges = {}
    for index, tensor in enumerate(model.subgraphs[0].tensors):
        quant = tensor.quantization
        if quant is not None and quant.min is not None and len(quant.min) == 1:
            ranges[index] = (float(quant.min[0]), float(quant.max[0]))
    return ranges


def set_ranges(model: ModelT, ranges: dict[int, tuple[float, float]]) -> None:
    """Replace the given tensors' calibrated (min, max) in ``model``."""
    tensors = model.subgraphs[0].tensors
    for index, (low, high) in ranges.items():
        set_range(tensors[index].quantization, low, high)


def relu6_outputs(model: ModelT) -> list[int]:
    """Return the tensors produced by ReLU6 (fused into an op, or a RELU6 op)."""
    found = []
    for op in model.subgraphs[0].operators:
        fused = getattr(op.builtinOptions, "fusedActivationFunction", None)
        if builtin_code(model, op) == tflite.BuiltinOperator.RELU6 \
                or fused == tflite.ActivationFunctionType.RELU6:
            found.extend(int(t) for t in op.outputs)
    return found


def _quant_error(values: np.ndarray, low: float, high: float) -> float:
    scale = max(high - low, 1e-8) / 255.0
    q = np.clip(np.round((values - low) / scale), 0, 255) * scale + low
    return float(np.mean((q - values) ** 2))


def mse_range(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Return the clipped (min, max) minimising 8-bit quantization MSE on ``values``.

    Ranges that include 0 shrink towards it; the candidate grid keeps the full range too,
    so the result is never worse than min / max on the sample.
    """
    best = (low, high)
    best_error = _quant_error(values, low, high)
    for fraction in _CLIP_FRACTIONS:
        candidate = (min(low * fraction, 0.0) if low < 0 else low, high * fraction)
        error = _quant_error(values, *candidate)
        if error < best_error:
            best, best_error = candidate, error
    return best


def sample_activations(model: ModelT, inputs: list[np.ndarray], tensors: list[int],
                       per_image: int = 4096, seed: int = 0) -> dict[int, np.ndarray]:
    """Run the float ``model`` on ``inputs`` and sample values of the given tensors."""
    interpreter = interpreter_keeping_tensors(model)
    input_index = interpreter.get_input_details()[0]["index"]
    rng = np.random.default_rng(seed)
    samples: dict[int, list[np.ndarray]] = {t: [] for t in tensors}
    for x in inputs:
        interpreter.set_tensor(input_index, x.astype(np.float32))
        interpreter.invoke()
        for t in tensors:
            flat = interpreter.get_tensor(t).reshape(-1)
            pick = rng.choice(flat.size, size=min(per_image, flat.size), replace=False)
            samples[t].append(flat[pick])
    return {t: np.concatenate(v) for t, v in samples.items()}


def choose_ranges(model: ModelT, inputs: list[np.ndarray], method: RangeMethod | str,
                  skip: set[int] | None = None) -> dict[int, tuple[float, float]]:
    """Return new (min, max) per activation tensor by ``method`` (``minmax`` changes nothing).

    Args:
        model: the calibrated float model.
        inputs: float model inputs to sample activations on.
        method: a :class:`quant.modes.RangeMethod`.
        skip: tensor indices to leave as calibrated (e.g. the model input).
    """
    method = parse(RangeMethod, method, "ranges")
    ranges = calibrated_ranges(model)
    if method == RangeMethod.MINMAX:
        return {}
    chosen = [t for t in ranges if t not in (skip or set())]
    if method == RangeMethod.RELU6:
        return {t: (0.0, 6.0) for t in relu6_outputs(model) if t in chosen}
    samples = sample_activations(model, inputs, chosen)
    return {t: mse_range(samples[t], *ranges[t]) for t in chosen}
