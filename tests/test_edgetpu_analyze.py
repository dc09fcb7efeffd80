"""edgetpu.analyze and edgetpu-check: each rule on hand-built models, and the real pairs.

Hand-built models are written with LiteRT's flatbuffer object API (``schema_py_generated``):
a few tensors and ops, exactly the feature a rule looks at. The real pairs are Coral's source
models and what the real edgetpu_compiler made of them.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from hypothesis import given, settings
from hypothesis import strategies as st
from scripts_loader import load_script

from edgeq.errors import BadInputError
from edgetpu import analyze
from edgetpu.analyze import analyze_model
from edgetpu.cli.check import main as check_main
from edgetpu.tflite_model import read_model

#: Runs on the base install (no TensorFlow): the CI job for the Coral host.
pytestmark = pytest.mark.coral_host

PAIRS = [
    "mobilenet_v1_0.25_128_quant",
    "mobilenet_v1_0.5_160_quant",
    "mobilenet_v1_0.75_192_quant",
    "mobilenet_v1_1.0_224_quant_embedding_extractor",
    "keras_lstm_mnist_ptq",
    "deeplabv3_mnv2_dm05_pascal_quant",
]

_TYPES = {"FLOAT32": 0, "INT32": 2, "UINT8": 3, "INT64": 4, "INT16": 7, "INT8": 9}


def _tensor(name: str, shape: list[int], dtype: str = "INT8", *, data: bytes | None = None,
            signature: list[int] | None = None, variable: bool = False,
            quantized: bool = True, zero_point: int = 0) -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": dtype, "data": data,
            "signature": signature, "variable": variable, "quantized": quantized,
            "zero_point": zero_point}


def _op(opcode: str, inputs: list[int], outputs: list[int], *, version: int = 1,
        options: Any = None, custom: str | None = None) -> dict[str, Any]:
    return {"opcode": opcode, "inputs": inputs, "outputs": outputs, "version": version,
            "options": options, "custom": custom}


def build_model(path: Path, tensors: list[dict[str, Any]], ops: list[dict[str, Any]],
                inputs: list[int], outputs: list[int]) -> Path:
    """Write a one-subgraph .tflite with the given tensors and ops."""
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    graph = schema.SubGraphT()
    graph.tensors = []
    for spec in tensors:
        tensor = schema.TensorT()
        tensor.name = spec["name"]
        tensor.shape = np.array(spec["shape"], dtype=np.int32)
        if spec["signature"] is not None:
            tensor.shapeSignature = np.array(spec["signature"], dtype=np.int32)
        tensor.type = _TYPES[spec["dtype"]]
        tensor.isVariable = spec["variable"]
        if spec["quantized"] and spec["dtype"] != "FLOAT32":
            tensor.quantization = schema.QuantizationParametersT()
            tensor.quantization.scale = [0.02]
            tensor.quantization.zeroPoint = [spec["zero_point"]]
        buffer = schema.BufferT()
        if spec["data"] is not None:
            buffer.data = np.frombuffer(spec["data"], dtype=np.uint8)
            tensor.buffer = len(model.buffers)
            model.buffers.append(buffer)
        else:
            tensor.buffer = 0
        graph.tensors.append(tensor)
    codes: list[tuple[str, int, str | None]] = []
    graph.operators = []
    for spec in ops:
        key = (spec["opcode"], spec["version"], spec["custom"])
        if key not in codes:
            codes.append(key)
        op = schema.OperatorT()
        op.opcodeIndex = codes.index(key)
        op.inputs = spec["inputs"]
        op.outputs = spec["outputs"]
        if spec["options"] is not None:
            kind, options = spec["options"]
            op.builtinOptionsType = kind
            op.builtinOptions = options
        graph.operators.append(op)
    model.operatorCodes = []
    for name, version, custom in codes:
        code = schema.OperatorCodeT()
        value = getattr(schema.BuiltinOperator, name)
        code.builtinCode = value
        code.deprecatedBuiltinCode = min(value, 127)
        code.version = version
        if custom:
            code.customCode = custom
        model.operatorCodes.append(code)
    graph.inputs = inputs
    graph.outputs = outputs
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def _conv_model(tmp_path: Path, *, version: int = 1, dilation: tuple[int, int] = (1, 1),
                input_dtype: str = "INT8", signature: list[int] | None = None,
                shape: list[int] | None = None) -> Path:
    shape = shape or [1, 8, 8, 4]
    options = schema.Conv2DOptionsT()
    options.dilationHFactor, options.dilationWFactor = dilation
    tensors = [
        _tensor("input", shape, input_dtype, signature=signature),
        _tensor("weights", [4, 1, 1, 4], data=bytes(16)),
        _tensor("bias", [4], "INT32", data=bytes(16)),
        _tensor("output", shape),
    ]
    ops = [_op("CONV_2D", [0, 1, 2], [3], version=version,
               options=(schema.BuiltinOptions.Conv2DOptions, options))]
    return build_model(tmp_path / "conv.tflite", tensors, ops, [0], [3])


def _single(analysis: analyze.Analysis) -> analyze.OpVerdict:
    assert len(analysis.ops) == 1
    return analysis.ops[0]


def test_plain_conv_maps(tmp_path: Path) -> None:
    analysis = analyze_model(_conv_model(tmp_path))
    verdict = _single(analysis)
    assert verdict.mapped and verdict.status == analyze.MAPPED
    assert analysis.fully_mapped
    assert analysis.summary["parameter_bytes"] == 32


def test_op_version_above_the_compiler_fails_the_compilation(tmp_path: Path) -> None:
    ok = analyze_model(_conv_model(tmp_path, version=analyze.COMPILER_MAX_OP_VERSIONS["CONV_2D"]))
    assert ok.fully_mapped
    analysis = analyze_model(_conv_model(tmp_path, version=6))
    verdict = _single(analysis)
    assert verdict.status == analyze.VERSION_NOT_SUPPORTED
    assert "version 6" in verdict.reason
    assert "CONV_2D" in analysis.summary["compile_error"]
    assert not analysis.fully_mapped


def test_any_op_version_predicts_an_older_converters_output(tmp_path: Path) -> None:
    path = _conv_model(tmp_path, version=6)
    verdict = _single(analyze_model(path, any_op_version=True))
    assert verdict.mapped
    tensors = [_tensor("x", [1, 16]), _tensor("y", [1, 16])]
    gelu = build_model(tmp_path / "gelu.tflite", tensors, [_op("GELU", [0], [1])], [0], [1])
    assert _single(analyze_model(gelu, any_op_version=True)).rule == "op_version"


def test_float_input_is_an_unsupported_data_type(tmp_path: Path) -> None:
    verdict = _single(analyze_model(_conv_model(tmp_path, input_dtype="FLOAT32")))
    assert verdict.status == analyze.UNSUPPORTED_DATA_TYPE and "FLOAT32" in verdict.reason


def test_int16_activation_is_unsupported(tmp_path: Path) -> None:
    verdict = _single(analyze_model(_conv_model(tmp_path, input_dtype="INT16")))
    assert verdict.status == analyze.UNSUPPORTED_DATA_TYPE and "INT16" in verdict.reason


def test_dynamic_spatial_dims_predict_model_not_quantized(tmp_path: Path) -> None:
    analysis = analyze_model(_conv_model(tmp_path, signature=[1, -1, -1, 4]))
    assert "dynamic shape" in _single(analysis).reason
    assert "Model not quantized" in analysis.summary["compile_error"]
    assert "static input shape" in analysis.summary["next_step"]


def test_batch_above_one_is_an_unsupported_rank(tmp_path: Path) -> None:
    verdict = _single(analyze_model(_conv_model(tmp_path, shape=[2, 8, 8, 4])))
    assert verdict.status == analyze.UNSUPPORTED_RANK


def test_unequal_dilation_is_not_mapped(tmp_path: Path) -> None:
    verdict = _single(analyze_model(_conv_model(tmp_path, dilation=(2, 1))))
    assert verdict.status == analyze.UNSPECIFIED_LIMITATION and "dilation" in verdict.reason
    assert _single(analyze_model(_conv_model(tmp_path, dilation=(2, 2)))).mapped


@pytest.mark.parametrize("opcode", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
def test_pool_with_fused_activation_is_not_mapped(tmp_path: Path, opcode: str) -> None:
    def model(activation: int) -> Path:
        options = schema.Pool2DOptionsT()
        options.filterHeight = options.filterWidth = 2
        options.fusedActivationFunction = activation
        tensors = [_tensor("x", [1, 4, 4, 8]), _tensor("y", [1, 2, 2, 8])]
        ops = [_op(opcode, [0], [1], options=(schema.BuiltinOptions.Pool2DOptions, options))]
        return build_model(tmp_path / f"pool{activation}.tflite", tensors, ops, [0], [1])

    assert _single(analyze_model(model(0))).mapped
    verdict = _single(analyze_model(model(3)))
    assert not verdict.mapped and "RELU6" in verdict.reason


def test_concatenation_with_fused_activation_is_not_mapped(tmp_path: Path) -> None:
    options = schema.ConcatenationOptionsT()
    options.axis = 3
    options.fusedActivationFunction = 1
    tensors = [_tensor("a", [1, 2, 2, 4]), _tensor("b", [1, 2, 2, 4]), _tensor("c", [1, 2, 2, 8])]
    ops = [_op("CONCATENATION", [0, 1], [2],
               options=(schema.BuiltinOptions.ConcatenationOptions, options))]
    verdict = _single(analyze_model(build_model(tmp_path / "c.tflite", tensors, ops, [0, 1], [2])))
    assert not verdict.mapped and "RELU" in verdict.reason


@pytest.mark.parametrize(("elements", "mapped"), [(1001, True), (16001, False)])
def test_softmax_size_limit(tmp_path: Path, elements: int, mapped: bool) -> None:
    tensors = [_tensor("x", [1, elements]), _tensor("y", [1, elements])]
    ops = [_op("SOFTMAX", [0], [1], options=(schema.BuiltinOptions.SoftmaxOptions,
                                             schema.SoftmaxOptionsT()))]
    verdict = _single(analyze_model(build_model(tmp_path / "s.tflite", tensors, ops, [0], [1])))
    assert verdict.mapped is mapped


def _int32(values: list[int]) -> bytes:
    return np.array(values, dtype="<i4").tobytes()


@pytest.mark.parametrize(("strides", "mapped"), [([1, 1, 1, 1], True), ([1, 2, 2, 1], False)])
def test_strided_slice_needs_unit_strides(tmp_path: Path, strides: list[int],
                                          mapped: bool) -> None:
    tensors = [
        _tensor("x", [1, 8, 8, 4]),
        _tensor("begin", [4], "INT32", data=_int32([0, 0, 0, 0])),
        _tensor("end", [4], "INT32", data=_int32([1, 8, 8, 4])),
        _tensor("strides", [4], "INT32", data=_int32(strides)),
        _tensor("y", [1, 4, 4, 4]),
    ]
    ops = [_op("STRIDED_SLICE", [0, 1, 2, 3], [4], options=(
        schema.BuiltinOptions.StridedSliceOptions, schema.StridedSliceOptionsT()))]
    verdict = _single(analyze_model(build_model(tmp_path / "ss.tflite", tensors, ops, [0], [4])))
    assert verdict.mapped is mapped


@pytest.mark.parametrize(("axes", "mapped"), [([1, 2], True), ([0], False)])
def test_mean_over_batch_is_not_mapped(tmp_path: Path, axes: list[int], mapped: bool) -> None:
    tensors = [
        _tensor("x", [1, 7, 7, 16]),
        _tensor("axes", [len(axes)], "INT32", data=_int32(axes)),
        _tensor("y", [1, 16]),
    ]
    ops = [_op("MEAN", [0, 1], [2], options=(schema.BuiltinOptions.ReducerOptions,
                                             schema.ReducerOptionsT()))]
    verdict = _single(analyze_model(build_model(tmp_path / "m.tflite", tensors, ops, [0], [2])))
    assert verdict.mapped is mapped


def test_fully_connected_shuffled_weights_are_not_mapped(tmp_path: Path) -> None:
    options = schema.FullyConnectedOptionsT()
    options.weightsFormat = 1
    tensors = [_tensor("x", [1, 16]), _tensor("w", [4, 16], data=bytes(64)), _tensor("y", [1, 4])]
    ops = [_op("FULLY_CONNECTED", [0, 1, -1], [2],
               options=(schema.BuiltinOptions.FullyConnectedOptions, options))]
    verdict = _single(analyze_model(build_model(tmp_path / "fc.tflite", tensors, ops, [0], [2])))
    assert not verdict.mapped and "format" in verdict.reason


def test_dequantize_works_on_an_unsupported_data_type(tmp_path: Path) -> None:
    tensors = [_tensor("q", [1, 10]), _tensor("f", [1, 10], "FLOAT32")]
    ops = [_op("DEQUANTIZE", [0], [1], version=2)]
    verdict = _single(analyze_model(build_model(tmp_path / "dq.tflite", tensors, ops, [0], [1])))
    assert verdict.status == analyze.UNSUPPORTED_DATA_TYPE and "float" in verdict.reason


def _concat(tmp_path: Path, constant: bytes, zero_point: int, inputs: int = 2) -> Path:
    tensors = [_tensor("a", [1, 2, 2, 4]),
               _tensor("pad", [1, 2, 2, 4], "UINT8", data=constant, zero_point=zero_point)]
    tensors += [_tensor(f"b{i}", [1, 2, 2, 4]) for i in range(inputs - 2)]
    tensors.append(_tensor("out", [1, 2, 2, 4 * inputs]))
    ops = [_op("CONCATENATION", list(range(inputs)), [inputs],
               options=(schema.BuiltinOptions.ConcatenationOptions,
                        schema.ConcatenationOptionsT()))]
    return build_model(tmp_path / f"concat{inputs}_{zero_point}.tflite", tensors, ops,
                       [0] + list(range(2, inputs)), [inputs])


def test_concatenation_with_a_constant_must_be_a_zero_padding(tmp_path: Path) -> None:
    zeros = bytes([128] * 16)  # uint8 at zero point 128: real zeros
    assert _single(analyze_model(_concat(tmp_path, zeros, 128))).mapped
    nonzero = _single(analyze_model(_concat(tmp_path, zeros, 0)))  # 128 at zero point 0
    assert nonzero.status == analyze.UNSPECIFIED_LIMITATION and "all zeros" in nonzero.reason
    three = _single(analyze_model(_concat(tmp_path, zeros, 128, inputs=3)))
    assert not three.mapped and "3 inputs" in three.reason


def test_mean_over_channels_is_not_mapped(tmp_path: Path) -> None:
    tensors = [_tensor("x", [1, 7, 7, 16]), _tensor("axes", [1], "INT32", data=_int32([3])),
               _tensor("y", [1, 7, 7])]
    ops = [_op("MEAN", [0, 1], [2], options=(schema.BuiltinOptions.ReducerOptions,
                                             schema.ReducerOptionsT()))]
    verdict = _single(analyze_model(build_model(tmp_path / "mc.tflite", tensors, ops, [0], [2])))
    assert not verdict.mapped and "channels" in verdict.reason


@pytest.mark.parametrize(("paddings", "mapped"), [
    ([0, 0, 1, 1, 1, 1, 0, 0], True), ([1, 0, 1, 1, 1, 1, 0, 0], False)])
def test_pad_of_the_batch_dimension_is_not_mapped(tmp_path: Path, paddings: list[int],
                                                  mapped: bool) -> None:
    tensors = [_tensor("x", [1, 4, 4, 8]),
               _tensor("paddings", [4, 2], "INT64",
                       data=np.array(paddings, dtype="<i8").tobytes()),
               _tensor("y", [1 + paddings[0], 6, 6, 8])]
    ops = [_op("PAD", [0, 1], [2])]
    verdict = _single(analyze_model(build_model(tmp_path / "pad.tflite", tensors, ops, [0], [2])))
    assert verdict.mapped is mapped


def test_op_unknown_to_the_compiler_fails_the_compilation(tmp_path: Path) -> None:
    tensors = [_tensor("x", [1, 16]), _tensor("y", [1, 16])]
    ops = [_op("GELU", [0], [1])]  # TF 2.9: after the compiler's TFLite parser
    analysis = analyze_model(build_model(tmp_path / "gelu.tflite", tensors, ops, [0], [1]))
    assert _single(analysis).status == analyze.VERSION_NOT_SUPPORTED
    assert "GELU" in analysis.summary["compile_error"]


def test_hard_swish_is_not_an_edgetpu_op(tmp_path: Path) -> None:
    tensors = [_tensor("x", [1, 4, 4, 8]), _tensor("y", [1, 4, 4, 8])]
    ops = [_op("HARD_SWISH", [0], [1])]
    verdict = _single(analyze_model(build_model(tmp_path / "hs.tflite", tensors, ops, [0], [1])))
    assert verdict.status == analyze.NOT_SUPPORTED


def test_compiler_versions_cover_what_coral_compiled(shared_data: Path) -> None:
    """Every op version in Coral's compiled models is one the table accepts."""
    coral = shared_data / "coral"
    for name in PAIRS + ["mobilenet_v2_1.0_224_quant", "tf2_mobilenet_v2_1.0_224_ptq"]:
        for op in read_model(coral / f"{name}.tflite").operators:
            if not op.custom:
                assert op.version <= analyze.COMPILER_MAX_OP_VERSIONS[op.opcode], (name, op)


