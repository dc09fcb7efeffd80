"""Offline prediction of what ``edgetpu_compiler`` maps to the Edge TPU, op by op.

The compiler is closed source and x86-64 Linux only; this module reads the ``.tflite``
graph (never an interpreter) and applies rules written from Coral's documentation and from
real compiler logs. Every rule is an entry of :data:`RULES` with the compiler's status text,
the fix, its evidence, and whether a real compile showed it (``seen``) or it is reasoned from
documents and neighbouring observations (``inferred``). In short:

1. the op must be one the compiler maps, at an op version its TFLite parser knows
   (a newer version makes the whole compilation fail), on the targeted Edge TPU runtime
   (``-m``; :mod:`edgetpu.compiler_versions`);
2. every activation tensor must be 8-bit, with a static shape (a -1 batch of size 1 in the
   shape signature is fine), at most 3 dimensions larger than 1, and not too large for the
   op (two innermost dimensions; whole TRANSPOSE / RESHAPE tensors);
3. op-specific limits (fused activations, dilation, FullyConnected weights, Softmax depth,
   StridedSlice strides, Mean axes, Pad / Squeeze dims, resize factors, Concatenation
   constants); a float-input QUANTIZE, DEQUANTIZE and custom ops stay on the CPU;
4. the single-partition rule: without ``-a`` the compiler makes one Edge TPU subgraph, so an
   op fed (directly or not) by an op that runs on the CPU after the Edge TPU part stays on the
   CPU too ("More than one subgraph is not supported"). CPU ops before any Edge TPU op (a
   float-to-int8 QUANTIZE at the input) do not split the graph. ``-i`` tensors end the Edge
   TPU part where the user says.

Statuses are the compiler's own texts; ``reason`` says precisely why, ``fix`` what to do,
``confidence`` whether the rule was seen in a real compile. When ops stay on the CPU the
summary names the ``-i`` cut that keeps the Edge TPU part whole; when the compilation would
fail, the one change that fixes it. Compiled models (``*_edgetpu.tflite``) are described as
they are.

Checked against the real compiler on every pair of ``../shared/data/coral`` and
``../shared/data/coral_wild`` (``scripts/bench_analyzer.py``).
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.errors import BadInputError
from edgetpu.compiler_versions import (
    COMPILER_MAX_OP_VERSIONS,
    INT8_MIN_RUNTIME,
    OP_MIN_RUNTIME,
    OP_MIN_RUNTIME_SEEN,
    CompilerRelease,
    find_release,
    target_runtime,
)
from edgetpu.tflite_model import (
    DETECTION_POSTPROCESS,
    EDGETPU_CUSTOM_OP,
    Model,
    ModelSource,
    Operator,
    Tensor,
    read_model,
)

__all__ = ["COMPILER_MAX_OP_VERSIONS", "RULES", "Analysis", "OpVerdict", "Rule",
           "analyze_model", "compiler_table", "format_report", "format_table",
           "is_dynamic_for_compiler"]

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
SEEN = "seen"
INFERRED = "inferred"

#: Largest Softmax depth the Edge TPU maps (Coral: at most 16,000 elements).
SOFTMAX_MAX_ELEMENTS = 16000
#: Largest product of a tensor's two innermost dimensions that maps. Inferred: between the
#: largest seen mapping (176,400: CONCATENATION to [1,84,2100]; the compiler 16 log of a
#: YOLOv8n export at 320 has only one CONCATENATION "otherwise supported") and the smallest
#: seen failing (230,400: RESHAPE to [1,144,1600], the same log); 192 KiB is the round number
#: between them.
MAX_ROW_ELEMENTS = 196608
#: Largest TRANSPOSE input that maps, in elements. Inferred: [1,20,20,144] (57,600) maps and
#: [1,4,16,2100] (134,400) does not (YOLOv8n at 320, compiler 16: "TRANSPOSE 2 Mapped",
#: "TRANSPOSE 3 ... unspecified limitation"); 2^16 lies between them.
TRANSPOSE_MAX_ELEMENTS = 1 << 16
#: Largest RESHAPE input that maps, in elements. Inferred: [1,40,40,255] (408,000) maps and
#: [1,80,80,255] (1,632,000) does not (YOLOv5n at 640, compiler 16: "RESHAPE 3 Mapped", "RESHAPE 3
#: ... unspecified limitation"; Coral: "Certain reshapes might not be mapped for large tensor
#: sizes"); 2^20 lies between them.
RESHAPE_MAX_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class Rule:
    """One rule of the prediction: the compiler's status, the fix, and its evidence."""

    status: str
    fix: str
    confidence: str
    evidence: str


