"""TF-slim / Object Detection API checkpoints onto Keras models built by :mod:`quant.models`.

Keras layer names are checkpoint scopes (see :mod:`quant.models._layers`), so every Keras
weight maps to exactly one checkpoint variable. ``ExponentialMovingAverage`` shadows are
preferred when the checkpoint has them (the official checkpoints were evaluated with them).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from edgeq.errors import BadInputError

EMA_SUFFIX = "/ExponentialMovingAverage"
# Keras weight short name -> TF-slim variable short name.
_SLIM_NAMES = {"kernel": "weights", "depthwise_kernel": "depthwise_weights",
               "pointwise_kernel": "pointwise_weights", "bias": "biases"}


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        checkpoint: the checkpoint prefix that was read.
        loaded: number of variables copied into the model.
        from_ema: how many of them came from ExponentialMovingAverage shadows.
        unused: model-scope checkpoint variables that no layer took (optimizer slots and
            EMA shadows excluded).
    """

    checkpoint: str
    loaded: int
    from_ema: int
    unused: tuple[str, ...]


def checkpoint_variable_name(layer_name: str, weight_name: str) -> str:
    """Return the checkpoint variable for a Keras weight (``.../kernel:0`` -> ``.../weights``)."""
    short = weight_name.split("/")[-1].split(":")[0]
    return f"{layer_name}/{_SLIM_NAMES.get(short, short)}"


def open_checkpoint(prefix: str | Path):
    """Open a checkpoint for reading, with a clear error when it is not one.

    Raises:
        BadInputError: the prefix has no readable ``.index`` / ``.data`` files.
    """
    from edgeq._tensorflow import tf

    try:
        return tf.train.load_checkpoint(str(prefix))
    except (ValueError, tf.errors.OpError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(
            f"{prefix}: not a readable TensorFlow checkpoint ({first_line}); pass the prefix "
            "of the .index/.data files, their folder, or the .tgz archive"
        ) from exc


def load_weights(model, prefix: str | Path, scope: str | None = None) -> LoadReport:
    """Copy checkpoint variables into every weighted layer of ``model``.

    Args:
        model: a Keras model whose layer names are checkpoint scopes.
        prefix: checkpoint prefix (``.../model.ckpt``).
        scope: top-level scope whose unused variables are reported (default: the first
            component of the first weighted layer's name).

    Returns:
        A :class:`LoadReport`.

    Raises:
        BadInputError: a variable is missing or has another shape, named in the message.
    """
    reader = open_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    taken: set[str] = set()
    from_ema = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        values = []
        for weight in layer.weights:
            name = checkpoint_variable_name(layer.name, weight.name)
            source = name + EMA_SUFFIX if name + EMA_SUFFIX in shapes else name
            if name not in shapes:
                raise BadInputError(
                    f"{prefix}: checkpoint has no variable {name} (needed by layer "
                    f"{layer.name}); is it a checkpoint of this model and variant?"
                )
            if tuple(shapes[source]) != tuple(weight.shape):
                raise BadInputError(
                    f"{prefix}: variable {source} has shape {tuple(shapes[source])} but the "
                    f"model expects {tuple(weight.shape)}; the checkpoint is of another "
                    "variant (depth multiplier, classes or architecture)"
                )
            values.append(np.asarray(reader.get_tensor(source), dtype=np.float32))
            taken.add(name)
            from_ema += source != name
        layer.set_weights(values)
    if scope is None:
        first = next((layer.name for layer in model.layers if layer.weights), "")
        scope = first.split("/")[0]
    unused = tuple(sorted(
        name for name in shapes
        if name.startswith(scope + "/") and name not in taken
        and not name.endswith(EMA_SUFFIX) and "/RMSProp" not in name
        and "/Momentum" not in name and "/Adam" not in name
    ))
    return LoadReport(str(prefix), len(taken), from_ema, unused)
