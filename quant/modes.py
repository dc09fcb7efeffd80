"""The quantizers' modes, defined once: the options, the command-line choices and the sidecar
all take their values from these enums.

Each is a ``StrEnum``: a member equals its string (``IoType.UINT8 == "uint8"``) and is
written to JSON as that string.
"""

from __future__ import annotations

import enum
from typing import TypeVar

from edgeq.errors import BadInputError

Mode = TypeVar("Mode", bound=enum.StrEnum)


class IoType(enum.StrEnum):
    """The quantized model's input and output type."""

    UINT8 = "uint8"  # what Coral's examples feed
    INT8 = "int8"
    FLOAT = "float"  # QUANTIZE / DEQUANTIZE at the edges, which run on the CPU


class Switch(enum.StrEnum):
    """A stage that is on, off, or decided from the model (``auto``)."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class RangeMethod(enum.StrEnum):
    """How activation ranges are chosen from the calibration statistics."""

    RELU6 = "relu6"  # min / max, ReLU6 outputs [0, 6]
    MINMAX = "minmax"
    MSE = "mse"


class Rounding(enum.StrEnum):
    """How float weights are rounded to int8."""

    HESSIAN = "hessian"  # learned from the layer inputs' statistics
    NEAREST = "nearest"  # the converter's


class TrainingDevice(enum.StrEnum):
    """Where quantization-aware fine-tuning runs."""

    AUTO = "auto"  # a GPU when TensorFlow sees one
    CPU = "cpu"
    GPU = "gpu"


class Engine(enum.StrEnum):
    """Where validation batches run."""

    LOCAL = "local"  # worker processes on this machine
    RAY = "ray"  # Ray actors on a local Ray or a cluster


class Strategy(enum.StrEnum):
    """How quantization-aware fine-tuning spreads over devices (``tf.distribute``)."""

    NONE = "none"  # one device (--device)
    MIRRORED = "mirrored"  # every local GPU (the logical CPUs without one)
    MULTIWORKER = "multiworker"  # every local GPU of each machine named in TF_CONFIG


class Method(enum.StrEnum):
    """Post-training quantization or quantization-aware fine-tuning."""

    PTQ = "ptq"
    QAT = "qat"


def choices(mode: type[enum.StrEnum]) -> list[str]:
    """Return the values of ``mode`` (an argparse ``choices``)."""
    return [member.value for member in mode]


def parse(mode: type[Mode], value: str | Mode, what: str) -> Mode:
    """Return the member of ``mode`` named by ``value``.

    Args:
        mode: the enum.
        value: a member or its string.
        what: the option's name for the error message (``--io``).

    Raises:
        BadInputError: ``value`` is not one of the enum's values.
    """
    try:
        return mode(value)
    except ValueError:
        raise BadInputError(f"{what} must be one of {', '.join(choices(mode))}, "
                            f"got {value!r}") from None
