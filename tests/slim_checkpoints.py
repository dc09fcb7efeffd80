"""Write synthetic checkpoints with TF-slim variable names, for loader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq._tensorflow import tf
from quant.checkpoints import EMA_SUFFIX, checkpoint_variable_name


def slim_variables(model, seed: int = 0, std: float = 0.1) -> dict[str, np.ndarray]:
    """Return random values for every weight of ``model``, keyed by checkpoint name."""
    rng = np.random.default_rng(seed)
    variables = {}
    for layer in model.layers:
        for weight in layer.weights:
            name = checkpoint_variable_name(layer.name, weight.name)
            value = rng.normal(0, std, weight.shape).astype(np.float32)
            if "moving_variance" in name or "gamma" in name:
                value = np.abs(value) + 0.5
            variables[name] = value
    return variables


def write_checkpoint(prefix: Path, variables: dict[str, np.ndarray]) -> Path:
    """Write ``variables`` under exactly their names (as TF1 Saver does) and return the prefix."""
    names = sorted(variables)
    tf.raw_ops.SaveV2(
        prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
        tensors=[tf.constant(variables[n]) for n in names],
    )
    return prefix


def with_ema(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return a copy where trainable variables get EMA shadows and zeroed raw values."""
    result = {}
    for name, value in variables.items():
        if "moving_" in name:
            result[name] = value
        else:
            result[name] = np.zeros_like(value)
            result[name + EMA_SUFFIX] = value
    return result