def _chain(tmp_path: Path, middle: str) -> Path:
    """input -> ADD -> <middle> -> ADD -> output."""
    tensors = [_tensor(f"t{i}", [1, 4, 4, 8]) for i in range(4)]
    ops = [_op("ADD", [0, 0], [1]), _op(middle, [1], [2]), _op("ADD", [2, 2], [3])]
    return build_model(tmp_path / f"chain_{middle}.tflite", tensors, ops, [0], [3])


def test_single_partition_rule_and_flag_a(tmp_path: Path) -> None:
    path = _chain(tmp_path, "FLOOR")
    analysis = analyze_model(path)
    assert [op.status for op in analysis.ops] == [
        analyze.MAPPED, analyze.NOT_SUPPORTED, analyze.MORE_THAN_ONE_SUBGRAPH]
    assert analysis.cpu_ops == Counter({"FLOOR": 1, "ADD": 1})
    several = analyze_model(path, enable_multiple_subgraphs=True)
    assert several.cpu_ops == Counter({"FLOOR": 1})
    assert several.summary["edgetpu_subgraphs"] == 2


def test_cpu_op_before_the_edgetpu_part_does_not_split(tmp_path: Path) -> None:
    tensors = [_tensor("f", [1, 4, 4, 8], "FLOAT32"), _tensor("q", [1, 4, 4, 8]),
               _tensor("y", [1, 4, 4, 8])]
    ops = [_op("QUANTIZE", [0], [1]), _op("ADD", [1, 1], [2])]
    analysis = analyze_model(build_model(tmp_path / "q.tflite", tensors, ops, [0], [2]))
    assert [op.mapped for op in analysis.ops] == [False, True]


