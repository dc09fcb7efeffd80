"""Bad input for every command: one ``error:`` line naming the file, the documented exit
code, never a traceback; odd but valid images (grayscale, CMYK, 16-bit) are accepted.

Each command's ``main`` runs in-process with stdout and stderr replaced by streams that
behave like a UTF-8 terminal's (stdout strict, stderr backslashreplace), so a file name
that is not valid UTF-8 fails here as it would for a user.
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import sys
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetpu.cli import check, compile, detect
from quant.cli import quantize, validate

SSD = "models/ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite"
CLASSIFIER = "coral/mobilenet_v1_0.25_128_quant.tflite"
COMPILED = "coral/mobilenet_v1_0.25_128_quant_edgetpu.tflite"
IMAGE = "coral/kite_and_cold.jpg"
NON_UTF8 = os.fsdecode(b"bad\xffname")
ODD_IMAGES = ("gray.png", "cmyk.jpg", "gray16.png", "rgb16.png", "palette.png", "la.png",
              "float.tif")


@dataclass(frozen=True)
class Result:
    """What a command returned and printed."""

    code: int
    out: bytes
    err: str

    @property
    def err_lines(self) -> list[str]:
        """Non-empty stderr lines."""
        return [line for line in self.err.splitlines() if line.strip()]


def run(main: Callable[[list[str]], int], argv: list[str],
        monkeypatch: pytest.MonkeyPatch) -> Result:
    """Run a command's ``main`` with terminal-like stdout / stderr; return what it did."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict",
                           write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace",
                           write_through=True)
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stdout", out)
        patch.setattr(sys, "stderr", err)
        code = main(argv)
    return Result(code, out.buffer.getvalue(), err.buffer.getvalue().decode())


def assert_one_error(result: Result, code: int, *fragments: str,
                     progress: bool = False) -> None:
    """Check the exit code and that stderr ends in the only ``error:`` line, with fragments.

    ``progress``: the command may log progress lines before the error (validate-quant).
    """
    lines = result.err_lines
    assert "Traceback" not in result.err
    assert result.code == code, result.err
    assert lines and lines[-1].startswith("error: "), result.err
    assert sum(line.startswith("error: ") for line in lines) == 1, result.err
    if not progress:
        assert len(lines) == 1, result.err
    for fragment in fragments:
        assert fragment in lines[-1], result.err


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels (and holds almost none)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def _odd_images(folder: Path) -> None:
    """Write one small image per odd mode: grayscale, CMYK, 16-bit, palette, alpha, float."""
    import cv2

    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    rgb.convert("L").save(folder / "gray.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65535, (48, 64)).astype(np.uint16)).save(
        folder / "gray16.png")
    cv2.imwrite(str(folder / "rgb16.png"), rng.integers(0, 65535, (48, 64, 3)).astype(np.uint16))
    rgb.convert("P").save(folder / "palette.png")
    rgb.convert("LA").save(folder / "la.png")
    Image.fromarray(rng.random((48, 64)).astype(np.float32)).save(folder / "float.tif")


def _tiny_keras(folder: Path) -> dict[str, Path]:
    """A tiny classifier (batch None) as .keras, int8 .tflite with a dynamic batch, and a
    model with unknown height and width (as .keras and as int8 .tflite)."""
    from edgeq._tensorflow import keras, tf

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)

    def int8(model: object, name: str) -> Path:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.random((1, 32, 32, 3), dtype=np.float32)] for _ in range(4))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
        (folder / name).write_bytes(converter.convert())
        return folder / name

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    model.save(folder / "tiny.keras")
    free = keras.Input((None, None, 3))
    free_model = keras.Model(
        free, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(free)))
    free_model.save(folder / "free_size.keras")
    return {"keras": folder / "tiny.keras", "dynamic": int8(model, "dynamic_int8.tflite"),
            "free_size": folder / "free_size.keras",
            "free_size_int8": int8(free_model, "free_size_int8.tflite")}


