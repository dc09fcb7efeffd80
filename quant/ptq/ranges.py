"""Activation ranges between calibration and quantization: read, choose, write back.

The calibrated float model stores each activation tensor's observed min / max. Plain
min / max lets one outlier widen the quantization step for every other value; MSE-optimal
clipping picks, per tensor, the range that minimises the 8-bit quantization error on
sampled activations (collected by running the calibrated model with all tensors kept).
``relu6`` gives every ReLU6 output its true range [0, 6]: with few calibration images, min /
max clips values that other images reach (measured on SSD detection, see the README).
"""

from __future__ import annotations

import numpy as np

from quant.modes import RangeMethod, parse

_RELU6 = 3  # ActivationFunctionType.RELU6
_RELU6_OP = 21  # BuiltinOperator.RELU6
_CLIP_FRACTIONS = np.linspace(0.3, 1.0, 36)


def read_model(model: bytes):
    """Return the mutable object model of a flatbuffer (TensorFlow's flatbuffer_utils)."""
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(model))


def write_model(model_object) -> bytes:
    """Serialise an object model back to flatbuffer bytes."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model_object))


def calibrated_ranges(model: bytes) -> dict[int, tuple[float, float]]:
    """Return {tensor index: (min, max)} of the main subgraph's calibrated activations."""
    graph = read_model(model).subgraphs[0]
    ranges = {}
    for index, tensor in enumerate(graph.tensors):
        quant = tensor.quantization
        if quant is not None and quant.min is not None and len(quant.min) == 1:
            ranges[index] = (float(quant.min[0]), float(quant.max[0]))
    return ranges


def with_ranges(model: bytes, ranges: dict[int, tuple[float, float]]) -> bytes:
    """Return ``model`` with the given tensors' calibrated (min, max) replaced."""
    model_object = read_model(model)
    tensors = model_object.subgraphs[0].tensors
    for index, (low, high) in ranges.items():
        tensors[index].quantization.min = [float(low)]
        tensors[index].quantization.max = [float(high)]
    return write_model(model_object)


def relu6_outputs(model: bytes) -> list[int]:
    """Return the tensors produced by ReLU6 (fused into an op, or a RELU6 op)."""
    model_object = read_model(model)
    graph = model_object.subgraphs[0]
    found = []
    for op in graph.operators:
        code = model_object.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        fused = getattr(op.builtinOptions, "fusedActivationFunction", None)
        if builtin == _RELU6_OP or fused == _RELU6:
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


def sample_activations(model: bytes, inputs: list[np.ndarray], tensors: list[int],
                       per_image: int = 4096, seed: int = 0) -> dict[int, np.ndarray]:
    """Run the float ``model`` on ``inputs`` and sample values of the given tensors."""
    import tempfile
    from pathlib import Path

    from edgetpu.runtime import make_interpreter

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "calibrated.tflite"
        path.write_bytes(model)
        interpreter = make_interpreter(path, preserve_all_tensors=True)
        interpreter.allocate_tensors()
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


def choose_ranges(model: bytes, inputs: list[np.ndarray], method: RangeMethod | str,
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
