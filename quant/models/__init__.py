"""Keras (tf-keras) builders for the zoo's architectures, registered by family name.

Importing this package imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable

from edgeq.errors import BadInputError
from quant.models.mobilenet_v1 import mobilenet_v1
from quant.models.mobilenet_v2 import mobilenet_v2

_CLASSIFIERS: dict[str, Callable] = {
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
}


def list_classifier_families() -> list[str]:
    """Return the families :func:`build_classifier` can build."""
    return sorted(_CLASSIFIERS)


def build_classifier(family: str, input_size: int, multiplier: float, num_classes: int = 1001):
    """Build a float classifier of ``family`` (random weights), batch 1, logits out.

    Raises:
        BadInputError: no builder for ``family``.
    """
    try:
        builder = _CLASSIFIERS[family]
    except KeyError:
        raise BadInputError(
            f"no builder for model family {family!r}; supported: {list_classifier_families()}"
        ) from None
    return builder(input_size, multiplier, num_classes)
