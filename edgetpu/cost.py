"""Edge TPU cost model: MACs, parameter bytes, on-chip cache use and an estimated latency.

From the ``.tflite`` graph alone (:class:`GraphFeatures`): multiply-accumulates of the ops on
the Edge TPU, split into dense ones (convolutions, fully connected, transposed convolutions)
and per-channel ones (depthwise convolutions, and pooling windows: a max or average pool reads
a k x k window of one channel per output, as a depthwise convolution does), which use the
Edge TPU's systolic array very differently; the number of Edge TPU ops; the elements
concatenations must copy; the constant bytes the ops read and whether those fit the on-chip
parameter cache (about 7 MiB usable of 8 MB of SRAM, less what the largest op's activations
occupy) or are streamed over the host link on every inference; the bytes crossing the Edge
TPU boundary; and the work left on the host CPU: the MACs and output elements of ordinary CPU
ops, and anchors x classes for ``TFLite_Detection_PostProcess``, whose score scan dominates.

Latency per device (milliseconds) is linear in those features (:data:`FEATURES`)::

    t = invoke + array_macs * a + channel_macs * b + ops * c + concat_copy_elements * k
        + streamed_bytes * d + boundary_bytes * e + cpu_macs * f + cpu_elements * g
        + postprocess_elements * h

``array_macs`` are the dense MACs as the 64 x 64 multiply-accumulate array runs them (input
depth and output channels padded to 64, a transposed convolution over its zero-upsampled
input: :func:`array_macs`); ``channel_macs`` are the depthwise MACs plus the pooling windows
read (:func:`pool_macs`). ``concat_copy_elements`` are the elements of concatenation inputs
that are read more than once (:func:`concat_copy_elements`): a tensor only the concatenation
reads can be written in place into the concatenated one, a shared one (a U-Net skip
connection, DenseNet's growing feature map) is copied. The compiler treats such tensors apart:
the scratch memory of the compiled YOLOv5n in ``../shared/data/coral_wild`` (the executable's
``scratch_size_bytes``, 409,600 B) is exactly its largest one, 80 x 80 x 64, made 94 ops
before the concatenation that reads it.

The constants are non-negative, per device (``usb3``, ``usb2``, ``pcie``, ``devboard``),
fitted on Coral's published latencies, together with the same hosts' published CPU-only
timings (which pin the CPU constants), by ``scripts/bench_edgetpu_cost.py --fit``; the table
it prints is :data:`CALIBRATION`. ``devboard`` is the Dev Board (i.MX 8M host, Edge TPU on
PCIe); ``usb2`` is what Coral measured on USB 2 hosts (Dev Board Mini, Raspberry Pi 3);
``pcie`` is an M.2 / Mini PCIe card in a desktop: the USB 3 desktop's constants with the Dev
Board's PCIe link constants (no published figure measures it alone).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edgeq.errors import BadInputError
from edgetpu.tflite_model import DETECTION_POSTPROCESS, Model, Operator, read_model

#: Parameter cache the compiler can use on the Edge TPU (bytes); the chip has about 8 MB of
#: SRAM, reports of edgetpu_compiler 16.0 show used + remaining of about 7 MiB.
ON_CHIP_CACHE_BYTES = 7 * 1024 * 1024

#: All of the Edge TPU's on-chip SRAM: parameters and the activations of the op being run
#: share it, so large activations leave less room for cached parameters (U-Net MobileNet v2
#: at 256x256 streams part of its 6.5 MB of parameters; at 128x128 it does not).
SRAM_BYTES = 8 * 1024 * 1024

#: The devices a latency is estimated for.
DEVICES = ("usb3", "usb2", "pcie", "devboard")
#: The features, in the order of :meth:`GraphFeatures.vector` and of the fitted constants.
FEATURES = ("invoke", "array_macs", "channel_macs", "edgetpu_ops", "concat_copy_elements",
            "streamed_bytes", "boundary_bytes", "cpu_macs", "cpu_elements",
            "postprocess_elements")
_DENSE = ("CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
#: Side of the Edge TPU's multiply-accumulate array: 4 TOPS at 500 MHz is 4,096 MACs per cycle,
#: a 64 x 64 array; a dense op's input depth (kernel taps x input channels) and output
#: channels occupy it in tiles of 64, so 32 output channels cost as much as 64.
ARRAY_SIDE = 64


@dataclass(frozen=True)
class GraphFeatures:
    """What the latency of a model depends on, read from its graph and its mapping.

    Fields added after a table of features was stored (``pool_macs``,
    ``concat_copy_elements``) have a default, so :meth:`from_dict` reads the older table.
    """

    dense_macs: int
    array_macs: int
    depthwise_macs: int
    edgetpu_ops: int
    parameter_bytes: int
    cached_bytes: int
    streamed_bytes: int
    activation_bytes: int
    input_bytes: int
    output_bytes: int
    cpu_macs: int
    cpu_elements: int
    postprocess_elements: int
    pool_macs: int = 0
    concat_copy_elements: int = 0

    @property
    def macs(self) -> int:
        """All multiply-accumulates on the Edge TPU."""
        return self.dense_macs + self.depthwise_macs

    def vector(self) -> list[float]:
        """The values :data:`FEATURES` names, in that order (invoke: 1 with Edge TPU ops)."""
        return [float(self.edgetpu_ops > 0), float(self.array_macs),
                float(self.depthwise_macs + self.pool_macs), float(self.edgetpu_ops),
                float(self.concat_copy_elements), float(self.streamed_bytes),
                float(self.input_bytes + self.output_bytes),
                float(self.cpu_macs), float(self.cpu_elements), float(self.postprocess_elements)]

    def to_dict(self) -> dict[str, int]:
        """Return JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphFeatures:
        """Inverse of :meth:`to_dict`; a field with a default may be missing from ``data``."""
        return cls(**{item.name: int(data[item.name]) for item in fields(cls)
                      if item.name in data or item.default is MISSING})


