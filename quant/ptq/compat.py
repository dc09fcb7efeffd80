"""Edge TPU safety of a quantized model, judged by the offline analyzer (:mod:`edgetpu.analyze`).

Every op must map to the Edge TPU except, by design, a trailing ``TFLite_Detection_PostProcess``
and the ops the caller allows (:func:`cpu_ops`: the QUANTIZE / DEQUANTIZE of ``--io float``,
the DEQUANTIZE of exact anchors).
"""

from __future__ import annotations

from edgeq.errors import BadInputError, first_of
from edgetpu.tflite_model import DETECTION_POSTPROCESS


def cpu_ops(io_type: str, exact_anchors: bool = False) -> set[str]:
    """Return the op codes expected on the CPU for this I/O type (besides post-processing).

    Float I/O converts at both ends: a float-to-int8 QUANTIZE before the Edge TPU part and a
    DEQUANTIZE after it. Exact anchors add a DEQUANTIZE of the box encodings.
    """
    ops = {"QUANTIZE", "DEQUANTIZE"} if io_type == "float" else set()
    return ops | ({"DEQUANTIZE"} if exact_anchors else set())


def edgetpu_problems(model: bytes, allowed_on_cpu: set[str] | None = None) -> list[str]:
    """Return why parts of ``model`` would not run on the Edge TPU (empty when all map).

    Args:
        model: the flatbuffer.
        allowed_on_cpu: op codes accepted on the CPU besides the detection post-processing.
    """
    allowed = {DETECTION_POSTPROCESS} | (allowed_on_cpu or set())
    from edgetpu.analyze import analyze_model

    analysis = analyze_model(model)
    problems = []
    for op in analysis.ops:
        if op.mapped or op.opcode in allowed:
            continue
        problems.append(f"{op.opcode} v{op.version} (op {op.index}): {op.reason or op.status}")
    return problems


def raise_on_problems(problems: list[str], name: str) -> None:
    """Refuse a model that would not map completely, naming the first problems.

    Raises:
        BadInputError: with the ops and reasons, and what to do.
    """
    if problems:
        raise BadInputError(
            f"{name}: the int8 model would not run entirely on the Edge TPU: "
            f"{first_of(problems, 3, '; ')}. "
            "Check the ops with edgetpu-check; replace unsupported layers in the float model"
        )