@pytest.fixture(scope="module")
def files(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every bad (and odd but valid) input of the matrix, built once."""
    root = tmp_path_factory.mktemp("bad_inputs")
    source = (shared_data / CLASSIFIER).read_bytes()
    found = {
        "missing": root / "missing.tflite",
        "empty": root / "empty.tflite",
        "truncated": root / "truncated.tflite",
        "jpeg": root / "photo.tflite",
        "text": root / "notes.tflite",
        "directory": root / "folder.tflite",
        "classifier": shared_data / CLASSIFIER,
        "detector": shared_data / SSD,
        "compiled": shared_data / COMPILED,
        "float": root / "mobilenet_v2_1.0_224.tflite",
        "huge": root / "huge.png",
        "images": root / "odd_images",
        "labels": root / "labels.csv",
    }
    found["empty"].write_bytes(b"")
    found["truncated"].write_bytes(source[: len(source) // 2])
    found["jpeg"].write_bytes((shared_data / IMAGE).read_bytes())
    found["text"].write_text("not a model, just notes\n")
    found["directory"].mkdir()
    with tarfile.open(shared_data / "models/mobilenet_v2_1.0_224.tgz") as archive:
        member = archive.extractfile("./mobilenet_v2_1.0_224.tflite")
        assert member is not None
        found["float"].write_bytes(member.read())
    found["huge"].write_bytes(_png_header(20000, 20000))
    _odd_images(found["images"])
    with found["labels"].open("w", newline="") as handle:
        csv.writer(handle).writerows([name, 0] for name in ODD_IMAGES)
    try:
        found["non_utf8_classifier"] = root / f"{NON_UTF8}_classifier.tflite"
        found["non_utf8_classifier"].write_bytes(source)
        found["non_utf8_detector"] = root / f"{NON_UTF8}_detector.tflite"
        found["non_utf8_detector"].write_bytes((shared_data / SSD).read_bytes())
        found["non_utf8_image"] = root / f"{NON_UTF8}.jpg"
        found["non_utf8_image"].write_bytes((shared_data / IMAGE).read_bytes())
    except (OSError, UnicodeEncodeError):  # a file system that only takes UTF-8 names
        pass
    found.update(_tiny_keras(root))
    return found


def _file(files: dict[str, Path], name: str) -> Path:
    if name not in files:
        pytest.skip("this file system does not take file names that are not UTF-8")
    return files[name]


@pytest.fixture
def no_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No edgetpu_compiler anywhere (an empty PATH)."""
    monkeypatch.delenv("EDGETPU_COMPILER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))


# The broken model files every command that reads a .tflite must refuse with exit 2.
BROKEN_MODELS = [
    ("missing", "no such model file"),
    ("empty", "empty"),
    ("truncated", "truncated"),
    ("jpeg", "not a TFLite model"),
    ("text", "not a TFLite model"),
    ("directory", "no such model file"),
]


@pytest.mark.parametrize(("case", "message"), BROKEN_MODELS)
def test_check_refuses_broken_models(files, monkeypatch, case, message):
    result = run(check.main, [str(files[case])], monkeypatch)
    assert_one_error(result, 2, str(files[case]), message)


@pytest.mark.parametrize(("case", "message"), BROKEN_MODELS)
def test_compile_refuses_broken_models(files, monkeypatch, tmp_path, no_compiler, case,
                                       message):
    result = run(compile.main, [str(files[case]), "--out", str(tmp_path / "out")],
                 monkeypatch)
    assert_one_error(result, 2, str(files[case]), message)


@pytest.mark.parametrize(("case", "message"), BROKEN_MODELS)
def test_detect_refuses_broken_models(files, shared_data, monkeypatch, case, message):
    result = run(detect.main, ["--model", str(files[case]), "--image",
                               str(shared_data / IMAGE)], monkeypatch)
    assert_one_error(result, 2, str(files[case]), message)


@pytest.mark.parametrize("option", ["--int8", "--float"])
@pytest.mark.parametrize(("case", "message"), BROKEN_MODELS)
def test_validate_refuses_broken_models(files, monkeypatch, tmp_path, option, case, message):
    other = "--float" if option == "--int8" else "--int8"
    result = run(validate.main, [option, str(files[case]), other, str(files["classifier"]),
                                 "--data", str(files["images"]), "--out", str(tmp_path)],
                 monkeypatch)
    if option == "--float" and case in ("missing", "directory"):
        message = "a folder" if case == "directory" else "no such float model file"
    assert_one_error(result, 2, str(files[case]), message, progress=True)


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "jpeg", "float"])
def test_quantize_refuses_any_tflite(files, monkeypatch, tmp_path, case):
    result = run(quantize.main, ["--model", str(files[case]), "--out", str(tmp_path)],
                 monkeypatch)
    assert_one_error(result, 2, str(files[case]), "cannot be quantized again")