def test_trailing_detection_postprocess_is_expected(tmp_path: Path) -> None:
    tensors = [_tensor("x", [1, 10, 4]), _tensor("y", [1, 10, 4]),
               _tensor("boxes", [1, 10, 4], "FLOAT32")]
    ops = [_op("RESHAPE", [0], [1]),
           _op("CUSTOM", [1], [2], custom="TFLite_Detection_PostProcess")]
    analysis = analyze_model(build_model(tmp_path / "ssd.tflite", tensors, ops, [0], [2]))
    assert analysis.cpu_ops == Counter({"TFLite_Detection_PostProcess": 1})
    assert analysis.fully_mapped
    assert analysis.to_json()["ops"][1]["opcode"] == "TFLite_Detection_PostProcess"
    assert ("CUSTOM", 1, analysis.ops[1].status) in analyze.compiler_table(analysis.ops)


@pytest.mark.parametrize("name", PAIRS)
def test_real_pairs_cpu_ops_match_the_compiler(shared_data: Path, name: str) -> None:
    coral = shared_data / "coral"
    predicted = analyze_model(coral / f"{name}.tflite")
    compiled = analyze_model(coral / f"{name}_edgetpu.tflite")
    assert compiled.compiled
    assert predicted.cpu_ops == compiled.cpu_ops
    assert predicted.summary["on_cpu"] == compiled.summary["on_cpu"]


