"""quantize on bad input: one clear line, the documented exit code, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from random_images import write_random_pngs

from quant.cli.quantize import main


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_unknown_model_suggests_close_names(capsys):
    code, err = _run(capsys, "--model", "mobilenet_v2_1.0_225")
    assert code == 2
    assert "mobilenet_v2_1.0_224" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_truncated_archive(tmp_path, capsys, shared_data, monkeypatch):
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "cache"))
    data = (shared_data / "models/mobilenet_v2_1.0_224.tgz").read_bytes()
    archive = tmp_path / "mobilenet_v2_1.0_224.tgz"
    archive.write_bytes(data[: len(data) // 3])
    code, err = _run(capsys, "--model", str(archive))
    assert code == 2
    assert str(archive) in err and "truncated" in err


def test_unreadable_checkpoint_folder(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root reads any folder")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0)
    code, err = _run(capsys, "--model", "mobilenet_v2_1.0_224", "--checkpoint", str(folder))
    folder.chmod(0o700)
    assert code == 2 and "not readable" in err


def test_corrupt_checkpoint_files(tmp_path, capsys):
    (tmp_path / "model.ckpt.index").write_bytes(b"garbage" * 10)
    (tmp_path / "model.ckpt.data-00000-of-00001").write_bytes(b"")
    code, err = _run(capsys, "--model", "mobilenet_v2_1.0_224", "--checkpoint",
                     str(tmp_path / "model.ckpt"))
    assert code == 2 and "not a readable TensorFlow checkpoint" in err
    assert err.count("\n") == 1


def test_missing_checkpoint_path(tmp_path, capsys):
    code, err = _run(capsys, "--model", "mobilenet_v2_1.0_224", "--checkpoint",
                     str(tmp_path / "nowhere.tgz"))
    assert code == 2 and "nowhere.tgz: no such archive" in err


def test_checkpoint_of_another_variant(tmp_path, capsys, shared_data, monkeypatch):
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "cache"))
    code, err = _run(capsys, "--model", "mobilenet_v2_1.4_224", "--checkpoint",
                     str(shared_data / "models/mobilenet_v2_1.0_224.tgz"))
    assert code == 2 and "another variant" in err


def test_offline_download_exits_3(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "cache"))
    code, err = _run(capsys, "--model", "http://127.0.0.1:9/mobilenet_v2_1.0_224.tgz")
    assert code == 3
    assert "127.0.0.1:9/mobilenet_v2_1.0_224.tgz" in err and "--checkpoint" in err


def test_model_is_required(capsys):
    code, err = _run(capsys)
    assert code == 2 and "--model is required" in err


def test_quantize_zoo_model_from_local_checkpoint(tmp_path, capsys, monkeypatch):
    """The offline main job on a small zoo variant with a synthetic TF-slim checkpoint."""
    from slim_checkpoints import slim_variables, write_checkpoint

    from quant.models import build_classifier

    prefix = write_checkpoint(tmp_path / "mobilenet_v2_0.35_96.ckpt",
                              slim_variables(build_classifier("mobilenet_v2", 96, 0.35)))
    images = write_random_pngs(tmp_path / "images", 6, 64)
    code = main(["--model", "mobilenet_v2_0.35_96", "--checkpoint", str(prefix),
                 "--calib-dir", str(images), "--calib-size", "4", "--drift-images", "2",
                 "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    sidecar = json.loads((tmp_path / "out/mobilenet_v2_0.35_96_int8.json").read_text())
    assert sidecar["float_parent"]["zoo"]["name"] == "mobilenet_v2_0.35_96"
    assert sidecar["derived"]["drift"]["images"] == 2
    assert (tmp_path / "out/mobilenet_v2_0.35_96_int8.tflite").stat().st_size > 100_000
    # validate-quant finds the float model (zoo name, local checkpoint) in the sidecar
    from quant.cli.validate import main as validate

    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "cache"))
    report = tmp_path / "report.json"
    assert validate(["--int8", str(tmp_path / "out/mobilenet_v2_0.35_96_int8.tflite"),
                     "--data", str(images), "--latency-runs", "0", "--layer-images", "0",
                     "--out", str(tmp_path / "out"), "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["float_model"]["source"] == "mobilenet_v2_0.35_96" and "agreement" in result


def test_qat_from_the_command_line(tmp_path, capsys):
    """--method qat: a clear error without training images, then a short real run."""

    from edgeq._tensorflow import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(4)(x)).save(tmp_path / "user.keras")
    args = ["--model", str(tmp_path / "user.keras"), "--input-range=-1,1",
            "--method", "qat", "--out", str(tmp_path / "out")]
    code, err = _run(capsys, *args)
    assert code == 2 and "--train-dir" in err
    images = write_random_pngs(tmp_path / "images", 8, 32)
    code, err = _run(capsys, *args, "--train-dir", str(images), "--steps", "2",
                     "--batch-size", "4")
    assert code == 0, err
    assert (tmp_path / "out/user_qat_int8.tflite").is_file()


def test_qat_sources_and_strategies_are_checked_before_the_model_loads(tmp_path, capsys,
                                                                       monkeypatch):
    images = write_random_pngs(tmp_path / "images", 2, 32)
    args = ["--model", str(tmp_path / "not_loaded.keras"), "--method", "qat",
            "--train-dir", str(images), "--out", str(tmp_path / "out")]
    code, err = _run(capsys, *args, "--train-records", str(tmp_path / "train-*"))
    assert code == 2 and "--train-records replaces --train-dir" in err
    code, err = _run(capsys, *args, "--strategy", "multiworker")
    assert code == 2 and "--checkpoint-dir" in err
    monkeypatch.delenv("TF_CONFIG", raising=False)
    multiworker = [*args, "--strategy", "multiworker", "--checkpoint-dir", str(tmp_path / "ck")]
    code, err = _run(capsys, *multiworker)
    assert code == 3 and "needs TF_CONFIG" in err and err.count("\n") == 1
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["localhost:1", "nowhere.invalid:2222"]},
        "task": {"type": "worker", "index": 0}}))
    code, err = _run(capsys, *multiworker)
    assert code == 3 and "nowhere.invalid:2222 is unreachable" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_lists_the_zoo():
    result = subprocess.run([sys.executable, "-m", "quant", "--list", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "mobilenet_v2_1.0_224" in result.stdout


def test_tensorflow_starts_without_log_lines(tmp_path):
    """On a machine without a GPU, importing TensorFlow and running an op writes nothing to
    stderr (no absl / CUDA start-up lines) unless EDGEQ_VERBOSE asks for them."""
    code = "from edgeq._tensorflow import keras, tf; print(float(tf.constant(2.0) * 3))"
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEQ_VERBOSE",
                                                            "TF_CPP_MIN_LOG_LEVEL")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "6.0", run.stderr
    assert run.stderr == ""