#: Every rule the analyzer applies. ``evidence`` describes a real compile (a compiler log of a
#: public model, or a compiler output quoted in a public issue) for ``seen`` rules, and the
#: document or reasoning for ``inferred`` ones. ``scripts/bench_analyzer.py`` checks the
#: rules against every real pair in ``../shared/data``.
RULES: dict[str, Rule] = {
    "mapped": Rule(MAPPED, "", SEEN, "ops in SEEN_MAPPED were mapped in a real compile"),
    "detection_postprocess": Rule(
        UNSUPPORTED_DATA_TYPE, "custom ops always run on the CPU; keep them at the end of the "
        "graph", INFERRED, "Coral: custom ops run on the CPU; the SSD post-processing op is "
        "last and has float outputs"),
    "custom_op": Rule(
        NOT_SUPPORTED, "custom ops always run on the CPU; keep them at the end of the graph",
        INFERRED, "Coral models-intro: only the listed builtin ops map"),
    "op_version": Rule(
        VERSION_NOT_SUPPORTED, "convert with an older TFLite converter (TF 2.5-2.8) or disable "
        "the feature that raised the op version (e.g. per-channel dense layers, int16)", SEEN,
        "\"Didn't find op for builtin opcode 'CONV_2D' version '6'\" (google-coral/edgetpu "
        "issue 631; also 879, 845, 384, 340)"),
    "runtime_version": Rule(
        NOT_SUPPORTED, "compile for a newer Edge TPU runtime (a higher -m, or the compiler's "
        "default) and update libedgetpu on the device", SEEN,
        "compiler 14.1 (runtime 13): \"TRANSPOSE 42 Operation not supported\" (issue 242); "
        "compiler 16.0 maps TRANSPOSE (YOLOv8n export log)"),
    "dequantize": Rule(
        UNSUPPORTED_DATA_TYPE, "make the model's output int8 / uint8 (inference_output_type) "
        "or accept the DEQUANTIZE on the CPU (cheap)", SEEN,
        "compiler 15 log of an MNIST CNN with float I/O: \"DEQUANTIZE 1 Operation is working on "
        "an unsupported data type\""),
    "float_quantize": Rule(
        UNSPECIFIED_LIMITATION, "quantize the model's input too (inference_input_type int8 / "
        "uint8), or accept the input QUANTIZE on the CPU (cheap)", SEEN,
        "compiler 15 and 16 logs of CNNs with a float32 input: \"QUANTIZE 1 Operation is "
        "otherwise supported, but not mapped ...\""),
    "not_edgetpu_op": Rule(
        NOT_SUPPORTED, "replace the layer with Edge TPU ops (coral.ai/docs/edgetpu/models-intro) "
        "or move it after the last Edge TPU op", SEEN,
        "compiler 16 log of a dense autoencoder: \"LEAKY_RELU 2 Operation not supported\"; "
        "a compiled Atari policy leaves its uint8-to-float CAST on the CPU"),
    "data_type": Rule(
        UNSUPPORTED_DATA_TYPE, "quantize every tensor to int8/uint8 (full-integer post-training "
        "quantization with a representative dataset, or quantization-aware training)", INFERRED,
        "Coral models-intro: \"Tensor parameters are quantized (8-bit fixed-point numbers; int8 "
        "or uint8)\""),
    "int8_runtime": Rule(
        UNSUPPORTED_DATA_TYPE, "compile for Edge TPU runtime 12 or later (-m 12), or quantize to "
        "uint8", SEEN, "compiler 14.1 with -m 10 / -m 11 on an int8 model: \"CONV_2D 70 "
        "Operation is working on an unsupported data type\" (issue 222)"),
    "dynamic_shape": Rule(
        UNSPECIFIED_LIMITATION, "give the model a static input shape before converting (the "
        "compiler reports this as 'Model not quantized')", INFERRED,
        "Coral models-intro: \"Tensor sizes are constant at compile-time (no dynamic sizes)\"; "
        "a -1 batch of size 1 is mapped (compiler 15 and 16 logs of Keras CNNs with signature "
        "[-1,28,28,1] and [-1,32,32,3]: every op mapped)"),
    "rank": Rule(
        UNSUPPORTED_RANK, "reshape so that at most the 3 innermost dimensions are larger than 1 "
        "(batch 1)", SEEN, "a compiled super-resolution GAN: the rank-5 RESHAPE / TRANSPOSE of "
        "its pixel shuffle stay on the CPU; Coral models-intro: \"only the 3 innermost "
        "dimensions may have a size greater than 1\""),
    "row_size": Rule(
        UNSPECIFIED_LIMITATION, "cut the model before this op (compile with -i, see below) or "
        "lower the input resolution; the CPU runs it otherwise", SEEN,
        "compiler 16 logs of YOLOv8n: LOGISTIC on [1,80,8400] \"otherwise supported\" (640), "
        "on [1,80,2100] not (320); of YOLOv5n: RESHAPE to [1,4800,85]; the threshold itself "
        "is inferred (MAX_ROW_ELEMENTS)"),
    "transpose_size": Rule(
        UNSPECIFIED_LIMITATION, "cut the model before this op (compile with -i) or transpose a "
        "smaller tensor", SEEN, "compiler 16 log of YOLOv8n at 320: TRANSPOSE of [1,40,40,144] "
        "\"otherwise supported\", of [1,20,20,144] mapped; the threshold is inferred"),
    "reshape_size": Rule(
        UNSPECIFIED_LIMITATION, "cut the model before this op (compile with -i) or reshape a "
        "smaller tensor", SEEN, "compiler 16 log of YOLOv5n at 640: RESHAPE of [1,80,80,255] "
        "\"otherwise supported\", of [1,40,40,255] mapped; Coral: \"Certain reshapes might "
        "not be mapped for large tensor sizes\"; the threshold is inferred"),
    "fused_activation": Rule(
        UNSPECIFIED_LIMITATION, "apply the activation as a separate layer", INFERRED,
        "Coral models-intro: Concatenation, AveragePool2d, MaxPool2d \"No fused activation "
        "function\""),
    "limitation": Rule(
        UNSPECIFIED_LIMITATION, "change the layer's parameters as the reason says, or accept "
        "CPU execution", INFERRED, "Coral models-intro, supported-operations table"),
    "resize_scale": Rule(
        UNSPECIFIED_LIMITATION, "resize by an integer factor (or from a map larger than 1x1), "
        "or accept CPU execution", SEEN, "Coral's compiled DeepLab v3: the 1x1 -> 33x33 "
        "RESIZE_BILINEAR stays on the CPU"),
    "partition": Rule(
        MORE_THAN_ONE_SUBGRAPH, "fix the first op that stays on the CPU, cut the model there "
        "with -i, or compile with -a (--enable_multiple_subgraphs, experimental)", SEEN,
        "compiler 16 log of a dense autoencoder: \"FULLY_CONNECTED 1 More than one subgraph "
        "is not supported\" after a LEAKY_RELU"),
    "intermediate_tensors": Rule(
        MORE_THAN_ONE_SUBGRAPH, "name later tensors with -i to keep more on the Edge TPU",
        INFERRED, "edgetpu_compiler -i: \"All operators following these tensors will not be "
        "compiled for the Edge TPU\" (coral.ai/docs/edgetpu/compiler)"),
}

