"""Edge TPU cost model: MACs, parameter bytes, on-chip cache use and an estimated latency.

From the ``.tflite`` graph alone: multiply-accumulates per op (convolutions, depthwise
convolutions, fully connected, transposed convolutions), the constant bytes each op reads,
and whether the parameters fit the Edge TPU's on-chip cache (about 8 MB of SRAM; compiler
reports show about 7 MiB usable for parameters once activations are placed) or must be
streamed over the host link on every inference.

Latency model (per inference, milliseconds)::

    t = t_invoke + MACs / mac_rate + ops * t_op                 (Edge TPU part)
        + (streamed bytes + input + output) / link              (host link)
        + cpu_elements * t_element                              (CPU part)

``mac_rate``, ``t_op`` and ``t_element`` are fitted on Coral's published USB 3 latencies
(``scripts/bench_edgetpu_cost.py --fit``); ``t_invoke`` and the link speeds are fixed, so
USB 2 and PCIe estimates change only the transfer terms. ``cpu_elements`` is the work of the
ops that stay on the CPU: anchors x classes for ``TFLite_Detection_PostProcess`` (its score
scan dominates), output elements for any other op; the host is the desktop CPU of Coral's
published measurements.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgetpu.tflite_model import DETECTION_POSTPROCESS, Model, Operator, read_model
from quant.errors import BadInputError

#: Parameter cache the compiler can use on the Edge TPU (bytes); the chip has about 8 MB of
#: SRAM, reports of edgetpu_compiler 16.0 show used + remaining of about 7 MiB.
ON_CHIP_CACHE_BYTES = 7 * 1024 * 1024

#: Effective host-link bandwidth (bytes per second): USB 3.0 bulk transfers (~320 MB/s),
#: USB 2.0 high speed (~35 MB/s), PCIe Gen2 x1 (~400 MB/s).
LINK_BYTES_PER_SECOND: dict[str, float] = {"usb3": 320e6, "usb2": 35e6, "pcie": 400e6}


@dataclass(frozen=True)
class Calibration:
    """Constants of the latency model (see the module docstring)."""

    invoke_ms: float
    macs_per_ms: float
    op_ms: float
    cpu_ms_per_element: float


@dataclass(frozen=True)
class OpCost:
    """Cost of one op: MACs and the bytes of constants it reads."""

    index: int
    opcode: str
    macs: int
    parameter_bytes: int


@dataclass(frozen=True)
class CostEstimate:
    """Totals and the latency estimate per interface (milliseconds)."""

    macs: int
    parameter_bytes: int
    cached_bytes: int
    streamed_bytes: int
    input_bytes: int
    output_bytes: int
    edgetpu_ops: int
    cpu_elements: int
    latency_ms: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready data."""
        return asdict(self)


def op_costs(model: Model) -> list[OpCost]:
    """Return the MACs and constant bytes of every op of ``model``."""
    return [OpCost(op.index, op.opcode, op_macs(model, op),
                   sum(t.nbytes for t in model.constant_inputs(op)))
            for op in model.operators]


def op_macs(model: Model, op: Operator) -> int:
    """Multiply-accumulates of one op (0 for ops without a weight tensor)."""
    if op.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"):
        return 0
    try:
        weights = model.tensors[op.inputs[1]].shape
        output = model.tensors[op.outputs[0]]
        if op.opcode == "CONV_2D":  # weights [out, kh, kw, in]
            return output.size * weights[1] * weights[2] * weights[3]
        if op.opcode == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, channels]
            return output.size * weights[1] * weights[2]
        if op.opcode == "FULLY_CONNECTED":  # weights [out, in]
            return output.size * weights[-1]
        source = model.tensors[op.inputs[2]]  # TRANSPOSE_CONV: output_shape, weights, input
        return source.size * weights[0] * weights[1] * weights[2]
    except IndexError as exc:  # too few inputs, or weights of too low a rank
        raise BadInputError(f"{model.path}: operator {op.index} ({op.opcode}) lacks the inputs "
                            "or the weight dimensions its kind needs; corrupt model, export it "
                            "again") from exc