def test_deeplab_prediction_names_the_resize(shared_data: Path) -> None:
    analysis = analyze_model(shared_data / "coral" / "deeplabv3_mnv2_dm05_pascal_quant.tflite")
    first = next(op for op in analysis.ops if not op.mapped)
    assert first.opcode == "RESIZE_BILINEAR" and "1x1 -> 33x33" in first.reason
    assert not analysis.fully_mapped


def test_compiled_pipeline_segment(shared_data: Path) -> None:
    path = (shared_data / "coral" / "pipeline"
            / "ssd_mobilenet_v2_coco_quant_postprocess_segment_1_of_2_edgetpu.tflite")
    analysis = analyze_model(path)
    assert analysis.compiled
    assert analysis.summary["segment"] == [1, 2]
    assert analysis.cpu_ops == Counter({"DEQUANTIZE": 2, "TFLite_Detection_PostProcess": 1})
    model = read_model(path)
    assert 0 < analysis.summary["edgetpu_payload_bytes"] == model.edgetpu_payload_bytes
    assert model.edgetpu_payload_bytes < path.stat().st_size


def test_tf2_ptq_and_ssd_map_fully(shared_data: Path) -> None:
    assert analyze_model(shared_data / "coral" / "tf2_mobilenet_v2_1.0_224_ptq.tflite").fully_mapped
    ssd = analyze_model(
        shared_data / "models" / "ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite")
    assert ssd.fully_mapped and ssd.summary["on_cpu"] == 1


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such model file"),
    (b"", "empty"),
    (b"hello world, not a model at all", "TFL3"),
])
def test_bad_files_are_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 content: bytes | None, message: str) -> None:
    path = tmp_path / "model.tflite"
    if content is not None:
        path.write_bytes(content)
    assert check_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err