#: Ops that a real compile mapped (the pairs of ``../shared/data``: Coral's classifiers and
#: DeepLab, YOLO, MNIST, audio, OCR, RL and GAN models people compiled). An op mapped by a
#: rule but never seen mapped gets ``confidence: inferred``.
SEEN_MAPPED = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED", "LOGISTIC", "MAX_POOL_2D", "MEAN", "MUL", "PAD", "PRELU", "QUANTIZE",
    "RESHAPE", "RESIZE_NEAREST_NEIGHBOR", "SOFTMAX", "SPLIT", "STRIDED_SLICE", "TANH",
    "TRANSPOSE", "UNIDIRECTIONAL_SEQUENCE_LSTM",
})

_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH",
                5: "SIGN_BIT", 6: "SIGMOID"}
_EIGHT_BIT = {"INT8", "UINT8"}


@dataclass(frozen=True)
class OpVerdict:
    """The prediction for one operator (``opcode`` as in the compiler's table).

    ``rule`` is the key of :data:`RULES` that decided it; ``confidence`` is ``seen`` when a
    real compile showed that outcome, ``inferred`` when it rests on documents or reasoning.
    """

    index: int
    opcode: str
    version: int
    mapped: bool
    status: str
    reason: str = ""
    fix: str = ""
    custom: bool = False
    rule: str = "mapped"
    confidence: str = SEEN

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as JSON-ready data."""
        return {"index": self.index, "opcode": self.opcode, "version": self.version,
                "mapped": self.mapped, "status": self.status, "reason": self.reason,
                "fix": self.fix, "rule": self.rule, "confidence": self.confidence}


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


def analyze_model(path: ModelSource, enable_multiple_subgraphs: bool = False, *,
                  compiler_version: str | None = None, min_runtime_version: int | None = None,
                  intermediate_tensors: Iterable[str] = (),
                  any_op_version: bool = False) -> Analysis:
    """Predict, op by op, what ``edgetpu_compiler`` does with a ``.tflite`` model.

    Args:
        path: a ``.tflite`` file (or a model's bytes); a compiled ``*_edgetpu.tflite`` is
            described instead.
        enable_multiple_subgraphs: predict for ``edgetpu_compiler -a`` (no single-partition
            rule).
        compiler_version: the compiler release ("16.0", "15", "2.1" ...); default the current.
        min_runtime_version: the ``-m`` value; default the release's newest runtime.
        intermediate_tensors: the ``-i`` tensor names: ops after them stay on the CPU.
        any_op_version: predict as if the model had been converted by a TFLite converter the
            compiler reads (op versions are not checked): what a current converter's output
            would map once converted with TF 2.5-2.8.

    Returns:
        An :class:`Analysis` with one :class:`OpVerdict` per operator of the main subgraph.

    Raises:
        BadInputError: the file is missing or not a valid TFLite model, the version is
            unknown, or an ``-i`` tensor is not in the model.
    """
    release = find_release(compiler_version)
    runtime = target_runtime(release, min_runtime_version)
    model = read_model(path)
    if model.is_compiled:
        return _describe_compiled(model)
    cut = _tensor_indices(model, intermediate_tensors)
    verdicts = []
    for op in model.operators:
        try:
            verdicts.append(_judge(model, op, runtime, any_op_version))
        except (IndexError, KeyError) as exc:  # an op without the inputs its kind has
            raise BadInputError(f"{model.path}: operator {op.index} ({op.opcode}) lacks "
                                "inputs or outputs its kind needs; corrupt model, export it "
                                "again") from exc
    if cut:
        verdicts = _after_intermediate_tensors(model, verdicts, cut)
    single = _single_partition(model, verdicts)
    if not enable_multiple_subgraphs:
        verdicts = single
    summary = _summary(model, verdicts, release, runtime)
    summary["suggested_intermediate_tensors"] = _suggest_cut(model, single)
    summary["partitioned"] = any(v.rule == "partition" for v in single)
    summary["next_step"] = _next_step(model, summary, enable_multiple_subgraphs)
    return Analysis(model.path, False, verdicts, summary)


def compiler_table(ops: list[OpVerdict], custom_names: bool = False) -> list[tuple[str, int, str]]:
    """Group verdicts as the compiler's log does: ``(operator, count, status)`` rows.

    Custom ops are named ``CUSTOM`` as the compiler does, or by their code with
    ``custom_names`` (for compiled models, where ``edgetpu-custom-op`` is the interesting one).
    """
    counts: Counter[tuple[str, str]] = Counter()
    for op in ops:
        counts[(_table_name(op, custom_names), op.status)] += 1
    return [(name, count, status) for (name, status), count in counts.items()]


def format_table(rows: list[tuple[str, int, str]], inferred: set[tuple[str, str]] = frozenset()
                 ) -> str:
    """Return rows in the compiler's fixed-width ``Operator  Count  Status`` format.

    Rows in ``inferred`` (``(operator, status)``) get a trailing ``*``.
    """
    lines = [f"{'Operator':<30} {'Count':<10} Status", ""]
    lines += [f"{name:<30} {count:<10} {status}" + (" *" if (name, status) in inferred else "")
              for name, count, status in rows]
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
    else:
        lines.append(f"Predicted for edgetpu_compiler {s['compiler_version']}, Edge TPU "
                     f"runtime {s['runtime_version']}")
    inferred = {(_table_name(op, analysis.compiled), op.status) for op in analysis.ops
                if op.confidence == INFERRED}
    lines += ["", format_table(compiler_table(analysis.ops, analysis.compiled), inferred)]
    if inferred:
        lines.append("* rests on an inferred rule (not seen in a real compile)")
    lines.append("")
    lines.append(f"Operations: {s['ops']}, on the Edge TPU: {s['mapped']}, "
                 f"on the CPU: {s['on_cpu']}; parameters: {s['parameter_bytes']:,} bytes")
    if s.get("compile_error"):
        lines.append(f"Predicted compilation failure: {s['compile_error']}")
    problems = [op for op in analysis.ops if not op.mapped and op.reason
                and op.status != MORE_THAN_ONE_SUBGRAPH]
    followers = [op for op in analysis.ops if op.status == MORE_THAN_ONE_SUBGRAPH]
    if problems or followers:
        lines += ["", "Why and what to do:"]
        lines += [f"  op {op.index} {op.opcode} v{op.version}: {op.reason}"
                  + (f"\n      fix: {op.fix}" if op.fix else "") for op in problems]
    if followers:
        listed = ", ".join(f"{op.index} {op.opcode}" for op in followers)
        lines.append(f"  ops {listed}: supported, but after the end of the Edge TPU part (one "
                     f"Edge TPU subgraph only)\n      fix: {RULES['partition'].fix}")
    if s.get("next_step"):
        lines += ["", f"Next: {s['next_step']}"]
    return "\n".join(lines)


def _table_name(op: OpVerdict, custom_names: bool) -> str:
    return "CUSTOM" if op.custom and not custom_names else op.opcode


# --- rules --------------------------------------------------------------------------------

#: A rule check: None when the op passes, else (key of RULES, reason).
_Check = Callable[[Model, Operator], "tuple[str, str] | None"]


def _judge(model: Model, op: Operator, runtime: int, any_op_version: bool = False
           ) -> OpVerdict:
    def verdict(rule_key: str, reason: str, confidence: str | None = None) -> OpVerdict:
        rule = RULES[rule_key]
        return OpVerdict(op.index, op.opcode, op.version, False, rule.status, reason, rule.fix,
                         op.custom, rule_key, confidence or rule.confidence)

    if op.custom:
        if op.opcode == DETECTION_POSTPROCESS:
            return verdict("detection_postprocess", "the SSD post-processing custom op runs on "
                           "the CPU by design (float outputs)")
        return verdict("custom_op", f"custom op {op.opcode!r} has no Edge TPU implementation")
    highest = COMPILER_MAX_OP_VERSIONS.get(op.opcode)
    if any_op_version:
        highest = max(highest or 0, op.version) if op.opcode in _OP_CHECKS else highest
    if highest is None:
        return verdict("op_version", f"{op.opcode} is newer than the compiler's TFLite parser "
                       "(TF 2.5); the compilation would fail")
    if op.version > highest:
        return verdict("op_version", f"op version {op.version} is newer than the compiler's "
                       f"(at most {highest}); the compilation would fail")
    if op.opcode == "DEQUANTIZE":
        return verdict("dequantize", "DEQUANTIZE produces float data, which the Edge TPU does "
                       "not compute")
    if op.opcode == "QUANTIZE" and model.tensors[op.inputs[0]].dtype not in _EIGHT_BIT:
        return verdict("float_quantize", "QUANTIZE of a float input: the compiler leaves it on "
                       "the CPU")
    if op.opcode not in _OP_CHECKS:
        return verdict("not_edgetpu_op", f"{op.opcode} is not an Edge TPU operation",
                       SEEN if op.opcode in SEEN_NOT_SUPPORTED else INFERRED)
    needed = OP_MIN_RUNTIME.get(op.opcode, 0)
    if needed > runtime:
        return verdict("runtime_version", f"{op.opcode} needs Edge TPU runtime {needed}; this "
                       f"compilation targets runtime {runtime}",
                       SEEN if op.opcode in OP_MIN_RUNTIME_SEEN else INFERRED)
    for check in (_check_types, _check_shapes, _OP_CHECKS[op.opcode]):
        found = check(model, op)
        if found:
            return verdict(*found)
    if runtime < INT8_MIN_RUNTIME and any(t.dtype == "INT8" for t in _activations(model, op)):
        return verdict("int8_runtime", f"int8 tensors need Edge TPU runtime {INT8_MIN_RUNTIME} "
                       f"or later; this compilation targets runtime {runtime}")
    confidence = SEEN if op.opcode in SEEN_MAPPED else INFERRED
    return OpVerdict(op.index, op.opcode, op.version, True, MAPPED, confidence=confidence)


#: Ops a real compile reported as "Operation not supported" or left on the CPU for that reason.
SEEN_NOT_SUPPORTED = frozenset({"LEAKY_RELU", "CAST", "ARG_MAX", "HARD_SWISH", "GATHER_ND",
                                "FLOOR_MOD"})


def _activations(model: Model, op: Operator) -> list[Tensor]:
    return [model.tensors[i] for i in op.inputs + op.outputs
            if i >= 0 and not model.tensors[i].is_constant]


def _check_types(model: Model, op: Operator) -> tuple[str, str] | None:
    for tensor in _activations(model, op):
        allowed = _EIGHT_BIT | ({"INT16"} if tensor.is_variable else set())
        if tensor.dtype not in allowed:
            return ("data_type", f"tensor {tensor.name!r} is {tensor.dtype}; the Edge TPU "
                    "computes on 8-bit quantized tensors only")
        if not tensor.quantized:
            return ("data_type", f"tensor {tensor.name!r} has no quantization parameters")
    allowed_constants = _EIGHT_BIT | {"INT32", "INT64"}  # weights; biases, shapes, axes
    constants = [t for t in model.constant_inputs(op) if t.dtype not in allowed_constants]
    if constants:
        return ("data_type", f"constant {constants[0].name!r} is {constants[0].dtype}")
    return None


def _check_shapes(model: Model, op: Operator) -> tuple[str, str] | None:
    for tensor in _activations(model, op):
        if is_dynamic_for_compiler(tensor):
            return ("dynamic_shape", f"tensor {tensor.name!r} has a dynamic shape "
                    f"{list(tensor.signature)}")
        if len(tensor.shape) > 3 and any(d > 1 for d in tensor.shape[:-3]):
            return ("rank", f"tensor {tensor.name!r} has shape {list(tensor.shape)}: more than "
                    "the 3 innermost dimensions are larger than 1")
        row = _row_elements(tensor)
        if row > MAX_ROW_ELEMENTS:
            return ("row_size", f"tensor {tensor.name!r} {list(tensor.shape)} has {row:,} "
                    f"elements in its two innermost dimensions (at most {MAX_ROW_ELEMENTS:,} "
                    "map)")
    return None


def is_dynamic_for_compiler(tensor: Tensor) -> bool:
    """True when the compiler sees an unknown dimension; a -1 batch of size 1 it compiles.

    Converters write ``shape_signature`` [-1, H, W, C] with ``shape`` [1, H, W, C] for every
    Keras model whose batch is None; compilers 15 and 16 map those (rule ``dynamic_shape``).
    """
    if any(d <= 0 for d in tensor.shape):
        return True
    signature = tensor.signature
    return any(d < 0 for d in signature[1:]) or (
        bool(signature) and signature[0] < 0 and tensor.shape[0] != 1)


def _row_elements(tensor: Tensor) -> int:
    """Elements of the two innermost dimensions (one row of the Edge TPU's y/x/z layout)."""
    row = 1
    for dim in tensor.shape[-2:]:
        row *= dim
    return row


def _no_check(model: Model, op: Operator) -> None:
    return None


def _fused_activation(model: Model, op: Operator) -> tuple[str, str] | None:
    activation = op.options.get("FusedActivationFunction", 0)
    if activation:
        return ("fused_activation", f"{op.opcode} has a fused "
                f"{_ACTIVATIONS.get(activation, activation)} activation")
    return None


def _conv(model: Model, op: Operator) -> tuple[str, str] | None:
    h, w = op.options.get("DilationHFactor", 1), op.options.get("DilationWFactor", 1)
    if h != w:
        return ("limitation", f"dilation differs in y and x ({h} vs {w})")
    return None


def _fully_connected(model: Model, op: Operator) -> tuple[str, str] | None:
    if op.options.get("WeightsFormat", 0) != 0:
        return ("limitation", "weights are not in the default format")
    out = model.tensors[op.outputs[0]].shape
    if sum(d > 1 for d in out) > 1:
        return ("limitation", f"output {list(out)} is not 1-D (batch 1)")
    return None


def _softmax(model: Model, op: Operator) -> tuple[str, str] | None:
    tensor = model.activation_inputs(op)[0]
    depth = tensor.shape[-1] if tensor.shape else 1
    if depth > SOFTMAX_MAX_ELEMENTS:
        return ("limitation", f"softmax over {depth} elements (at most "
                f"{SOFTMAX_MAX_ELEMENTS})")
    return None


def _size_limit(rule: str, limit: int) -> _Check:
    """A check that the op's input has at most ``limit`` elements (rule ``rule``)."""
    def check(model: Model, op: Operator) -> tuple[str, str] | None:
        tensor = model.activation_inputs(op)[0]
        if tensor.size > limit:
            return (rule, f"{op.opcode} of {tensor.size:,} elements (at most {limit:,} map)")
        return None

    return check


def _strided_slice(model: Model, op: Operator) -> tuple[str, str] | None:
    if op.options.get("EllipsisMask", 0) or op.options.get("NewAxisMask", 0):
        return ("limitation", "ellipsis or new-axis mask is set")
    strides = _constant_ints(model, op, 3)
    if strides is None or any(s != 1 for s in strides):
        return ("limitation", f"strides {strides} are not all 1")
    return None


def _mean(model: Model, op: Operator) -> tuple[str, str] | None:
    axes = _constant_ints(model, op, 1)
    rank = len(model.tensors[op.inputs[0]].shape)
    if axes is None or any(a % max(rank, 1) == 0 for a in axes):
        return ("limitation", f"reduces over the batch dimension (axes {axes})")
    if rank == 4 and any(a % rank == 3 for a in axes):
        return ("limitation", f"reduces over channels (axes {axes}); only y and/or "
                "x reductions map")
    return None


def _squeeze(model: Model, op: Operator) -> tuple[str, str] | None:
    shape = model.tensors[op.inputs[0]].shape
    axes = op.options.get("SqueezeDims") or [i for i, d in enumerate(shape) if d == 1]
    leading = next((i for i, d in enumerate(shape) if d != 1), len(shape))
    if any(a % max(len(shape), 1) >= leading for a in axes):
        return ("limitation", f"squeezes dimensions {axes} of {list(shape)}, not only "
                "leading dimensions of size 1")
    return None


def _resize(model: Model, op: Operator) -> tuple[str, str] | None:
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
            return ("resize_scale", f"resize {source[1]}x{source[2]} -> "
                    f"{target[1]}x{target[2]}{' with align_corners' if align else ''} is not an "
                    "integer scale; the compiler keeps it on the CPU for precision")
    return None


def _concatenation(model: Model, op: Operator) -> tuple[str, str] | None:
    """No fused activation; a constant input only as one of 2 inputs, all zeros (padding)."""
    found = _fused_activation(model, op)
    if found:
        return found
    constants = model.constant_inputs(op)
    if constants and (len(op.inputs) != 2 or not constants[0].is_zero):
        return ("limitation", f"constant input {constants[0].name!r} "
                + ("is not all zeros" if len(op.inputs) == 2 else
                   f"among {len(op.inputs)} inputs (only a 2-input zero padding maps)"))
    return None


def _pad(model: Model, op: Operator) -> tuple[str, str] | None:
    """No padding of the batch dimension (paddings [rank, 2], row 0 is the batch)."""
    paddings = _constant_ints(model, op, 1)
    if paddings and len(model.tensors[op.inputs[0]].shape) == 4 and any(paddings[:2]):
        return ("limitation", f"pads the batch dimension ({paddings[:2]})")
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
         "PRELU", "TRANSPOSE_CONV", "SUM", "REDUCE_MAX", "REDUCE_MIN", "SPLIT",
         "UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM", "RSQRT", "SQUARED_DIFFERENCE"), _no_check),
    "PAD": _pad,
    "RESHAPE": _size_limit("reshape_size", RESHAPE_MAX_ELEMENTS),
    "TRANSPOSE": _size_limit("transpose_size", TRANSPOSE_MAX_ELEMENTS),
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
            verdict = _moved_to_cpu(op, "partition", "fed by an op that runs on the CPU after "
                                    "the Edge TPU part (single Edge TPU subgraph)")
        if verdict.mapped:
            after_tpu.update(op.outputs)
        elif any(i in after_tpu or i in split for i in ins):
            split.update(op.outputs)
        result.append(verdict)
    return result