@dataclass(frozen=True)
class OpCost:
    """Cost of one op: MACs and the bytes of constants it reads."""

    index: int
    opcode: str
    macs: int
    parameter_bytes: int


@dataclass(frozen=True)
class CostEstimate:
    """A model's latency features and the latency estimate per device (milliseconds)."""

    features: GraphFeatures
    latency_ms: dict[str, float]

    @property
    def macs(self) -> int:
        """All multiply-accumulates on the Edge TPU."""
        return self.features.macs

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready data: the features, ``macs`` and ``latency_ms``."""
        return {**self.features.to_dict(), "macs": self.macs, "latency_ms": self.latency_ms}


def op_costs(model: Model) -> list[OpCost]:
    """Return the MACs and constant bytes of every op of ``model``."""
    return [OpCost(op.index, op.opcode, op_macs(model, op),
                   sum(t.nbytes for t in model.constant_inputs(op)))
            for op in model.operators]


def op_macs(model: Model, op: Operator) -> int:
    """Multiply-accumulates of one op (0 for ops without a weight tensor)."""
    if op.opcode not in (*_DENSE, "DEPTHWISE_CONV_2D"):
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


def graph_features(model: Model, mapped: list[bool]) -> GraphFeatures:
    """Return the latency features of a source model given which ops run on the Edge TPU."""
    costs = op_costs(model)
    on_tpu = [(op, c) for op, c, m in zip(model.operators, costs, mapped, strict=True) if m]
    dense = sum(c.macs for op, c in on_tpu if op.opcode in _DENSE)
    array = sum(array_macs(model, op) for op, _ in on_tpu if op.opcode in _DENSE)
    depthwise = sum(c.macs for op, c in on_tpu if op.opcode == "DEPTHWISE_CONV_2D")
    params = sum(c.parameter_bytes for _, c in on_tpu)
    activations = peak_activation_bytes(model, mapped)
    cached = min(params, ON_CHIP_CACHE_BYTES, max(SRAM_BYTES - activations, 0))
    in_bytes, out_bytes = _boundary_bytes(model, mapped)
    on_cpu = [(op, c) for op, c, m in zip(model.operators, costs, mapped, strict=True)
              if not m]
    postprocess = sum(_scores(model, op) for op, _ in on_cpu if op.opcode == DETECTION_POSTPROCESS)
    elements = sum(model.tensors[t].size for op, _ in on_cpu if op.opcode != DETECTION_POSTPROCESS
                   for t in op.outputs)
    return GraphFeatures(dense, array, depthwise, len(on_tpu), params, cached, params - cached,
                         activations, in_bytes, out_bytes, sum(c.macs for _, c in on_cpu),
                         elements, postprocess, sum(pool_macs(model, op) for op, _ in on_tpu),
                         concat_copy_elements(model, mapped))


def array_macs(model: Model, op: Operator) -> int:
    """MACs of a dense op as the 64 x 64 array runs them (depth and outputs padded to 64).

    Per output pixel: ceil(kernel taps x input channels / 64) x ceil(output channels / 64)
    array passes of 64 x 64. A transposed convolution multiplies every pixel of its
    zero-upsampled input (stride x stride per input pixel: as many as it has output pixels) by
    its input channels x (kernel taps x output channels) weights: the zeros cost array passes
    too.
    """
    weights = model.tensors[op.inputs[1]].shape

    def tiles(n: int) -> int:
        return -(-n // ARRAY_SIDE) * ARRAY_SIDE

    if op.opcode == "FULLY_CONNECTED":  # weights [out, in]
        return tiles(weights[-1]) * tiles(weights[0])
    if op.opcode == "CONV_2D":  # weights [out, kh, kw, in]; pixels of the output
        shape = model.tensors[op.outputs[0]].shape
        return _pixels(shape) * tiles(weights[1] * weights[2] * weights[3]) * tiles(weights[0])
    shape = model.tensors[op.outputs[0]].shape  # TRANSPOSE_CONV weights [out, kh, kw, in]
    return _pixels(shape) * tiles(weights[1] * weights[2] * weights[0]) * tiles(weights[3])


def _pixels(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape[:-1]:
        count *= dim
    return count


def peak_activation_bytes(model: Model, mapped: list[bool]) -> int:
    """Largest activation footprint of one Edge TPU op: its 8-bit inputs and outputs."""
    peak = 0
    for op, on_tpu in zip(model.operators, mapped, strict=True):
        if on_tpu:
            tensors = {i for i in op.inputs + op.outputs
                       if i >= 0 and not model.tensors[i].is_constant}
            peak = max(peak, sum(model.tensors[i].size for i in tensors))
    return peak


def pool_macs(model: Model, op: Operator) -> int:
    """Window reads of a pooling op: output elements x window (MEAN: every input element)."""
    if op.opcode in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        window = op.options.get("FilterHeight", 1) * op.options.get("FilterWidth", 1)
        return model.tensors[op.outputs[0]].size * window
    if op.opcode == "MEAN":
        return sum(t.size for t in model.activation_inputs(op))
    return 0


def concat_copy_elements(model: Model, mapped: list[bool]) -> int:
    """Elements of Edge TPU concatenation inputs that Edge TPU ops read more than once.

    A tensor only the concatenation reads is written in place into the concatenated one; a
    shared one is copied (counted once per concatenation that reads it).
    """
    tpu_ops = [op for op, on_tpu in zip(model.operators, mapped, strict=True) if on_tpu]
    readers = Counter(t for op in tpu_ops for t in op.inputs
                      if t >= 0 and not model.tensors[t].is_constant)
    return sum(model.tensors[t].size for op in tpu_ops if op.opcode == "CONCATENATION"
               for t in set(op.inputs)
               if t >= 0 and not model.tensors[t].is_constant and readers[t] > 1)


def _scores(model: Model, op: Operator) -> int:
    """Elements of the class scores [1, anchors, classes] the post-processing op scans."""
    return model.tensors[op.inputs[1]].size if len(op.inputs) > 1 else 0


def latency_ms(features: GraphFeatures,
               calibration: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """Estimated milliseconds per inference on each device of ``calibration``."""
    table = CALIBRATION if calibration is None else calibration
    values = features.vector()
    return {device: round(sum(constants.get(name, 0.0) * value
                              for name, value in zip(FEATURES, values, strict=True)), 3)
            for device, constants in table.items()}


def estimate(path: str | Path, calibration: dict[str, dict[str, float]] | None = None,
             mapped: list[bool] | None = None) -> CostEstimate:
    """Estimate the Edge TPU cost of a (source) ``.tflite`` model.

    Args:
        path: the model file.
        calibration: latency constants per device (default: :data:`CALIBRATION`).
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
    return estimate_model(model, calibration, mapped)