def test_flatbuffer_of_another_format_is_named(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    builder = flatbuffers.Builder(64)
    builder.StartObject(1)
    builder.PrependInt32Slot(0, 7, 0)
    builder.Finish(builder.EndObject(), file_identifier=b"ABCD")
    path = tmp_path / "other.tflite"
    path.write_bytes(bytes(builder.Output()))
    assert check_main([str(path)]) == 2
    assert "another format (file identifier 'ABCD')" in capsys.readouterr().err
    (tmp_path / "noise.tflite").write_bytes(bytes(range(256)) * 4)
    assert check_main([str(tmp_path / "noise.tflite")]) == 2
    assert "not a flatbuffer" in capsys.readouterr().err


def test_truncated_model_is_bad_input(shared_data: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = (shared_data / "coral" / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    for cut in (len(data) // 2, 64):
        path = tmp_path / f"cut{cut}.tflite"
        path.write_bytes(data[:cut])
        assert check_main([str(path)]) == 2
        assert "truncated" in capsys.readouterr().err


@settings(max_examples=150, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1,
                      max_size=12),
       cut=st.one_of(st.none(), st.integers(8, 10**9)))
def test_corrupt_models_are_bad_input_never_a_crash(shared_data: Path, edits: list,
                                                    cut: int | None) -> None:
    """Random byte edits and truncations give a result or BadInputError, nothing else."""
    data = bytearray((shared_data / "coral" / "keras_lstm_mnist_ptq.tflite").read_bytes())
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        path.write_bytes(bytes(data))
        try:
            analyze_model(path)
        except BadInputError as exc:
            assert str(path) in str(exc)


def test_check_cli_json_and_exit_codes(shared_data: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    coral = shared_data / "coral"
    assert check_main([str(coral / "mobilenet_v1_0.25_128_quant.tflite"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"ops", "summary"}
    assert set(data["ops"][0]) >= {"index", "opcode", "mapped", "status", "reason"}
    assert data["summary"]["on_cpu"] == 0 and data["summary"]["parameter_bytes"] > 0
    assert check_main([str(coral / "deeplabv3_mnv2_dm05_pascal_quant.tflite")]) == 1
    out = capsys.readouterr().out
    assert "Operator                       Count      Status" in out
    assert "More than one subgraph is not supported" in out and "fix:" in out
    assert check_main([str(coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")]) == 0
    assert "edgetpu-custom-op" in capsys.readouterr().out


def test_wild_pairs_and_logs_match_the_compiler(shared_data: Path) -> None:
    """Models people compiled (compilers 2.0 to 16.0): CPU ops and the logs' whole tables."""
    bench = load_script("bench_analyzer")
    pairs = bench.find_pairs(shared_data / "coral_wild")
    assert len(pairs) >= 18
    rows = [bench.compare(source, compiled) for source, compiled in pairs]
    assert [r["model"] for r in rows if not r["exact"]] == []
    logged = [r for r in rows if r["log"]]
    assert len(logged) >= 10
    assert [(r["model"], r["log_differences"]) for r in logged if not r["log_exact"]] == []
    assert any(r["flag_a"] for r in rows)  # the several-segment pair is predicted with -a


def test_yolo_head_gets_an_intermediate_tensor_cut(shared_data: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_data / "coral_wild" / "goalbuddy_yolov8n_320.tflite"
    analysis = analyze_model(path)
    cut = analysis.summary["suggested_intermediate_tensors"]
    assert cut and "-i" in analysis.summary["next_step"]
    with_cut = analyze_model(path, intermediate_tensors=cut)
    tpu = {op.index for op in analysis.ops if op.mapped}
    assert {op.index for op in with_cut.ops if op.mapped} == tpu
    assert check_main([str(path), "-i", ",".join(cut), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert {op["confidence"] for op in data["ops"]} <= {"seen", "inferred"}
    assert data["summary"]["compiler_version"] == "16.0"
    assert check_main([str(path), "--compiler-version", "15"]) == 1
    out = capsys.readouterr().out
    assert "edgetpu_compiler 15.0, Edge TPU runtime 13" in out
    assert "TRANSPOSE needs Edge TPU runtime 14" in out