def _after_intermediate_tensors(model: Model, verdicts: list[OpVerdict],
                                cut: set[int]) -> list[OpVerdict]:
    """Put every op that reads (directly or not) an ``-i`` tensor on the CPU."""
    downstream = set(cut)
    result = []
    for op, verdict in zip(model.operators, verdicts, strict=True):
        if any(i in downstream for i in op.inputs):
            downstream.update(op.outputs)
            if verdict.mapped:
                verdict = _moved_to_cpu(op, "intermediate_tensors", "after a tensor named "
                                        "with -i/--intermediate-tensors")
        result.append(verdict)
    return result


def _moved_to_cpu(op: Operator, rule_key: str, reason: str) -> OpVerdict:
    rule = RULES[rule_key]
    return OpVerdict(op.index, op.opcode, op.version, False, rule.status, reason, rule.fix,
                     op.custom, rule_key, rule.confidence)


def _tensor_indices(model: Model, names: Iterable[str]) -> set[int]:
    by_name = {t.name: t.index for t in model.tensors}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise BadInputError(f"{model.path}: no tensor named {missing[0]!r} for "
                            "-i/--intermediate-tensors; edgetpu-check --json lists the "
                            "suggested names")
    return {by_name[name] for name in names}


def _suggest_cut(model: Model, verdicts: list[OpVerdict]) -> list[str]:
    """The ``-i`` tensors that end the Edge TPU part where the prediction ends it.

    These are the tensors that Edge TPU ops hand to CPU ops which follow the Edge TPU part
    (the YOLO heads' reshapes, say); empty when nothing follows it on the CPU. The report
    suggests them only when supported ops are lost to the single-subgraph rule (a trailing
    DEQUANTIZE or post-processing op alone needs no cut).
    """
    mapped_outputs = {t for op, v in zip(model.operators, verdicts, strict=True) if v.mapped
                      for t in op.outputs}
    cut: list[int] = []
    for op, verdict in zip(model.operators, verdicts, strict=True):
        if verdict.mapped or verdict.rule not in _AFTER_TPU_RULES | {"partition"}:
            continue
        cut += [i for i in op.inputs if i in mapped_outputs and i not in cut]
    return [model.tensors[i].name for i in cut]


