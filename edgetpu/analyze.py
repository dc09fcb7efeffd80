"""Offline prediction of what ``edgetpu_compiler`` (16.0) maps to the Edge TPU, op by op.

The compiler is closed source and x86-64 Linux only; this module reads the ``.tflite``
graph (never an interpreter) and applies the documented rules (Coral's "TensorFlow models on
the Edge TPU" page, summarised in DESIGN.md):

1. the op must be one the compiler maps, at an op version its TFLite parser knows
   (:data:`COMPILER_MAX_OP_VERSIONS`; a newer version makes the whole compilation fail);
2. every activation tensor must be 8-bit (int8 / uint8; LSTM state may be int16), with a
   static shape and at most 3 dimensions larger than 1;
3. op-specific limits (fused activations on pools / concatenation, a constant Concatenation
   input only as a 2-input zero padding, equal dilation, default FullyConnected weights,
   Softmax size, StridedSlice strides and masks, Mean over y / x only, no Pad of the batch,
   Squeeze of leading dims only, precise resize factors); DEQUANTIZE and custom ops are
   reported as the compiler does ("Operation is working on an unsupported data type" for
   DEQUANTIZE and ``TFLite_Detection_PostProcess``);
4. the single-partition rule: without ``-a`` the compiler makes one Edge TPU subgraph, so an op
   fed (directly or not) by an op that runs on the CPU after the Edge TPU part stays on the
   CPU too ("More than one subgraph is not supported"). A CPU op before any Edge TPU op
   (a float-to-int8 QUANTIZE at the input) does not split the graph.

Statuses are the compiler's own texts; ``reason`` says precisely why, ``fix`` what to do.
Compiled models (``*_edgetpu.tflite``) are described as they are: Edge TPU custom ops, what
stayed on the CPU, pipeline segment, Edge TPU payload size.

Validated against the real compiler on the source / compiled pairs in ``../shared/data/coral``
(``scripts/bench_analyzer.py``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetpu.tflite_model import (
    DETECTION_POSTPROCESS,
    EDGETPU_CUSTOM_OP,
    Model,
    Operator,
    Tensor,
    read_model,
)
from quant.errors import BadInputError

MAPPED = "Mapped to Edge TPU"
NOT_SUPPORTED = "Operation not supported"
VERSION_NOT_SUPPORTED = "Operation version not supported"
MORE_THAN_ONE_SUBGRAPH = "More than one subgraph is not supported"
UNSUPPORTED_DATA_TYPE = "Operation is working on an unsupported data type"
UNSUPPORTED_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
UNSPECIFIED_LIMITATION = ("Operation is otherwise supported, but not mapped due to some "
                          "unspecified limitation")
CPU_IN_COMPILED = "Runs on the CPU (left outside edgetpu-custom-op by the compiler)"
COMPILED = "Compiled for the Edge TPU"

#: Highest version of each builtin op that the TFLite parser inside edgetpu_compiler
#: 16.0.384591198 knows; a higher version, or a builtin op missing here, makes the whole
#: compilation fail ("Didn't find op for builtin opcode 'CONV_2D' version '6'", "Model could
#: not be parsed"). The table holds, for every op, the highest version that TensorFlow 2.5.0
#: reads: TFLite's op-version -> runtime-version map
#: (tensorflow/lite/tools/versioning/runtime_version.cc), entries up to runtime "2.5.0".
#: Why TF 2.5: every public report of compiler 16.0 rejects a version added in TF 2.7 or later
#: (google-coral/edgetpu issues 631: CONV_2D 6 = TF 2.9; 879: QUANTIZE 3 = TF 2.7; 845:
#: TRANSPOSE_CONV 4; libedgetpu 71: EXP 2), compiler 15.0 already rejected TF 2.5 additions
#: (issues 384: RSQRT 2, 340: REVERSE_V2 3), and Coral's compiled pairs in the shared data
#: use FULLY_CONNECTED 4, SOFTMAX 2, CONV_2D 3, DEPTHWISE_CONV_2D 3, ADD 2, MEAN 2,
#: QUANTIZE 1, RESHAPE 1. Versions added in TF 2.6 (ADD 4, MUL 5, PAD 4, PADV2 4,
#: STRIDED_SLICE 6, ABS 4, REDUCE_PROD 2) are left out: no report settles them, and they
#: are int16 / int64 / string variants that an 8-bit model never uses. TF 2.21's full-integer
#: converter writes CONV_2D 3, DEPTHWISE_CONV_2D 3, FULLY_CONNECTED 4 (per-channel or not),
#: ADD 2, MUL 2, MEAN 2, PAD 2, CONCATENATION 2, pools 2, LOGISTIC 2, SOFTMAX 2,
#: RESIZE_BILINEAR 3, TRANSPOSE_CONV 2, QUANTIZE 1 (checked here), all within the table.
COMPILER_MAX_OP_VERSIONS: dict[str, int] = {
    "ABS": 3, "ADD": 3, "ADD_N": 1, "ARG_MAX": 2, "ARG_MIN": 2, "AVERAGE_POOL_2D": 3,
    "BATCH_MATMUL": 4, "BATCH_TO_SPACE_ND": 3, "BIDIRECTIONAL_SEQUENCE_LSTM": 3,
    "BIDIRECTIONAL_SEQUENCE_RNN": 3, "BROADCAST_TO": 3, "CALL_ONCE": 1, "CAST": 1, "CEIL": 1,
    "COMPLEX_ABS": 1, "CONCATENATION": 3, "CONV_2D": 5, "CONV_3D": 1, "COS": 1, "CUMSUM": 1,
    "DENSIFY": 1, "DEPTH_TO_SPACE": 2, "DEPTHWISE_CONV_2D": 6, "DEQUANTIZE": 4, "DIV": 2,
    "ELU": 1, "EMBEDDING_LOOKUP": 3, "EMBEDDING_LOOKUP_SPARSE": 1, "EQUAL": 3, "EXP": 1,
    "EXPAND_DIMS": 1, "FAKE_QUANT": 2, "FILL": 3, "FLOOR": 1, "FLOOR_DIV": 2, "FLOOR_MOD": 1,
    "FULLY_CONNECTED": 9, "GATHER": 5, "GATHER_ND": 3, "GREATER": 2, "GREATER_EQUAL": 2,
    "HARD_SWISH": 1, "HASHTABLE": 1, "HASHTABLE_FIND": 1, "HASHTABLE_IMPORT": 1,
    "HASHTABLE_LOOKUP": 1, "HASHTABLE_SIZE": 1, "IF": 1, "IMAG": 1, "L2_NORMALIZATION": 2,
    "L2_POOL_2D": 1, "LEAKY_RELU": 2, "LESS": 2, "LESS_EQUAL": 2,
    "LOCAL_RESPONSE_NORMALIZATION": 1, "LOG": 1, "LOG_SOFTMAX": 2, "LOGICAL_AND": 1,
    "LOGICAL_NOT": 1, "LOGICAL_OR": 1, "LOGISTIC": 3, "LSH_PROJECTION": 1, "LSTM": 4,
    "MATRIX_DIAG": 1, "MATRIX_SET_DIAG": 1, "MAX_POOL_2D": 3, "MAXIMUM": 4, "MEAN": 3,
    "MINIMUM": 4, "MIRROR_PAD": 2, "MUL": 4, "NEG": 1, "NON_MAX_SUPPRESSION_V4": 1,
    "NON_MAX_SUPPRESSION_V5": 1, "NOT_EQUAL": 3, "ONE_HOT": 1, "PACK": 3, "PAD": 3, "PADV2": 3,
    "POW": 1, "PRELU": 1, "QUANTIZE": 2, "RANGE": 1, "RANK": 1, "REAL": 1, "REDUCE_ANY": 1,
    "REDUCE_MAX": 3, "REDUCE_MIN": 3, "REDUCE_PROD": 1, "RELU": 3, "RELU6": 3,
    "RELU_N1_TO_1": 1, "RESHAPE": 1, "RESIZE_BILINEAR": 4, "RESIZE_NEAREST_NEIGHBOR": 4,
    "REVERSE_SEQUENCE": 1, "REVERSE_V2": 3, "RFFT2D": 1, "RNN": 3, "ROUND": 1, "RSQRT": 2,
    "SCATTER_ND": 1, "SEGMENT_SUM": 1, "SELECT": 2, "SELECT_V2": 1, "SHAPE": 1, "SIN": 1,
    "SKIP_GRAM": 1, "SLICE": 5, "SOFTMAX": 3, "SPACE_TO_BATCH_ND": 3, "SPACE_TO_DEPTH": 2,
    "SPARSE_TO_DENSE": 3, "SPLIT": 4, "SPLIT_V": 2, "SQRT": 1, "SQUARE": 1,
    "SQUARED_DIFFERENCE": 2, "SQUEEZE": 2, "STRIDED_SLICE": 5, "SUB": 5, "SUM": 2, "SVDF": 4,
    "TANH": 3, "TILE": 2, "TOPK_V2": 2, "TRANSPOSE": 5, "TRANSPOSE_CONV": 3,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 3, "UNIDIRECTIONAL_SEQUENCE_RNN": 3, "UNIQUE": 1,
    "UNPACK": 4, "WHERE": 1, "WHILE": 1, "ZEROS_LIKE": 1,
}

#: Largest Softmax input the Edge TPU maps (Coral: 1-D, at most 16,000 elements).
SOFTMAX_MAX_ELEMENTS = 16000

#: What to do about each kind of problem.
FIXES: dict[str, str] = {
    "unsupported_op": "replace the layer with Edge TPU ops (coral.ai/docs/edgetpu/models-intro) "
                      "or move it after the last Edge TPU op",
    "custom_op": "custom ops always run on the CPU; keep them at the end of the graph",
    "op_version": "convert with an older TFLite converter (TF 2.5-2.8) or disable the feature "
                  "that raised the op version (e.g. per-channel dense layers, int16)",
    "data_type": "quantize every tensor to int8/uint8 (full-integer post-training "
                 "quantization with a representative dataset, or quantization-aware training)",
    "dynamic_shape": "give the model a static input shape with batch 1 before converting "
                     "(the compiler reports this as 'Model not quantized')",
    "rank": "reshape so that at most the 3 innermost dimensions are larger than 1 "
            "(batch 1)",
    "fused_activation": "apply the activation as a separate layer",
    "limitation": "change the layer's parameters as the reason says, or accept CPU execution",
    "partition": "fix the first op that stays on the CPU, or compile with -a "
                 "(--enable_multiple_subgraphs, experimental)",
}

_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH",
                5: "SIGN_BIT", 6: "SIGMOID"}
_EIGHT_BIT = {"INT8", "UINT8"}


@dataclass(frozen=True)
class OpVerdict:
    """The prediction for one operator (``opcode`` as in the compiler's table)."""

    index: int
    opcode: str
    version: int
    mapped: bool
    status: str
    reason: str = ""
    fix: str = ""
    custom: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as JSON-ready data."""
        return {"index": self.index, "opcode": self.opcode, "version": self.version,
                "mapped": self.mapped, "status": self.status, "reason": self.reason,
                "fix": self.fix}


@dataclass(frozen=True)
class Analysis:
    """Per-op verdicts and a summary for one model (see :func:`analyze_model`)."""

    path: Path
    compiled: bool
    ops: list[OpVerdict]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_ops(self) -> Counter[str]:
        """Multiset of the op codes that run on the CPU."""
        return Counter(op.opcode for op in self.ops if not op.mapped)

    @property
    def fully_mapped(self) -> bool:
        """True when every op maps, except a trailing ``TFLite_Detection_PostProcess``."""
        if self.summary.get("compile_error"):
            return False
        cpu = [op for op in self.ops if not op.mapped]
        if not cpu:
            return True
        return (len(cpu) == 1 and cpu[0].opcode == DETECTION_POSTPROCESS
                and cpu[0].index == self.ops[-1].index)

    def to_json(self) -> dict[str, Any]:
        """Return ``{"ops": [...], "summary": {...}}``."""
        summary = dict(self.summary, fully_mapped=self.fully_mapped)
        return {"model": str(self.path), "ops": [op.to_dict() for op in self.ops],
                "summary": summary}

    def dumps(self) -> str:
        """Return :meth:`to_json` as indented JSON text."""
        return json.dumps(self.to_json(), indent=2)


def analyze_model(path: str | Path, enable_multiple_subgraphs: bool = False) -> Analysis:
    """Predict, op by op, what edgetpu_compiler 16.0 does with a ``.tflite`` model.

    Args:
        path: a ``.tflite`` file; a compiled ``*_edgetpu.tflite`` is described instead.
        enable_multiple_subgraphs: predict for ``edgetpu_compiler -a`` (no single-partition
            rule).

    Returns:
        An :class:`Analysis` with one :class:`OpVerdict` per operator of the main subgraph.

    Raises:
        BadInputError: the file is missing or not a valid TFLite model.
    """
    model = read_model(path)
    if model.is_compiled:
        return _describe_compiled(model)
    verdicts = []
    for op in model.operators:
        try:
            verdicts.append(_judge(model, op))
        except (IndexError, KeyError) as exc:  # an op without the inputs its kind has
            raise BadInputError(f"{model.path}: operator {op.index} ({op.opcode}) lacks "
                                "inputs or outputs its kind needs; corrupt model, export it "
                                "again") from exc
    if not enable_multiple_subgraphs:
        verdicts = _single_partition(model, verdicts)
    return Analysis(model.path, False, verdicts, _summary(model, verdicts))


def compiler_table(ops: list[OpVerdict], custom_names: bool = False) -> list[tuple[str, int, str]]:
    """Group verdicts as the compiler's log does: ``(operator, count, status)`` rows.

    Custom ops are named ``CUSTOM`` as the compiler does, or by their code with
    ``custom_names`` (for compiled models, where ``edgetpu-custom-op`` is the interesting one).
    """
    counts: Counter[tuple[str, str]] = Counter()
    for op in ops:
        name = "CUSTOM" if op.custom and not custom_names else op.opcode
        counts[(name, op.status)] += 1
    return [(name, count, status) for (name, status), count in counts.items()]


def format_table(rows: list[tuple[str, int, str]]) -> str:
    """Return rows in the compiler's fixed-width ``Operator  Count  Status`` format."""
    lines = [f"{'Operator':<30} {'Count':<10} Status", ""]
    lines += [f"{name:<30} {count:<10} {status}" for name, count, status in rows]
    return "\n".join(lines)


def format_report(analysis: Analysis) -> str:
    """Return the human report: the compiler-style table, the summary and each fix."""
    s = analysis.summary
    lines = [f"Model: {analysis.path}"]
    if analysis.compiled:
        lines.append(f"Compiled for the Edge TPU: {s['edgetpu_custom_ops']} edgetpu-custom-op, "
                     f"payload {s['edgetpu_payload_bytes']:,} bytes"
                     + (f", segment {s['segment'][0]} of {s['segment'][1]}"
                        if s.get("segment") else ""))
    lines += ["", format_table(compiler_table(analysis.ops, analysis.compiled)), ""]
    lines.append(f"Operations: {s['ops']}, on the Edge TPU: {s['mapped']}, "
                 f"on the CPU: {s['on_cpu']}; parameters: {s['parameter_bytes']:,} bytes")
    if s.get("compile_error"):
        lines.append(f"Predicted compilation failure: {s['compile_error']}")
    problems = [op for op in analysis.ops
                if not op.mapped and op.reason and op.status != MORE_THAN_ONE_SUBGRAPH]
    followers = [op for op in analysis.ops if op.status == MORE_THAN_ONE_SUBGRAPH]
    if problems or followers:
        lines += ["", "Why and what to do:"]
        lines += [f"  op {op.index} {op.opcode} v{op.version}: {op.reason}"
                  + (f"\n      fix: {op.fix}" if op.fix else "") for op in problems]
    if followers:
        listed = ", ".join(f"{op.index} {op.opcode}" for op in followers)
        lines.append(f"  ops {listed}: supported, but fed by an op that runs on the CPU after "
                     f"the Edge TPU part (one Edge TPU subgraph only)\n      fix: "
                     f"{FIXES['partition']}")
    return "\n".join(lines)


# --- rules --------------------------------------------------------------------------------

_Check = Callable[[Model, Operator], "tuple[str, str, str] | None"]


def _judge(model: Model, op: Operator) -> OpVerdict:
    def verdict(status: str, reason: str, fix_key: str) -> OpVerdict:
        return OpVerdict(op.index, op.opcode, op.version, False, status, reason, FIXES[fix_key],
                         op.custom)

    if op.custom:
        if op.opcode == DETECTION_POSTPROCESS:
            return verdict(UNSUPPORTED_DATA_TYPE, "the SSD post-processing custom op runs on the "
                           "CPU by design (float outputs)", "custom_op")
        return verdict(NOT_SUPPORTED, f"custom op {op.opcode!r} has no Edge TPU implementation",
                       "custom_op")
    highest = COMPILER_MAX_OP_VERSIONS.get(op.opcode)
    if highest is None:
        return verdict(VERSION_NOT_SUPPORTED, f"{op.opcode} is newer than the compiler's "
                       "TFLite parser (TF 2.5); the compilation would fail", "op_version")
    if op.version > highest:
        return verdict(VERSION_NOT_SUPPORTED, f"op version {op.version} is newer than the "
                       f"compiler's (at most {highest}); the compilation would fail",
                       "op_version")
    if op.opcode == "DEQUANTIZE":  # the compiler's own status for it (float output)
        return verdict(UNSUPPORTED_DATA_TYPE, "DEQUANTIZE produces float data, which the Edge "
                       "TPU does not compute", "data_type")
    if op.opcode not in _OP_CHECKS:
        return verdict(NOT_SUPPORTED, f"{op.opcode} is not an Edge TPU operation",
                       "unsupported_op")
    for problem in (_check_types, _check_shapes, _OP_CHECKS[op.opcode]):
        found = problem(model, op)
        if found:
            return verdict(*found)
    return OpVerdict(op.index, op.opcode, op.version, True, MAPPED)


def _check_types(model: Model, op: Operator) -> tuple[str, str, str] | None:
    for index in op.inputs + op.outputs:
        tensor = model.tensors[index] if index >= 0 else None
        if tensor is None or tensor.is_constant:
            continue
        allowed = _EIGHT_BIT | ({"INT16"} if tensor.is_variable else set())
        if tensor.dtype not in allowed:
            return (UNSUPPORTED_DATA_TYPE, f"tensor {tensor.name!r} is {tensor.dtype}; the Edge "
                    "TPU computes on 8-bit quantized tensors only", "data_type")
        if not tensor.quantized:
            return (UNSUPPORTED_DATA_TYPE, f"tensor {tensor.name!r} has no quantization "
                    "parameters", "data_type")
    allowed_constants = _EIGHT_BIT | {"INT32", "INT64"}  # weights; biases, shapes, axes
    constants = [t for t in model.constant_inputs(op) if t.dtype not in allowed_constants]
    if constants:
        return (UNSUPPORTED_DATA_TYPE, f"constant {constants[0].name!r} is "
                f"{constants[0].dtype}", "data_type")
    return None


def _check_shapes(model: Model, op: Operator) -> tuple[str, str, str] | None:
    for index in op.inputs + op.outputs:
        if index < 0:
            continue
        tensor = model.tensors[index]
        if tensor.is_constant:
            continue
        if tensor.is_dynamic:
            return (UNSPECIFIED_LIMITATION, f"tensor {tensor.name!r} has a dynamic shape "
                    f"{list(tensor.signature)}", "dynamic_shape")
        if len(tensor.shape) > 3 and any(d > 1 for d in tensor.shape[:-3]):
            return (UNSUPPORTED_RANK, f"tensor {tensor.name!r} has shape {list(tensor.shape)}: "
                    "more than the 3 innermost dimensions are larger than 1", "rank")
    return None


def _no_check(model: Model, op: Operator) -> None:
    return None


def _fused_activation(model: Model, op: Operator) -> tuple[str, str, str] | None:
    activation = op.options.get("FusedActivationFunction", 0)
    if activation:
        return (UNSPECIFIED_LIMITATION, f"{op.opcode} has a fused "
                f"{_ACTIVATIONS.get(activation, activation)} activation", "fused_activation")
    return None


def _conv(model: Model, op: Operator) -> tuple[str, str, str] | None:
    h, w = op.options.get("DilationHFactor", 1), op.options.get("DilationWFactor", 1)
    if h != w:
        return (UNSPECIFIED_LIMITATION, f"dilation differs in y and x ({h} vs {w})",
                "limitation")
    return None


def _fully_connected(model: Model, op: Operator) -> tuple[str, str, str] | None:
    if op.options.get("WeightsFormat", 0) != 0:
        return (UNSPECIFIED_LIMITATION, "weights are not in the default format", "limitation")
    out = model.tensors[op.outputs[0]].shape
    if sum(d > 1 for d in out) > 1:
        return (UNSPECIFIED_LIMITATION, f"output {list(out)} is not 1-D (batch 1)", "limitation")
    return None


def _softmax(model: Model, op: Operator) -> tuple[str, str, str] | None:
    tensor = model.activation_inputs(op)[0]
    if sum(d > 1 for d in tensor.shape) > 1:
        return (UNSPECIFIED_LIMITATION, f"input {list(tensor.shape)} is not 1-D", "limitation")
    if tensor.size > SOFTMAX_MAX_ELEMENTS:
        return (UNSPECIFIED_LIMITATION, f"input has {tensor.size} elements (at most "
                f"{SOFTMAX_MAX_ELEMENTS})", "limitation")
    return None


def _strided_slice(model: Model, op: Operator) -> tuple[str, str, str] | None:
    if op.options.get("EllipsisMask", 0) or op.options.get("NewAxisMask", 0):
        return (UNSPECIFIED_LIMITATION, "ellipsis or new-axis mask is set", "limitation")
    strides = _constant_ints(model, op, 3)
    if strides is None or any(s != 1 for s in strides):
        return (UNSPECIFIED_LIMITATION, f"strides {strides} are not all 1", "limitation")
    return None


def _mean(model: Model, op: Operator) -> tuple[str, str, str] | None:
    axes = _constant_ints(model, op, 1)
    rank = len(model.tensors[op.inputs[0]].shape)
    if axes is None or any(a % max(rank, 1) == 0 for a in axes):
        return (UNSPECIFIED_LIMITATION, f"reduces over the batch dimension (axes {axes})",
                "limitation")
    if rank == 4 and any(a % rank == 3 for a in axes):
        return (UNSPECIFIED_LIMITATION, f"reduces over channels (axes {axes}); only y and/or "
                "x reductions map", "limitation")
    return None


def _squeeze(model: Model, op: Operator) -> tuple[str, str, str] | None:
    shape = model.tensors[op.inputs[0]].shape
    axes = op.options.get("SqueezeDims") or [i for i, d in enumerate(shape) if d == 1]
    leading = next((i for i, d in enumerate(shape) if d != 1), len(shape))
    if any(a % max(len(shape), 1) >= leading for a in axes):
        return (UNSPECIFIED_LIMITATION, f"squeezes dimensions {axes} of {list(shape)}, not only "
                "leading dimensions of size 1", "limitation")
    return None


def _resize(model: Model, op: Operator) -> tuple[str, str, str] | None:
    """Resize maps when the scale is an exact integer factor (precision heuristic).

    With ``align_corners`` the sampling step is (in - 1) / (out - 1), so the output must be
    an integer multiple of the input in that sense; from a 1x1 input the step is undefined.
    Calibrated on Coral's compiled DeepLab v3 (its 1x1 -> 33x33 ASPP resize stays on the CPU).
    """
    source = model.tensors[op.inputs[0]].shape
    target = model.tensors[op.outputs[0]].shape
    if len(source) != 4 or len(target) != 4:
        return None
    align = bool(op.options.get("AlignCorners", False))
    for size_in, size_out in zip(source[1:3], target[1:3], strict=True):
        if align:
            exact = size_in > 1 and (size_out - 1) % (size_in - 1) == 0
        else:
            exact = size_out % size_in == 0 or size_in % size_out == 0
        if not exact:
            return (UNSPECIFIED_LIMITATION, f"resize {source[1]}x{source[2]} -> "
                    f"{target[1]}x{target[2]}{' with align_corners' if align else ''} is not an "
                    "integer scale; the compiler keeps it on the CPU for precision", "limitation")
    return None


def _concatenation(model: Model, op: Operator) -> tuple[str, str, str] | None:
    """No fused activation; a constant input only as one of 2 inputs, all zeros (padding)."""
    found = _fused_activation(model, op)
    if found:
        return found
    constants = model.constant_inputs(op)
    if constants and (len(op.inputs) != 2 or not constants[0].is_zero):
        return (UNSPECIFIED_LIMITATION, f"constant input {constants[0].name!r} "
                + ("is not all zeros" if len(op.inputs) == 2 else
                   f"among {len(op.inputs)} inputs (only a 2-input zero padding maps)"),
                "limitation")
    return None


def _pad(model: Model, op: Operator) -> tuple[str, str, str] | None:
    """No padding of the batch dimension (paddings [rank, 2], row 0 is the batch)."""
    paddings = _constant_ints(model, op, 1)
    if paddings and len(model.tensors[op.inputs[0]].shape) == 4 and any(paddings[:2]):
        return (UNSPECIFIED_LIMITATION, f"pads the batch dimension ({paddings[:2]})",
                "limitation")
    return None


def _constant_ints(model: Model, op: Operator, position: int) -> list[int] | None:
    """Values of the small constant int32 input at ``position`` (None when not constant)."""
    if position >= len(op.inputs) or op.inputs[position] < 0:
        return None
    values = model.tensors[op.inputs[position]].values
    return list(values) if values is not None else None


#: Ops the compiler maps (Coral's supported-operations table) and their extra limits.
#: Not here on purpose: HARD_SWISH and LEAKY_RELU, which users report running on the CPU
#: (google-coral/edgetpu issues 272 and 353).
_OP_CHECKS: dict[str, _Check] = {
    **dict.fromkeys(
        ("ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "LOGISTIC", "RELU", "RELU6", "RELU_N1_TO_1",
         "TANH", "L2_NORMALIZATION", "EXPAND_DIMS", "QUANTIZE", "SLICE", "SPACE_TO_DEPTH", "PACK",
         "PRELU", "TRANSPOSE_CONV", "SUM", "REDUCE_MAX", "REDUCE_MIN", "RESHAPE", "SPLIT",
         "UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM"), _no_check),
    "PAD": _pad,
    "CONCATENATION": _concatenation,
    "AVERAGE_POOL_2D": _fused_activation,
    "MAX_POOL_2D": _fused_activation,
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _conv,
    "FULLY_CONNECTED": _fully_connected,
    "MEAN": _mean,
    "RESIZE_BILINEAR": _resize,
    "RESIZE_NEAREST_NEIGHBOR": _resize,
    "SOFTMAX": _softmax,
    "SQUEEZE": _squeeze,
    "STRIDED_SLICE": _strided_slice,
}


def _single_partition(model: Model, verdicts: list[OpVerdict]) -> list[OpVerdict]:
    """Move ops fed by a CPU op that follows the Edge TPU part onto the CPU."""
    after_tpu: set[int] = set()   # tensors computed (transitively) by an Edge TPU op
    split: set[int] = set()       # tensors computed by a CPU op that follows an Edge TPU op
    result = []
    for op, verdict in zip(model.operators, verdicts, strict=True):
        ins = [i for i in op.inputs if i >= 0]
        if verdict.mapped and any(i in split for i in ins):
            verdict = OpVerdict(op.index, op.opcode, op.version, False, MORE_THAN_ONE_SUBGRAPH,
                                "fed by an op that runs on the CPU after the Edge TPU part "
                                "(single Edge TPU subgraph)", FIXES["partition"], op.custom)
        if verdict.mapped:
            after_tpu.update(op.outputs)
            if any(i in split for i in ins):
                split.update(op.outputs)
        elif any(i in after_tpu or i in split for i in ins):
            split.update(op.outputs)
        result.append(verdict)
    return result


def _summary(model: Model, verdicts: list[OpVerdict]) -> dict[str, Any]:
    on_cpu = [v for v in verdicts if not v.mapped]
    params = sum(t.nbytes for t in _used_constants(model))
    mapped_params = sum(t.nbytes for op, v in zip(model.operators, verdicts, strict=True)
                        if v.mapped for t in model.constant_inputs(op))
    version_errors = [v for v in verdicts if v.status == VERSION_NOT_SUPPORTED]
    dynamic = [v for v in verdicts if "dynamic shape" in v.reason]
    error = None
    if version_errors:
        first = version_errors[0]
        error = (f"Didn't find op for builtin opcode '{first.opcode}' version "
                 f"'{first.version}' (model could not be parsed)")
    elif dynamic:
        error = "Model not quantized (the real cause: a dynamic shape)"
    return {
        "ops": len(verdicts),
        "mapped": len(verdicts) - len(on_cpu),
        "on_cpu": len(on_cpu),
        "cpu_ops": dict(Counter(v.opcode for v in on_cpu)),
        "edgetpu_subgraphs": _count_tpu_subgraphs(model, verdicts),
        "parameter_bytes": params,
        "mapped_parameter_bytes": mapped_params,
        "model_bytes": model.file_bytes,
        "compile_error": error,
        "compiled": False,
    }


def _used_constants(model: Model) -> list[Tensor]:
    seen: dict[int, Tensor] = {}
    for op in model.operators:
        for tensor in model.constant_inputs(op):
            seen[tensor.index] = tensor
    return list(seen.values())


def _count_tpu_subgraphs(model: Model, verdicts: list[OpVerdict]) -> int:
    """Connected groups of mapped ops (joined by tensors flowing between mapped ops)."""
    producer = {t: op.index for op in model.operators for t in op.outputs}
    parent = {v.index: v.index for v in verdicts if v.mapped}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for op in model.operators:
        if op.index not in parent:
            continue
        for t in op.inputs:
            source = producer.get(t)
            if source is not None and source in parent:
                parent[find(op.index)] = find(source)
    return len({find(i) for i in parent})


def _describe_compiled(model: Model) -> Analysis:
    ops = []
    for op in model.operators:
        if op.opcode == EDGETPU_CUSTOM_OP:
            ops.append(OpVerdict(op.index, op.opcode, op.version, True, COMPILED, custom=True))
        else:
            ops.append(OpVerdict(op.index, op.opcode, op.version, False, CPU_IN_COMPILED,
                                 custom=op.custom))
    tpu = sum(op.mapped for op in ops)
    summary = {
        "ops": len(ops),
        "mapped": tpu,
        "on_cpu": len(ops) - tpu,
        "cpu_ops": dict(Counter(op.opcode for op in ops if not op.mapped)),
        "edgetpu_subgraphs": tpu,
        "edgetpu_custom_ops": tpu,
        "edgetpu_payload_bytes": model.edgetpu_payload_bytes,
        "parameter_bytes": sum(t.nbytes for t in _used_constants(model)),
        "model_bytes": model.file_bytes,
        "segment": list(model.segment) if model.segment else None,
        "compile_error": None,
        "compiled": True,
    }
    return Analysis(model.path, True, ops, summary)