@pytest.mark.parametrize(("case", "message"), [
    ("missing.keras", "no such file"),
    ("empty.keras", "not a readable Keras model"),
    ("notes.keras", "not a readable Keras model"),
    ("truncated.keras", "not a readable Keras model"),
    ("folder.keras", "a folder without saved_model.pb"),
])
def test_quantize_refuses_broken_keras_files(files, monkeypatch, tmp_path, case, message):
    path = tmp_path / case
    if case == "empty.keras":
        path.write_bytes(b"")
    elif case == "notes.keras":
        path.write_text("not a model\n")
    elif case == "truncated.keras":
        data = files["keras"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "folder.keras":
        path.mkdir()
    result = run(quantize.main, ["--model", str(path), "--input-range=-1,1",
                                 "--out", str(tmp_path / "out")], monkeypatch)
    assert_one_error(result, 2, str(path), message)


def test_wrong_model_kinds(files, shared_data, monkeypatch, tmp_path):
    image = str(shared_data / IMAGE)
    result = run(detect.main, ["--model", str(files["classifier"]), "--image", image],
                 monkeypatch)
    assert_one_error(result, 2, str(files["classifier"]), "TFLite_Detection_PostProcess")
    result = run(validate.main, ["--int8", str(files["detector"]), "--data",
                                 str(files["images"]), "--labels", str(files["labels"]),
                                 "--out", str(tmp_path)], monkeypatch)
    assert_one_error(result, 2, str(files["detector"]), "is a detector", progress=True)
    annotations = shared_data / "coco_mini/annotations/instances_val2017.json"
    result = run(validate.main, ["--int8", str(files["classifier"]), "--data",
                                 str(files["images"]), "--annotations", str(annotations),
                                 "--out", str(tmp_path)], monkeypatch)
    assert_one_error(result, 2, str(files["classifier"]), "is a classifier", progress=True)
    result = run(compile.main, [str(files["compiled"]), "--out", str(tmp_path)], monkeypatch)
    assert_one_error(result, 2, str(files["compiled"]), "already compiled")


def test_float_and_dynamic_models(files, monkeypatch, tmp_path, no_compiler):
    """check explains (exit 1); compile refuses (exit 2); detect refuses a classifier.

    A -1 batch of size 1 is not dynamic for the compiler (it compiles such models): check
    passes it and compile goes on to look for the compiler (exit 3 here).
    """
    for case in ("float", "free_size_int8"):
        result = run(check.main, [str(files[case])], monkeypatch)
        assert result.code == 1 and len(result.err_lines) == 1
        assert str(files[case]) in result.err and "Traceback" not in result.err
    assert run(check.main, [str(files["dynamic"])], monkeypatch).code == 0
    result = run(compile.main, [str(files["dynamic"]), "--out", str(tmp_path)], monkeypatch)
    assert result.code == 3 and "edgetpu_compiler not found" in result.err
    reason = {"float": "a float model", "free_size_int8": "dynamic shape [-1, -1, -1, 3]"}
    for case, message in reason.items():
        result = run(compile.main, [str(files[case]), "--out", str(tmp_path)], monkeypatch)
        assert_one_error(result, 2, str(files[case]), message)
    for case in ("float", "dynamic"):
        result = run(detect.main, ["--model", str(files[case]), "--image",
                                   str(files["images"] / "gray.png")], monkeypatch)
        assert_one_error(result, 2, str(files[case]), "not a detection model")
    result = run(quantize.main, ["--model", str(files["free_size"]), "--input-range=-1,1",
                                 "--out", str(tmp_path)], monkeypatch)
    assert_one_error(result, 2, str(files["free_size"]), "not a static NHWC image")


def test_validate_accepts_a_float_or_dynamic_int8_with_a_note(files, monkeypatch, tmp_path):
    for case, note in (("float", True), ("dynamic", False)):
        result = run(validate.main, ["--int8", str(files[case]), "--data", str(files["images"]),
                                     "--labels", str(files["labels"]), "--out", str(tmp_path),
                                     "--latency-runs", "0", "--layer-images", "0"],
                     monkeypatch)
        assert result.code == 0, result.err
        assert ("is a float model" in result.err) is note


def test_directory_messages_say_folder(files, monkeypatch, tmp_path, shared_data):
    result = run(validate.main, ["--float", str(files["directory"]), "--int8",
                                 str(files["classifier"]), "--data", str(files["images"]),
                                 "--out", str(tmp_path)], monkeypatch)
    assert_one_error(result, 2, str(files["directory"]), "a folder", progress=True)
    image = shared_data / IMAGE
    result = run(validate.main, ["--int8", str(files["classifier"]), "--data", str(image),
                                 "--labels", str(files["labels"]), "--out", str(tmp_path)],
                 monkeypatch)
    assert_one_error(result, 2, str(image), "this is a file", progress=True)
    result = run(detect.main, ["--model", str(files["detector"]), "--image",
                               str(files["directory"])], monkeypatch)
    assert_one_error(result, 2, str(files["directory"]), "folder holds no image")


def test_unreadable_files(files, monkeypatch, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file, whatever its permissions")
    locked = tmp_path / "locked.tflite"
    locked.write_bytes(files["classifier"].read_bytes())
    locked.chmod(0)
    try:
        for main, argv in ((check.main, [str(locked)]),
                           (detect.main, ["--model", str(locked), "--image", str(locked)])):
            assert_one_error(run(main, argv, monkeypatch), 2, str(locked), "cannot read")
    finally:
        locked.chmod(0o600)


def test_non_utf8_file_names(files, monkeypatch, tmp_path, no_compiler):
    """Such names work; where one appears in output or an error it stays printable."""
    classifier = _file(files, "non_utf8_classifier")
    detector = _file(files, "non_utf8_detector")
    shown = "bad\\xffname"
    result = run(check.main, [str(classifier)], monkeypatch)
    assert result.code == 0 and b"bad\xffname" in result.out, result.err
    result = run(compile.main, [str(classifier), "--out", str(tmp_path)], monkeypatch)
    assert result.code == 3 and "Traceback" not in result.err
    result = run(detect.main, ["--model", str(detector), "--image",
                               str(_file(files, "non_utf8_image")), "--json"], monkeypatch)
    assert result.code == 0, result.err
    assert json.loads(result.out.decode("utf-8", "surrogateescape"))["objects"]
    result = run(validate.main, ["--int8", str(classifier), "--float", str(classifier),
                                 "--data", str(files["images"]), "--out", str(tmp_path),
                                 "--latency-runs", "0", "--layer-images", "0"], monkeypatch)
    assert result.code == 0, result.err
    result = run(detect.main, ["--model", str(files["detector"]), "--image",
                               str(tmp_path / f"{NON_UTF8}.png")], monkeypatch)
    assert_one_error(result, 2, shown, "no such image")
    keras_copy = tmp_path / f"{NON_UTF8}.keras"
    keras_copy.write_bytes(files["keras"].read_bytes())
    result = run(quantize.main, ["--model", str(keras_copy), "--input-range=-1,1",
                                 "--out", str(tmp_path)], monkeypatch)
    assert_one_error(result, 2, shown, "rename the file")


def test_huge_image_is_a_clean_error(files, monkeypatch, tmp_path):
    from edgeq.errors import BadInputError
    from edgeq.images import Preprocess
    from quant.calibration import load_calibration

    huge = str(files["huge"])
    result = run(detect.main, ["--model", str(files["detector"]), "--image", huge],
                 monkeypatch)
    assert_one_error(result, 2, huge, "too large")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "huge.png").write_bytes(files["huge"].read_bytes())
    for model in ("classifier", "detector"):
        result = run(validate.main, ["--int8", str(files[model]), "--float", str(files[model]),
                                     "--data", str(folder), "--out", str(tmp_path / "out")],
                     monkeypatch)
        assert_one_error(result, 2, "huge.png", "too large", progress=True)
    with pytest.raises(BadInputError, match="none of the 1 calibration files.*too large"):
        load_calibration([folder / "huge.png"], Preprocess(32, 32), str(folder),
                         progress=False)


def test_odd_images_are_converted_to_rgb(files, monkeypatch, tmp_path):
    from edgeq.images import Preprocess
    from edgetpu.detect import read_image
    from quant.calibration import load_calibration

    paths = [files["images"] / name for name in ODD_IMAGES]
    result = run(detect.main, ["--model", str(files["detector"]), "--image",
                               str(files["images"]), "--json"], monkeypatch)
    assert result.code == 0, result.err
    records = [json.loads(line) for line in result.out.decode().splitlines()]
    assert sorted(Path(r["source"]).name for r in records) == sorted(ODD_IMAGES)
    assert all((r["width"], r["height"]) == (64, 48) for r in records)
    for name in ("gray16.png", "float.tif"):
        assert 0 < read_image(files["images"] / name).mean() < 250, name
    calibration = load_calibration(paths, Preprocess(32, 32), "odd", progress=False)
    assert calibration.pixels.shape == (len(ODD_IMAGES), 32, 32, 3) and not calibration.skipped
    # 16-bit and float images are scaled to 0..255, not clipped to white
    for name in ("gray16.png", "rgb16.png", "float.tif"):
        pixels = calibration.pixels[ODD_IMAGES.index(name)]
        assert 0 < pixels.mean() < 250, name
    result = run(validate.main, ["--int8", str(files["classifier"]), "--data",
                                 str(files["images"]), "--labels", str(files["labels"]),
                                 "--out", str(tmp_path), "--latency-runs", "0",
                                 "--layer-images", "0"], monkeypatch)
    assert result.code == 0, result.err


@pytest.mark.parametrize("where", ["file", "below_a_file"])
def test_out_that_cannot_be_a_folder(files, shared_data, monkeypatch, tmp_path, no_compiler,
                                     where):
    """Refused before any work, by every command that writes into --out."""
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file where the output folder should go\n")
    out = str(blocker if where == "file" else blocker / "sub")
    message = "this is a file" if where == "file" else "is a file"
    commands = [
        (quantize.main, ["--model", str(files["keras"]), "--input-range=-1,1"]),
        (compile.main, [str(files["classifier"])]),
        (validate.main, ["--int8", str(files["classifier"]), "--data", str(files["images"])]),
        (detect.main, ["--model", str(files["detector"]), "--image", str(shared_data / IMAGE)]),
    ]
    for main, argv in commands:
        result = run(main, [*argv, "--out", out], monkeypatch)
        assert_one_error(result, 2, out, message)
    result = run(validate.main, ["--int8", str(files["classifier"]), "--data",
                                 str(files["images"]), "--json", str(tmp_path)], monkeypatch)
    assert_one_error(result, 2, str(tmp_path), "this is a folder")


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Return ``arm(folder)``: from then on files written under ``folder`` hit /dev/full.

    The atomic writers open their temporary file with ``os.fdopen``; the descriptor of one
    under ``folder`` is pointed at /dev/full first, so the write fails with ENOSPC.
    """
    if not Path("/dev/full").exists() or not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /dev/full and /proc (Linux)")
    real = os.fdopen

    def arm(folder: Path) -> None:
        def fdopen(fd: int, *args, **kwargs):
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
                full = os.open("/dev/full", os.O_WRONLY)
                os.dup2(full, fd)
                os.close(full)
            return real(fd, *args, **kwargs)

        monkeypatch.setattr(os, "fdopen", fdopen)

    return arm


def test_full_disk_quantize(files, monkeypatch, tmp_path, full_disk):
    out = tmp_path / "out"
    out.mkdir()
    full_disk(out)
    result = run(quantize.main, ["--model", str(files["keras"]), "--input-range=-1,1",
                                 "--calib-dir", str(files["images"]), "--calib-size", "4",
                                 "--drift-images", "0", "--out", str(out)], monkeypatch)
    assert_one_error(result, 2, str(out), "No space left on device", progress=True)
    assert list(out.iterdir()) == []


def test_full_disk_detect_and_validate(files, shared_data, monkeypatch, tmp_path, full_disk):
    out = tmp_path / "out"
    out.mkdir()
    full_disk(out)
    result = run(detect.main, ["--model", str(files["detector"]), "--image",
                               str(shared_data / IMAGE), "--out", str(out)], monkeypatch)
    assert_one_error(result, 2, str(out), "the disk is full")
    assert list(out.iterdir()) == []
    result = run(validate.main, ["--int8", str(files["classifier"]), "--data",
                                 str(files["images"]), "--labels", str(files["labels"]),
                                 "--out", str(tmp_path / "report"), "--json",
                                 str(out / "report.json"), "--latency-runs", "0",
                                 "--layer-images", "0"], monkeypatch)
    assert_one_error(result, 2, "report.json", "the disk is full", progress=True)
    assert list(out.iterdir()) == []


def test_full_disk_report_folder(files, monkeypatch, tmp_path, full_disk):
    """validate-quant's report files (plots, report.json, report.md) on a full disk."""
    (tmp_path / "out").mkdir()
    full_disk(tmp_path / "out")
    result = run(validate.main, ["--int8", str(files["classifier"]), "--data",
                                 str(files["images"]), "--labels", str(files["labels"]),
                                 "--out", str(tmp_path / "out"), "--latency-runs", "0",
                                 "--layer-images", "0"], monkeypatch)
    assert_one_error(result, 2, "the disk is full", progress=True)
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