#: CPU verdicts that come from the op itself (not from its position in the graph).
_AFTER_TPU_RULES = frozenset({"not_edgetpu_op", "runtime_version", "row_size", "transpose_size",
                              "reshape_size", "fused_activation", "limitation", "resize_scale",
                              "rank", "custom_op", "data_type", "float_quantize", "dequantize",
                              "int8_runtime"})


def _next_step(model: Model, summary: dict[str, Any], multiple: bool) -> str:
    """One line: the change that makes the compilation work, or the -i cut to compile with."""
    error = summary["compile_error"]
    if error:
        return f"the compilation would fail ({error}); fix: {summary['compile_error_fix']}"
    cut = summary["suggested_intermediate_tensors"]
    if summary["partitioned"] and cut and not multiple:
        return ("keep the Edge TPU part whole and run the rest on the CPU: compile-edgetpu "
                f"{shlex.quote(str(model.path))} -i {shlex.quote(','.join(cut))}")
    return ""


def _summary(model: Model, verdicts: list[OpVerdict], release: CompilerRelease,
             runtime: int) -> dict[str, Any]:
    on_cpu = [v for v in verdicts if not v.mapped]
    params = sum(t.nbytes for t in _used_constants(model))
    mapped_params = sum(t.nbytes for op, v in zip(model.operators, verdicts, strict=True)
                        if v.mapped for t in model.constant_inputs(op))
    version_errors = [v for v in verdicts if v.rule == "op_version"]
    dynamic = [v for v in verdicts if v.rule == "dynamic_shape"]
    error = fix = None
    if version_errors:
        first = version_errors[0]
        error = (f"Didn't find op for builtin opcode '{first.opcode}' version "
                 f"'{first.version}' (model could not be parsed)")
        fix = first.fix
    elif dynamic:
        error = "Model not quantized (the real cause: a dynamic shape)"
        fix = dynamic[0].fix
    return {
        "compiler_version": release.version,
        "runtime_version": runtime,
        "ops": len(verdicts),
        "mapped": len(verdicts) - len(on_cpu),
        "on_cpu": len(on_cpu),
        "inferred_ops": sum(v.confidence == INFERRED for v in verdicts),
        "cpu_ops": dict(Counter(v.opcode for v in on_cpu)),
        "edgetpu_subgraphs": _count_tpu_subgraphs(model, verdicts),
        "parameter_bytes": params,
        "mapped_parameter_bytes": mapped_params,
        "model_bytes": model.file_bytes,
        "compile_error": error,
        "compile_error_fix": fix,
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