def estimate_model(model: Model, calibration: dict[str, dict[str, float]] | None,
                   mapped: list[bool]) -> CostEstimate:
    """Estimate from an already read source model and its per-op mapping; see :func:`estimate`.

    Args:
        model: the model (not a compiled one).
        calibration: latency constants per device (None: :data:`CALIBRATION`).
        mapped: per operator, True when it runs on the Edge TPU.
    """
    features = graph_features(model, mapped)
    return CostEstimate(features, latency_ms(features, calibration))


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


#: Fitted by ``scripts/bench_edgetpu_cost.py --fit`` on Coral's published latencies and the
#: same hosts' CPU-only timings (23 models on USB 3 and the Dev Board, 17 on USB 2; the
#: README's table): milliseconds per unit of each of :data:`FEATURES`, per device. The Edge
#: TPU's own constants (array MACs, per-channel MACs, ops, concatenation copies) are shared
#: by all devices.
CALIBRATION: dict[str, dict[str, float]] = {
    "usb3": {"invoke": 0.0, "array_macs": 8.371e-10, "channel_macs": 2.585e-08,
        "edgetpu_ops": 0.003663, "concat_copy_elements": 1.315e-06, "streamed_bytes": 1.922e-06,
        "boundary_bytes": 8.064e-06, "cpu_macs": 5.021e-08, "cpu_elements": 4.482e-06,
        "postprocess_elements": 1.45e-06},
    "usb2": {"invoke": 0.1924, "array_macs": 8.371e-10, "channel_macs": 2.585e-08,
        "edgetpu_ops": 0.003663, "concat_copy_elements": 1.315e-06, "streamed_bytes": 3.895e-05,
        "boundary_bytes": 7.677e-05, "cpu_macs": 2.417e-07, "cpu_elements": 7.147e-06,
        "postprocess_elements": 4.71e-06},
    "pcie": {"invoke": 0.0, "array_macs": 8.371e-10, "channel_macs": 2.585e-08,
        "edgetpu_ops": 0.003663, "concat_copy_elements": 1.315e-06, "streamed_bytes": 2.363e-06,
        "boundary_bytes": 8.337e-06, "cpu_macs": 5.021e-08, "cpu_elements": 4.482e-06,
        "postprocess_elements": 1.45e-06},
    "devboard": {"invoke": 0.08063, "array_macs": 8.371e-10, "channel_macs": 2.585e-08,
        "edgetpu_ops": 0.003663, "concat_copy_elements": 1.315e-06, "streamed_bytes": 2.363e-06,
        "boundary_bytes": 8.337e-06, "cpu_macs": 2.309e-07, "cpu_elements": 7.615e-06,
        "postprocess_elements": 3.805e-05},
}
