"""The Edge TPU commands on the base install (no TensorFlow): what a Coral host runs.

``.ci/run`` also runs these (with the other ``coral_host`` tests) in a fresh virtual
environment holding only the base install, where TensorFlow cannot be imported at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.coral_host

_HEAVY = ("tensorflow", "tf_keras", "matplotlib", "tensorflow_model_optimization")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_edgetpu_commands_import_nothing_heavy(shared_data: Path, tmp_path: Path) -> None:
    """Detection (CPU fallback), the analyzer and compile-edgetpu's prediction run without
    TensorFlow, tf-keras or matplotlib ever being imported."""
    model = shared_data / "models" / "ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite"
    image = shared_data / "coral" / "kite_and_cold.jpg"
    pair = shared_data / "coral" / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    code = f"""
import json, sys
from edgetpu.cli.check import main as check
from edgetpu.cli.compile import main as compile_
from edgetpu.cli.detect import main as detect
codes = [detect(["--model", {str(model)!r}, "--image", {str(image)!r}, "--json",
                 "--threshold", "0.5"]),
         check([{str(pair)!r}, "--json"]),
         compile_([{str(pair)!r}, "--out", {str(tmp_path / "out")!r},
                   "--compiler", "/nonexistent/edgetpu_compiler"])]
heavy = sorted(name for name in {_HEAVY!r} if name in sys.modules)
print(json.dumps({{"codes": codes, "heavy": heavy}}), file=sys.stderr)
"""
    result = _run(code)
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["heavy"] == []
    detect_code, check_code, compile_code = summary["codes"]
    assert detect_code == 0 and '"label"' in result.stdout
    assert "XNNPACK" not in result.stderr  # LiteRT's start-up line is hidden (no --verbose)
    assert check_code == 1  # deeplab leaves ops on the CPU
    assert compile_code == 2  # --compiler names a missing file: bad input


@pytest.mark.parametrize("command", ["edgetpu.cli.check", "edgetpu.cli.compile",
                                     "edgetpu.cli.detect"])
def test_bad_input_is_one_line_on_the_base_install(tmp_path: Path, command: str) -> None:
    text = tmp_path / "notes.tflite"
    text.write_text("not a model")
    for target in (tmp_path / "missing.tflite", text, tmp_path):
        argv = ([str(target)] if command != "edgetpu.cli.detect"
                else ["--model", str(target), "--image", str(text)])
        result = _run(f"import sys; from {command} import main; sys.exit(main({argv!r}))")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in lines[0]
        assert str(target) in lines[0]


def test_quantize_without_the_extra_says_which_to_install(tmp_path: Path) -> None:
    """Without TensorFlow (absent on the base install) quantize exits 3 naming the extra."""
    out = str(tmp_path / "out")
    code = f"""
import sys
sys.modules["tensorflow"] = None  # as if not installed
from quant.cli.quantize import main
sys.exit(main(["--model", "mobilenet_v1_0.25_128", "--out", {out!r}]))
"""
    result = _run(code)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "pip install 'edgetpu-quant[quant]'" in lines[-1] and "Traceback" not in result.stderr


def test_validate_without_the_extra_stops_before_any_work(shared_data: Path,
                                                          tmp_path: Path) -> None:
    model = shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
    args = ["--int8", str(model), "--data", str(shared_data / "imagenet_val1300"),
            "--out", str(tmp_path / "out")]
    code = f"""
import sys
sys.modules["matplotlib"] = None  # as if not installed
from quant.cli.validate import main
sys.exit(main({args!r}))
"""
    result = _run(code)
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: validate-quant needs matplotlib, which the base install leaves out; install "
        "it with: pip install 'edgetpu-quant[quant]'"]
