"""quantize on bad input: one clear line, the documented exit code, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


def test_console_script_lists_the_zoo():
    result = subprocess.run([sys.executable, "-m", "quant", "--list", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "mobilenet_v2_1.0_224" in result.stdout