def estimate(path: str | Path, calibration: Calibration | None = None,
             mapped: list[bool] | None = None) -> CostEstimate:
    """Estimate the Edge TPU cost of a (source) ``.tflite`` model.

    Args:
        path: the model file.
        calibration: latency constants (default: :data:`CALIBRATION`).
        mapped: which ops run on the Edge TPU (default: the analyzer's prediction).

    Raises:
        BadInputError: the file is missing, not a TFLite model, or already compiled (its
            MACs are hidden inside ``edgetpu-custom-op``).
    """
    model = read_model(path)
    if model.is_compiled:
        raise BadInputError(f"{model.path}: already compiled for the Edge TPU; estimate the "
                            "source .tflite instead (the compiled op hides its MACs)")
    if mapped is None:
        from edgetpu.analyze import analyze_model

        mapped = [op.mapped for op in analyze_model(path).ops]
    return estimate_model(model, calibration or CALIBRATION, mapped)


def estimate_model(model: Model, calibration: Calibration, mapped: list[bool]) -> CostEstimate:
    """Estimate from an already read source model and its per-op mapping; see :func:`estimate`.

    Args:
        model: the model (not a compiled one).
        calibration: latency constants.
        mapped: per operator, True when it runs on the Edge TPU.
    """
    costs = [c for c, on_tpu in zip(op_costs(model), mapped, strict=True) if on_tpu]
    macs = sum(c.macs for c in costs)
    params = sum(c.parameter_bytes for c in costs)
    cached = min(params, ON_CHIP_CACHE_BYTES)
    streamed = params - cached
    in_bytes, out_bytes = _boundary_bytes(model, mapped)
    work = cpu_elements(model, mapped)
    compute = (calibration.invoke_ms + macs / calibration.macs_per_ms
               + len(costs) * calibration.op_ms + work * calibration.cpu_ms_per_element)
    latency = {link: round(compute + (streamed + in_bytes + out_bytes) / rate * 1e3, 3)
               for link, rate in LINK_BYTES_PER_SECOND.items()}
    return CostEstimate(macs, params, cached, streamed, in_bytes, out_bytes, len(costs), work,
                        latency)


def features(path: str | Path) -> tuple[int, int, float, int]:
    """Return what the fitted constants multiply: (MACs, Edge TPU ops, USB 3 link ms, CPU work).

    Raises:
        BadInputError: the file is missing or not a TFLite model.
    """
    free = Calibration(invoke_ms=0.0, macs_per_ms=float("inf"), op_ms=0.0,
                       cpu_ms_per_element=0.0)
    est = estimate(path, free)
    return est.macs, est.edgetpu_ops, est.latency_ms["usb3"], est.cpu_elements


def cpu_elements(model: Model, mapped: list[bool]) -> int:
    """Work of the ops that run on the CPU (see the module docstring)."""
    total = 0
    for op, on_tpu in zip(model.operators, mapped, strict=True):
        if on_tpu:
            continue
        if op.opcode == DETECTION_POSTPROCESS and len(op.inputs) > 1:
            total += model.tensors[op.inputs[1]].size  # class scores [1, anchors, classes]
        else:
            total += sum(model.tensors[t].size for t in op.outputs)
    return total


def _boundary_bytes(model: Model, mapped: list[bool]) -> tuple[int, int]:
    """Bytes sent to and read back from the Edge TPU part (8-bit tensors at its boundary)."""
    tpu_ops = [op for op, on_tpu in zip(model.operators, mapped, strict=True) if on_tpu]
    produced = {t for op in tpu_ops for t in op.outputs}
    consumed_on_cpu = {t for op, on_tpu in zip(model.operators, mapped, strict=True)
                       if not on_tpu for t in op.inputs}
    sent = {t for op in tpu_ops for t in op.inputs
            if t >= 0 and t not in produced and not model.tensors[t].is_constant}
    returned = {t for t in produced if t in consumed_on_cpu or t in model.outputs}
    return (sum(model.tensors[t].size for t in sent),
            sum(model.tensors[t].size for t in returned))


#: ``invoke_ms`` is fixed (one USB 3 bulk round trip of the driver, about 0.1 ms); the other
#: three are fitted by ``scripts/bench_edgetpu_cost.py --fit`` (minimax relative error over
#: MobileNet v1 / v2 1.0/224 and SSD MobileNet v1 / v2 300x300, Coral's published USB 3 ms).
CALIBRATION = Calibration(invoke_ms=0.1, macs_per_ms=6.058e8, op_ms=0.025,
                          cpu_ms_per_element=9e-6)
