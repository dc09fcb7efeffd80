"""edgetpu.compiler and compile-edgetpu: output parsing, known failures, and a test double.

The fixtures under tests/data/compiler are compiler stdout and logs in edgetpu_compiler
16.0's format (successful, partial, failed, ``-n`` segments, ``-d`` search). The test double
is a small Python script standing in for the binary: it prints that format, writes the real
file names (``NAME_edgetpu.tflite``, ``NAME_edgetpu.log``, segment files) and, for Coral's
models, copies the real compiled model from the shared data.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from edgeq.sidecar import SCHEMA_VERSION
from edgetpu import compiler
from edgetpu.cli.compile import main as compile_main

#: Runs on the base install (no TensorFlow): the CI job for the Coral host.
pytestmark = pytest.mark.coral_host

DATA = Path(__file__).parent / "data" / "compiler"


def _read(name: str) -> str:
    return (DATA / name).read_text()


def test_parse_size() -> None:
    assert compiler.parse_size("0.00B") == 0
    assert compiler.parse_size("1.75KiB") == 1792
    assert compiler.parse_size("3.75MiB") == 3932160
    with pytest.raises(ValueError):
        compiler.parse_size("3.75 parsecs")


def test_parse_successful_compilation() -> None:
    out = compiler.parse_stdout(_read("success_stdout.txt"))
    assert out.version == "16.0.384591198" and out.success and not out.errors
    (stats,) = out.models
    assert stats.output_model == "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    assert stats.on_chip_bytes == 768 * 1024 and stats.off_chip_bytes == 0
    assert stats.subgraphs == 1 and stats.operations == 31 and stats.compile_ms == 355
    assert stats.operations_on_cpu is None
    assert all(row.mapped for row in stats.operators) and len(stats.operators) == 5


def test_parse_partial_compilation_and_log() -> None:
    out = compiler.parse_stdout(_read("partial_stdout.txt"))
    (stats,) = out.models
    assert out.success and stats.operations_on_edgetpu == 64 and stats.operations_on_cpu == 8
    log = compiler.parse_log(_read("partial.log"))
    assert log.version == "16.0.384591198"
    assert log.output_model == "deeplabv3_mnv2_dm05_pascal_quant_edgetpu.tflite"
    assert log.operators == stats.operators
    cpu = compiler.cpu_ops_from_table(list(log.operators))
    assert cpu == Counter({"RESIZE_BILINEAR": 3, "CONV_2D": 2, "QUANTIZE": 1,
                           "CONCATENATION": 1, "ARG_MAX": 1})
    assert sum(cpu.values()) == stats.operations_on_cpu


def test_parse_segments() -> None:
    out = compiler.parse_stdout(_read("segments_stdout.txt"))
    assert out.success and len(out.models) == 2
    assert [m.output_model for m in out.models] == [
        f"ssd_mobilenet_v2_coco_quant_postprocess_segment_{k}_of_2_edgetpu.tflite"
        for k in (0, 1)]
    assert compiler.cpu_ops_from_table(list(out.models[1].operators)) == Counter(
        {"DEQUANTIZE": 2, "CUSTOM": 1})


def test_parse_delegate_search() -> None:
    out = compiler.parse_stdout(_read("search_stdout.txt"))
    assert out.search_steps == (84, 74)
    assert out.success  # the failed first attempt does not count
    assert out.models[0].operations_on_cpu == 10


def test_parse_without_show_operations_and_an_unordered_log() -> None:
    out = compiler.parse_stdout(_read("partial_no_s_stdout.txt"))
    (stats,) = out.models
    assert out.success and stats.operators == () and stats.operations_on_cpu == 3
    assert stats.on_chip_bytes == round(6.06 * 1024**2)
    log = compiler.parse_log(_read("partial_unordered.log"))
    assert sum(row.count for row in log.operators) == stats.operations == 110
    assert compiler.cpu_ops_from_table(list(log.operators)) == Counter(
        {"DEQUANTIZE": 2, "CUSTOM": 1})


def test_parse_segments_where_the_second_fails() -> None:
    """-n 2 on a model whose second segment is too large (issue 557's output, abridged)."""
    text = _read("segments_failed_stdout.txt")
    out = compiler.parse_stdout(text)
    assert not out.success and len(out.models) == 1
    assert out.models[0].output_model.endswith("_segment_0_of_2_edgetpu.tflite")
    (diagnosis,) = compiler.diagnose(text)
    assert "activation tensors" in diagnosis.problem and "-n" in diagnosis.action


@pytest.mark.parametrize(("fixture", "problem", "action"), [
    ("failed_version_stdout.txt", "op CONV_2D version 6", "older TFLite converter"),
    ("failed_internal_stdout.txt", "internal compiler error", "-i"),
    ("failed_not_quantized_stdout.txt", "Model not quantized", "static input shape"),
])
def test_failures_are_mapped_to_actions(fixture: str, problem: str, action: str) -> None:
    text = _read(fixture)
    out = compiler.parse_stdout(text)
    assert not out.success and out.errors
    (diagnosis,) = compiler.diagnose(text)
    assert problem in diagnosis.problem and action in diagnosis.action


def test_runtime_version_mismatch_suggests_m() -> None:
    text = ("Failed to prepare for TPU. Package requires runtime version (14), which is newer "
            "than this runtime version (13).")
    (diagnosis,) = compiler.diagnose(text)
    assert "-m 13" in diagnosis.action


def test_compare_with_prediction() -> None:
    same = compiler.compare_with_prediction(Counter({"ADD": 1}), Counter({"ADD": 1}))
    assert same == []
    (line,) = compiler.compare_with_prediction(Counter({"ADD": 1}), Counter())
    assert "ADD" in line and "predicted 1" in line


def test_every_flag_is_passed() -> None:
    options = compiler.CompilerOptions(min_runtime_version=13, num_segments=2,
                                       intermediate_tensors=("a", "b"),
                                       enable_multiple_subgraphs=True, search_delegate=True,
                                       delegate_search_step=5, timeout_sec=300)
    assert options.args("OUT") == ["-o", "OUT", "-s", "-m", "13", "-n", "2", "-i", "a,b",
                                   "-a", "-d", "-k", "5", "-t", "300"]


_DOUBLE = r'''
import argparse, os, shutil, sys
from pathlib import Path

FIXTURES = Path(sys.argv[0]).with_name("fixtures")
parser = argparse.ArgumentParser()
parser.add_argument("-o", "--out_dir", default=".")
parser.add_argument("-s", action="store_true")
parser.add_argument("-m", type=int)
parser.add_argument("-n", type=int)
parser.add_argument("-i")
parser.add_argument("-a", action="store_true")
parser.add_argument("-d", action="store_true")
parser.add_argument("-k", type=int)
parser.add_argument("-t", type=int)
parser.add_argument("model")
args = parser.parse_args()
Path(os.environ["DOUBLE_ARGV"]).write_text(" ".join(sys.argv[1:]))
model = Path(args.model)
out = Path(args.out_dir)
mode = os.environ.get("DOUBLE_MODE", "ok")
print("Edge TPU Compiler version 16.0.384591198")
if mode == "version":
    print("ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'. An older version "
          "of this builtin might be supported. Are you using an old TFLite binary with a "
          "newer model?\n\nERROR: Registration failed.\n\nInvalid model: " + model.name)
    print("Model could not be parsed")
    sys.exit(1)
print("Started a compilation timeout timer of %d seconds.\n" % (args.t or 180))
compiled = model.with_name(model.stem + "_edgetpu.tflite")
log_text = (FIXTURES / os.environ["DOUBLE_LOG"]).read_text()
table = log_text[log_text.index("Operator"):]
rows = [line.split() for line in table.splitlines()[2:] if line.strip()]
total = sum(int(r[1]) for r in rows)
cpu = sum(int(r[1]) for r in rows if "Mapped to Edge TPU" not in " ".join(r))
stems = ([model.stem] if not args.n else
         ["%s_segment_%d_of_%d" % (model.stem, k, args.n) for k in range(args.n)])
for number, stem in enumerate(stems):
    name = stem + "_edgetpu"
    if mode == "second_segment_fails" and number == 1:
        print("Started a compilation timeout timer of 180 seconds.")
        print("ERROR: Restored original execution plan after delegate application failure.")
        print("Compilation failed: Compilation failed due to large activation tensors in model.")
        print("Compilation child process completed within timeout period.")
        print("Compilation failed! ")
        sys.exit(1)
    shutil.copy(compiled if compiled.is_file() and not args.n else model,
                out / (name + ".tflite"))
    (out / (name + ".log")).write_text(log_text.replace(model.stem + "_edgetpu", name))
    print("Model compiled successfully in 731 ms.\n")
    print("Input model: " + str(model.with_name(stem + ".tflite")))
    print("Input size: 514.64KiB")
    print("Output model: " + str(out / (name + ".tflite")))
    print("Output size: 782.67KiB")
    print("On-chip memory used for caching model parameters: 768.00KiB")
    print("On-chip memory remaining for caching model parameters: 6.88MiB")
    print("Off-chip memory used for streaming uncached model parameters: 0.00B")
    print("Number of Edge TPU subgraphs: 1")
    print("Total number of operations: %d" % total)
    print("Operation log: " + str(out / (name + ".log")))
    if cpu:
        print("\nModel successfully compiled but not all operations are supported by the Edge "
              "TPU. A percentage of the model will instead run on the CPU, which is slower. "
              "If possible, consider updating your model to use only operations supported by "
              "the Edge TPU. For details, visit g.co/coral/model-reqs.")
        print("Number of operations that will run on Edge TPU: %d" % (total - cpu))
        print("Number of operations that will run on CPU: %d" % cpu)
        if not args.s:
            print("See the operation log file for individual operation details.")
    if args.s:
        print("\n" + table.rstrip() + "\n")
print("Compilation child process completed within timeout period.")
print("Compilation succeeded! ")
'''


@pytest.fixture
def double(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write the test double of edgetpu_compiler; return its path."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "fixtures").symlink_to(DATA)
    script = folder / "edgetpu_compiler"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(_DOUBLE))
    script.chmod(0o755)
    monkeypatch.setenv("DOUBLE_ARGV", str(tmp_path / "argv.txt"))
    return script


def _pair(shared_data: Path, tmp_path: Path, name: str) -> Path:
    """A copy of a Coral source model next to its real compiled version."""
    work = tmp_path / "models"
    work.mkdir(exist_ok=True)
    for suffix in (".tflite", "_edgetpu.tflite"):
        (work / f"{name}{suffix}").write_bytes((shared_data / "coral" / f"{name}{suffix}")
                                               .read_bytes())
    return work / f"{name}.tflite"


def test_compile_with_the_double_agrees_with_prediction(
        shared_data: Path, tmp_path: Path, double: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    model = _pair(shared_data, tmp_path, "deeplabv3_mnv2_dm05_pascal_quant")
    monkeypatch.setenv("DOUBLE_LOG", "partial.log")
    out = tmp_path / "out"
    code = compile_main([str(model), "--compiler", str(double), "--out", str(out), "-m", "13",
                         "-t", "60", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["compiled"] and report["prediction_differences"] == []
    assert report["compiler"]["models"][0]["operations_on_cpu"] == 8
    argv = (tmp_path / "argv.txt").read_text().split()
    assert argv[argv.index("-m") + 1] == "13" and "-s" in argv and "-t" in argv
    names = sorted(p.name for p in out.iterdir())
    assert names == ["deeplabv3_mnv2_dm05_pascal_quant_edgetpu.json",
                     "deeplabv3_mnv2_dm05_pascal_quant_edgetpu.log",
                     "deeplabv3_mnv2_dm05_pascal_quant_edgetpu.tflite"]


def test_compile_carries_the_sidecar(shared_data: Path, tmp_path: Path, double: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """quantize's sidecar goes beside the compiled model, with a compile section added."""
    model = _pair(shared_data, tmp_path, "deeplabv3_mnv2_dm05_pascal_quant")
    sidecar = {"schema_version": SCHEMA_VERSION, "model": model.stem,
               "float_parent": {"name": "deeplab", "source": "deeplab.keras"}}
    model.with_suffix(".json").write_text(json.dumps(sidecar))
    monkeypatch.setenv("DOUBLE_LOG", "partial.log")
    out = tmp_path / "out"
    assert compile_main([str(model), "--compiler", str(double), "--out", str(out)]) == 0
    assert "(sidecar with the parsed report)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        f"{model.stem}_edgetpu.{ext}" for ext in ("json", "log", "tflite")]
    carried = json.loads((out / f"{model.stem}_edgetpu.json").read_text())
    assert {key: carried[key] for key in sidecar} == sidecar
    section = carried["compile"]
    assert section["compiler_version"] == "16.0.384591198" and section["mapped_ops"] == 64
    assert section["compiled"] and section["prediction_differences"] == []


def test_compile_refuses_a_sidecar_of_another_schema(shared_data: Path, tmp_path: Path,
                                                     double: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    model = _pair(shared_data, tmp_path, "mobilenet_v1_0.25_128_quant")
    model.with_suffix(".json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    out = tmp_path / "out"
    assert compile_main([str(model), "--compiler", str(double), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{model.with_suffix('.json')}: sidecar schema version" in err
    assert "quantize the model again" in err and not out.exists()


def test_compile_segments_with_the_double(shared_data: Path, tmp_path: Path, double: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model = _pair(shared_data, tmp_path, "mobilenet_v1_0.25_128_quant")
    monkeypatch.setenv("DOUBLE_LOG", "success.log")
    out = tmp_path / "out"
    code = compile_main([str(model), "--compiler", str(double), "--out", str(out), "-n", "2",
                         "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    stem = "mobilenet_v1_0.25_128_quant"
    segments = [f"{stem}_segment_{k}_of_2_edgetpu" for k in (0, 1)]
    assert [Path(p).name for p in report["outputs"]] == [f"{s}.tflite" for s in segments]
    assert sorted(report["logs"]) == [f"{s}.log" for s in segments]
    assert [m["output_model"].rsplit("/", 1)[-1] for m in report["compiler"]["models"]] == [
        f"{s}.tflite" for s in segments]
    argv = (tmp_path / "argv.txt").read_text().split()
    assert argv[argv.index("-n") + 1] == "2"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{stem}_edgetpu.json"] + [f"{s}.{ext}" for s in segments for ext in ("log", "tflite")])


def test_failed_segment_leaves_no_model(shared_data: Path, tmp_path: Path, double: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    model = _pair(shared_data, tmp_path, "mobilenet_v1_0.25_128_quant")
    monkeypatch.setenv("DOUBLE_LOG", "success.log")
    monkeypatch.setenv("DOUBLE_MODE", "second_segment_fails")
    out = tmp_path / "out"
    assert compile_main([str(model), "--compiler", str(double), "--out", str(out),
                         "-n", "2"]) == 1
    text = capsys.readouterr().out
    assert "activation tensors" in text and "-n" in text
    assert not list(out.glob("*.tflite")) and not list(out.glob("*.json"))
    assert [p.name for p in out.glob("*.log")] == [
        "mobilenet_v1_0.25_128_quant_segment_0_of_2_edgetpu.log"]
    assert not [p for p in out.iterdir() if p.name.startswith(".compile-")]


def test_relative_out_folder(shared_data: Path, tmp_path: Path, double: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    model = _pair(shared_data, tmp_path, "mobilenet_v1_0.25_128_quant")
    monkeypatch.setenv("DOUBLE_LOG", "success.log")
    monkeypatch.chdir(tmp_path)
    assert compile_main([str(model), "--compiler", str(double), "--out", "rel/out"]) == 0
    assert (tmp_path / "rel" / "out" / "mobilenet_v1_0.25_128_quant_edgetpu.tflite").is_file()


def test_compile_reports_a_difference(shared_data: Path, tmp_path: Path, double: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    model = _pair(shared_data, tmp_path, "mobilenet_v1_0.25_128_quant")
    monkeypatch.setenv("DOUBLE_LOG", "partial.log")  # the double claims CPU ops
    monkeypatch.setenv("EDGETPU_COMPILER", str(double))
    assert compile_main([str(model), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "PREDICTION (offline analyzer, not the compiler)" in out
    assert "Prediction and compiler differ" in out and "ARG_MAX" in out


def test_compile_failure_gives_the_action(shared_data: Path, tmp_path: Path, double: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model = _pair(shared_data, tmp_path, "mobilenet_v1_0.25_128_quant")
    monkeypatch.setenv("DOUBLE_MODE", "version")
    out = tmp_path / "out"
    assert compile_main([str(model), "--compiler", str(double), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "FAILED" in text and "older TFLite converter" in text
    assert not list(out.glob("*_edgetpu.tflite"))


def test_no_compiler_exits_3_with_prediction(shared_data: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("EDGETPU_COMPILER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    out = tmp_path / "out"
    model = shared_data / "coral" / "mobilenet_v1_0.25_128_quant.tflite"
    assert compile_main([str(model), "--out", str(out)]) == 3
    captured = capsys.readouterr()
    assert "PREDICTION (offline analyzer, not the compiler)" in captured.out
    assert "Mapped to Edge TPU" in captured.out
    assert "apt-get install edgetpu-compiler" in captured.err
    assert "Dockerfile.edgetpu-compiler" in captured.err
    assert not out.exists() or not list(out.glob("*_edgetpu.tflite"))


def test_bad_compiler_path_is_bad_input(shared_data: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    model = shared_data / "coral" / "mobilenet_v1_0.25_128_quant.tflite"
    code = compile_main([str(model), "--compiler", str(tmp_path / "nope"), "--json"])
    assert code == 2 and "not an executable file" in capsys.readouterr().err


def test_python_m_edgetpu_dispatches(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run([sys.executable, "-m", "edgetpu", "check", str(tmp_path / "x")],
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode == 2 and "no such model file" in result.stderr
