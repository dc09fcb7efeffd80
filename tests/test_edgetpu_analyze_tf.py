"""Edge TPU analyzer rules on small models built and converted by TensorFlow itself.

``tests/test_edgetpu_analyze.py`` checks each rule on hand-written flatbuffers; here every
model is a tiny Keras model converted with full-integer post-training quantization by the
installed TFLite converter, so the tests also pin what a real converter writes (op codes and
versions, the ``[-1, ...]`` shape signature of a ``None`` batch, float I/O QUANTIZE and
DEQUANTIZE) against what :func:`edgetpu.analyze.analyze_model` predicts for it. Each model is
built once per module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgeq._tensorflow import keras, tf
from edgeq.errors import BadInputError
from edgetpu import analyze
from edgetpu.analyze import analyze_model
from edgetpu.cli.check import main as check_main
from edgetpu.tflite_model import read_model

layers = keras.layers
#: The converter warns that int8 inputs have no statistics; the analyzer needs none.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")


def _convert(model: keras.Model, path: Path, *, int8_io: bool = True) -> Path:
    """Full-integer PTQ of ``model`` (tiny random calibration) written to ``path``."""
    shape = [1, *model.input_shape[1:]]
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(4):
            yield [rng.uniform(-1.0, 1.0, shape).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path


def _build(factory: pytest.TempPathFactory, name: str, input_shape: tuple[int, ...],
           *stack: Callable[[], keras.layers.Layer], int8_io: bool = True) -> Path:
    """Input(input_shape) (batch None) -> each layer of ``stack`` -> ``name``.tflite."""
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for make in stack:
        x = make()(x)
    path = factory.mktemp(name) / f"{name}.tflite"
    return _convert(keras.Model(inputs, x), path, int8_io=int8_io)


def _opcodes(analysis: analyze.Analysis) -> list[str]:
    return [op.opcode for op in analysis.ops]


#: The status the real compiler prints in its log for each rule's case (its own words, as
#: in the compiler logs of models compiled in the field), written out here rather than read
#: from the analyzer.
_UNSPECIFIED = ("Operation is otherwise supported, but not mapped due to some unspecified "
                "limitation")
COMPILER_STATUS = {
    "not_edgetpu_op": "Operation not supported",
    "runtime_version": "Operation not supported",
    "partition": "More than one subgraph is not supported",
    "dequantize": "Operation is working on an unsupported data type",
    "int8_runtime": "Operation is working on an unsupported data type",
    "float_quantize": _UNSPECIFIED,
    "transpose_size": _UNSPECIFIED,
    "row_size": _UNSPECIFIED,
}


def _assert_mapped(op: analyze.OpVerdict) -> None:
    assert op.mapped, op
    assert op.status == "Mapped to Edge TPU"
    assert op.rule == "mapped"


def _assert_rule(op: analyze.OpVerdict, rule: str) -> None:
    """``op`` stays on the CPU by ``rule``, with the compiler's status for that case; every
    rule tested here rests on a real compile (confidence ``seen``)."""
    assert not op.mapped, op
    assert op.rule == rule, op
    assert op.status == COMPILER_STATUS[rule]
    assert op.confidence == "seen"


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory, "conv", (8, 8, 3), lambda: layers.Conv2D(4, 3),
                  layers.ReLU)


@pytest.fixture(scope="module")
def leaky_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory, "leaky", (8,), lambda: layers.Dense(16), layers.LeakyReLU,
                  lambda: layers.Dense(8))


@pytest.fixture(scope="module")
def float_io_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory, "float_io", (8, 8, 3), lambda: layers.Conv2D(4, 3),
                  layers.ReLU, lambda: layers.Conv2D(4, 3), int8_io=False)


@pytest.fixture(scope="module")
def transpose_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    def permute() -> keras.layers.Layer:
        return layers.Permute((3, 1, 2))

    return {"small": _build(tmp_path_factory, "transpose_small", (20, 20, 16), permute),
            "large": _build(tmp_path_factory, "transpose_large", (40, 40, 48), permute)}


def _leaky_input_name(path: Path) -> str:
    """Name of the tensor that feeds the LEAKY_RELU (the end of the Edge TPU part)."""
    model = read_model(path)
    op = next(op for op in model.operators if op.opcode == "LEAKY_RELU")
    return model.tensors[op.inputs[0]].name


# --- 1. a None batch is [-1, ...] in the signature, shape [1, ...]: maps ----------------------

def test_dynamic_batch_of_one_maps(conv_model: Path) -> None:
    model = read_model(conv_model)
    tensor = model.tensors[model.inputs[0]]
    assert tensor.signature[0] == -1 and tensor.shape[0] == 1, tensor
    assert tensor.dtype == "INT8"

    analysis = analyze_model(conv_model)
    assert _opcodes(analysis) == ["CONV_2D"]  # the ReLU is fused
    _assert_mapped(analysis.ops[0])
    assert analysis.ops[0].confidence == analyze.SEEN
    assert analysis.fully_mapped
    assert analysis.summary["compile_error"] is None
    assert analysis.summary["on_cpu"] == 0
    assert analysis.summary["suggested_intermediate_tensors"] == []
    assert analysis.summary["next_step"] == ""


# --- 2. ops after a CPU op: the single-partition rule, -a, the suggested -i cut -------------

def test_ops_after_a_cpu_op_are_more_than_one_subgraph(leaky_model: Path) -> None:
    analysis = analyze_model(leaky_model)
    assert _opcodes(analysis) == ["FULLY_CONNECTED", "LEAKY_RELU", "FULLY_CONNECTED"]
    first, leaky, second = analysis.ops
    _assert_mapped(first)
    _assert_rule(leaky, "not_edgetpu_op")
    assert leaky.status == analyze.NOT_SUPPORTED
    assert leaky.confidence == analyze.SEEN  # LEAKY_RELU is in SEEN_NOT_SUPPORTED
    _assert_rule(second, "partition")
    assert second.status == analyze.MORE_THAN_ONE_SUBGRAPH
    assert not analysis.fully_mapped
    assert analysis.summary["on_cpu"] == 2
    assert analysis.summary["cpu_ops"] == {"LEAKY_RELU": 1, "FULLY_CONNECTED": 1}

    cut = _leaky_input_name(leaky_model)
    assert analysis.summary["suggested_intermediate_tensors"] == [cut]
    step = analysis.summary["next_step"]
    assert "compile-edgetpu" in step and " -i " in step and cut in step


def test_enable_multiple_subgraphs_maps_the_op_after_the_cpu_op(leaky_model: Path) -> None:
    analysis = analyze_model(leaky_model, enable_multiple_subgraphs=True)
    first, leaky, second = analysis.ops
    _assert_mapped(first)
    _assert_rule(leaky, "not_edgetpu_op")
    _assert_mapped(second)
    assert analysis.summary["on_cpu"] == 1
    assert analysis.summary["edgetpu_subgraphs"] == 2
    assert analysis.summary["next_step"] == ""  # -a: no -i cut to suggest


def test_suggested_cut_keeps_the_edgetpu_part(leaky_model: Path) -> None:
    before = analyze_model(leaky_model)
    cut = before.summary["suggested_intermediate_tensors"]
    after = analyze_model(leaky_model, intermediate_tensors=cut)
    assert after.summary["on_cpu"] <= before.summary["on_cpu"]
    assert [op.mapped for op in after.ops] == [True, False, False]
    assert after.ops[2].rule in ("intermediate_tensors", "partition")
    with pytest.raises(BadInputError, match="no_such_tensor"):
        analyze_model(leaky_model, intermediate_tensors=["no_such_tensor"])


# --- 3. float input / output: QUANTIZE and DEQUANTIZE on the CPU, the rest maps -------------

def test_float_io_quantize_and_dequantize_stay_on_the_cpu(float_io_model: Path) -> None:
    model = read_model(float_io_model)
    assert model.tensors[model.inputs[0]].dtype == "FLOAT32"
    assert model.tensors[model.outputs[0]].dtype == "FLOAT32"

    analysis = analyze_model(float_io_model)
    codes = _opcodes(analysis)
    assert codes[0] == "QUANTIZE" and codes[-1] == "DEQUANTIZE", codes
    assert codes[1:-1] == ["CONV_2D", "CONV_2D"]
    _assert_rule(analysis.ops[0], "float_quantize")
    assert analysis.ops[0].status == analyze.UNSPECIFIED_LIMITATION
    _assert_rule(analysis.ops[-1], "dequantize")
    assert analysis.ops[-1].status == analyze.UNSUPPORTED_DATA_TYPE
    for op in analysis.ops[1:-1]:  # the CPU QUANTIZE before the Edge TPU part does not split
        _assert_mapped(op)
    assert analysis.summary["edgetpu_subgraphs"] == 1
    assert analysis.summary["cpu_ops"] == {"QUANTIZE": 1, "DEQUANTIZE": 1}
    assert analysis.summary["compile_error"] is None


# --- 4. a rank-3 input ([-1, 28, 28]) -> Flatten -> Dense maps -------------------------------

def test_rank3_input_flatten_dense_maps(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = _build(tmp_path_factory, "flatten", (28, 28), layers.Flatten,
                  lambda: layers.Dense(10))
    model = read_model(path)
    assert model.tensors[model.inputs[0]].signature == (-1, 28, 28)

    analysis = analyze_model(path)
    assert _opcodes(analysis) == ["RESHAPE", "FULLY_CONNECTED"]
    for op in analysis.ops:
        _assert_mapped(op)
    assert analysis.fully_mapped
    assert analysis.summary["compile_error"] is None


# --- 5. TRANSPOSE: size limit and runtime 14 ------------------------------------------------

def test_transpose_size_limit(transpose_models: dict[str, Path]) -> None:
    small_model = read_model(transpose_models["small"])
    assert small_model.activation_inputs(small_model.operators[0])[0].size == 6400
    small = analyze_model(transpose_models["small"])
    assert _opcodes(small) == ["TRANSPOSE"]
    _assert_mapped(small.ops[0])
    assert small.fully_mapped

    large_model = read_model(transpose_models["large"])
    source = large_model.activation_inputs(large_model.operators[0])[0]
    assert source.size == 76800 > analyze.TRANSPOSE_MAX_ELEMENTS
    large = analyze_model(transpose_models["large"])
    assert _opcodes(large) == ["TRANSPOSE"]
    _assert_rule(large.ops[0], "transpose_size")
    assert large.ops[0].confidence == analyze.SEEN
    assert large.ops[0].status == analyze.UNSPECIFIED_LIMITATION


@pytest.mark.parametrize("kwargs", [{"compiler_version": "15"},
                                    {"compiler_version": "16", "min_runtime_version": 13}])
def test_transpose_needs_runtime_14(transpose_models: dict[str, Path], kwargs: dict) -> None:
    analysis = analyze_model(transpose_models["small"], **kwargs)
    _assert_rule(analysis.ops[0], "runtime_version")
    assert analysis.ops[0].status == analyze.NOT_SUPPORTED
    assert analysis.summary["runtime_version"] == 13
    assert analysis.summary["compiler_version"] == kwargs["compiler_version"] + ".0"
    # runtime 14 (compiler 16's default) maps it
    _assert_mapped(analyze_model(transpose_models["small"], compiler_version="16").ops[0])


# --- 6. the row-size limit (two innermost dimensions) ---------------------------------------

@pytest.mark.parametrize(("rows", "mapped"), [(100, False), (80, True)])
def test_row_size_limit(tmp_path_factory: pytest.TempPathFactory, rows: int,
                        mapped: bool) -> None:
    path = _build(tmp_path_factory, f"sigmoid_{rows}", (rows, 2100),
                  lambda: layers.Activation("sigmoid"))
    assert (rows * 2100 > analyze.MAX_ROW_ELEMENTS) is not mapped
    analysis = analyze_model(path)
    assert _opcodes(analysis) == ["LOGISTIC"]
    if mapped:
        _assert_mapped(analysis.ops[0])
    else:
        _assert_rule(analysis.ops[0], "row_size")
        assert analysis.ops[0].status == analyze.UNSPECIFIED_LIMITATION
        assert f"{rows * 2100:,}" in analysis.ops[0].reason


# --- 7. Softmax over the last axis of a multi-dimensional tensor ----------------------------

def test_softmax_over_the_last_axis_maps(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = _build(tmp_path_factory, "softmax", (4, 16), layers.Softmax)
    model = read_model(path)
    assert model.activation_inputs(model.operators[0])[0].shape == (1, 4, 16)
    analysis = analyze_model(path)
    assert _opcodes(analysis) == ["SOFTMAX"]
    _assert_mapped(analysis.ops[0])
    assert analysis.fully_mapped


# --- 8. int8 tensors need runtime 12; -m and the compiler version are validated -------------

def test_int8_needs_runtime_12(conv_model: Path) -> None:
    analysis = analyze_model(conv_model, min_runtime_version=11)
    _assert_rule(analysis.ops[0], "int8_runtime")
    assert analysis.ops[0].status == analyze.UNSUPPORTED_DATA_TYPE
    assert analysis.summary["runtime_version"] == 11
    _assert_mapped(analyze_model(conv_model, min_runtime_version=12).ops[0])


@pytest.mark.parametrize("kwargs", [{"min_runtime_version": 9}, {"compiler_version": "99"},
                                    {"compiler_version": "15", "min_runtime_version": 14}])
def test_unknown_runtime_or_compiler_is_bad_input(conv_model: Path, kwargs: dict) -> None:
    with pytest.raises(BadInputError):
        analyze_model(conv_model, **kwargs)


# --- 9. the CLI --------------------------------------------------------------------------

def test_check_cli_json_on_a_cpu_op(leaky_model: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main([str(leaky_model), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    ops = data["ops"]
    assert [op["opcode"] for op in ops] == ["FULLY_CONNECTED", "LEAKY_RELU", "FULLY_CONNECTED"]
    assert all("confidence" in op and "rule" in op for op in ops)
    assert [op["rule"] for op in ops] == ["mapped", "not_edgetpu_op", "partition"]
    assert data["summary"]["fully_mapped"] is False
    assert check_main([str(leaky_model), "--json", "-a"]) == 1  # the LEAKY_RELU stays
    capsys.readouterr()


def test_check_cli_compiler_flags(leaky_model: Path, transpose_models: dict[str, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    cut = _leaky_input_name(leaky_model)
    assert check_main([str(leaky_model), "--json", "-i", cut]) == 1
    ops = json.loads(capsys.readouterr().out)["ops"]
    assert [op["mapped"] for op in ops] == [True, False, False]

    small = str(transpose_models["small"])
    assert check_main([small, "--json", "--compiler-version", "15"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ops"][0]["rule"] == "runtime_version"
    assert data["summary"]["compiler_version"] == "15.0"
    assert check_main([small, "--json", "-m", "13"]) == 1
    assert json.loads(capsys.readouterr().out)["ops"][0]["rule"] == "runtime_version"
    assert check_main([small, "--json"]) == 0
    capsys.readouterr()
    assert check_main([small, "-i", "no_such_tensor"]) == 2  # BadInputError
