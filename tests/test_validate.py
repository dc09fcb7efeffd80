"""validate-quant end to end on small real TFLite models built here, and on the shared models."""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeq.errors import BadInputError
from edgeq.images import decode_images, inception_preprocess
from edgeq.sidecar import sidecar_path
from quant.cli.validate import main
from quant.options import QuantizeOptions
from quant.sidecar import FloatParent, Sidecar
from quant.validate.reference import _bundled_tflite, converted_tflite
from quant.validate.runners import KerasRunner, TfliteRunner

SIZE = 32
CLASSES = 10
IMAGES = 40


def _tiny_model(size: int, seed: int = 1):
    from edgeq._tensorflow import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(CLASSES)(x)
    return keras.Model(inputs, outputs)


def _flipped(model):
    """Return a copy of ``model`` whose output classes 0 and 1 are swapped."""
    from edgeq._tensorflow import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    kernel, bias = clone.layers[-1].get_weights()
    kernel[:, [0, 1]] = kernel[:, [1, 0]]
    bias[[0, 1]] = bias[[1, 0]]
    clone.layers[-1].set_weights([kernel, bias])
    return clone


def _convert(model, path: Path, int8: bool = False, images: np.ndarray | None = None) -> Path:
    from edgeq._tensorflow import tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        def representative():
            for image in images:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Images, labels (the float model's own top-1) and four small TFLite models."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(1)
    images = root / "images"
    images.mkdir()
    for i in range(IMAGES):
        base = rng.integers(0, 256, 3)
        noise = rng.integers(-60, 60, (SIZE + 8, SIZE + 8, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"img_{i:03d}.png")
    model = _tiny_model(SIZE)
    spec = inception_preprocess(SIZE)
    paths = sorted(images.iterdir())
    batch = np.stack([spec.load(p) for p in paths])
    predicted = np.asarray(model(batch)).argmax(axis=1)
    labels = root / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label"])
        writer.writerows([f"images/{p.name}", int(c)]
                         for p, c in zip(paths, predicted, strict=True))
    flipped_share = float(np.isin(predicted, [0, 1]).mean())
    assert 0 < flipped_share < 1, "pick another seed: classes 0/1 must be predicted sometimes"
    return {
        "root": root, "images": images, "labels": labels, "keras": model,
        "flipped_share": flipped_share,  # type: ignore[dict-item]
        "float": _convert(model, root / "float.tflite"),
        "flipped": _convert(_flipped(model), root / "flipped.tflite"),
        "int8": _convert(model, root / "int8.tflite", int8=True, images=batch),
        "small": _convert(_tiny_model(SIZE - 8), root / "small.tflite"),
    }


def _run(tiny: dict, tmp_path: Path, *args: str) -> tuple[int, dict]:
    report = tmp_path / "r.json"
    code = main([*args, "--data", str(tiny["images"]), "--out", str(tmp_path / "out"),
                 "--json", str(report), "--latency-runs", "3"])
    return code, (json.loads(report.read_text()) if report.exists() else {})


def test_identical_models_agree_fully(tiny: dict, tmp_path: Path) -> None:
    code, report = _run(tiny, tmp_path, "--float", str(tiny["float"]), "--int8",
                        str(tiny["float"]), "--labels", str(tiny["labels"]))
    assert code == 0
    assert report["agreement"] == 1.0 and report["top5_overlap"] == 1.0
    assert report["kl_mean"] == pytest.approx(0.0, abs=1e-9)
    assert report["output_sqnr_db"] is None  # infinite: no noise at all
    assert report["float"]["top1"] == 1.0 and report["top1_drop"] == 0.0
    assert report["disagreements"] == []


def test_flipped_class_gives_the_exact_drop(tiny: dict, tmp_path: Path) -> None:
    share = tiny["flipped_share"]
    code, report = _run(tiny, tmp_path, "--float", str(tiny["float"]), "--int8",
                        str(tiny["flipped"]), "--labels", str(tiny["labels"]))
    assert code == 0
    assert report["float"]["top1"] == 1.0
    assert report["int8"]["top1"] == pytest.approx(1 - share)
    assert report["top1_drop"] == pytest.approx(share)
    assert report["agreement"] == pytest.approx(1 - share)
    assert report["drift_pts"] == pytest.approx(100 * share)
    pairs = {(d["float"], d["int8"]) for d in report["disagreements"]}
    assert pairs <= {(0, 1), (1, 0)}
    assert sum(d["count"] for d in report["disagreements"]) == round(share * IMAGES)


def test_max_drift_sets_the_exit_code(tiny: dict, tmp_path: Path) -> None:
    share_pts = 100 * tiny["flipped_share"]
    args = ["--float", str(tiny["float"]), "--int8", str(tiny["flipped"]),
            "--labels", str(tiny["labels"]), "--layer-images", "0"]
    code, report = _run(tiny, tmp_path, *args, "--max-drift", str(share_pts - 0.1))
    assert code == 1 and report["drift_exceeded"] is True  # report still written
    code, report = _run(tiny, tmp_path, *args, "--max-drift", str(share_pts + 0.1))
    assert code == 0 and report["drift_exceeded"] is False


def test_int8_report_files_and_layers(tiny: dict, tmp_path: Path) -> None:
    code, report = _run(tiny, tmp_path, "--float", str(tiny["float"]), "--int8",
                        str(tiny["int8"]), "--labels", str(tiny["labels"]))
    assert code == 0
    out = tmp_path / "out" / "validate-int8"
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "report.json", "layer_sqnr.png", "latency.png"} <= names
    assert not [n for n in names if n.startswith(".")]  # no staging leftovers
    assert json.loads((out / "report.json").read_text()) == report
    assert report["agreement"] > 0.7
    tensors = report["layers"]["tensors"]
    assert {t["op"] for t in tensors} >= {"CONV_2D", "DEPTHWISE_CONV_2D"}
    assert all(t["sqnr_db"] > 10 for t in tensors)
    sqnrs = [t["sqnr_db"] for t in tensors]
    assert sqnrs == sorted(sqnrs)  # worst first
    cpu = report["latency"]["cpu"]
    assert cpu["int8_ms_p50"] > 0 and cpu["float_ms_p50"] > 0
    assert set(report["latency"]["model_bytes"]) == {"int8", "float"}
    estimated = report["latency"]["edgetpu_estimated"]
    assert estimated["estimate"] is True
    assert set(estimated["ms"]) == {"usb3", "usb2", "pcie", "devboard"}
    assert all(ms > 0 for ms in estimated["ms"].values())
    text = (out / "report.md").read_text()
    assert "Per-layer error" in text and "Latency" in text and "top-1 agreement" in text
    assert "Edge TPU USB 3 (estimated) ms" in text and "(est.)" in text


def test_agreement_without_labels(tiny: dict, tmp_path: Path) -> None:
    code, report = _run(tiny, tmp_path, "--float", str(tiny["float"]), "--int8",
                        str(tiny["flipped"]), "--layer-images", "0")
    assert code == 0 and "top1" not in report["int8"]
    assert report["drift_pts"] == pytest.approx(100 * tiny["flipped_share"])


def test_bad_inputs_exit_2(tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["--float", str(tiny["float"]), "--int8", str(tiny["int8"])]
    code, _ = _run(tiny, tmp_path, "--float", str(tiny["small"]), "--int8", str(tiny["int8"]))
    assert code == 2
    assert "input sizes differ" in capsys.readouterr().err
    code, _ = _run(tiny, tmp_path, *base, "--labels", str(tmp_path / "missing.csv"))
    assert code == 2
    assert "missing.csv: no such labels file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*base, "--data", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no images found" in capsys.readouterr().err
    code, _ = _run(tiny, tmp_path, "--int8", str(tiny["int8"]), "--max-drift", "1")
    assert code == 2
    assert "--max-drift needs a float reference" in capsys.readouterr().err
    code, _ = _run(tiny, tmp_path, "--int8", str(tiny["int8"]))
    assert code == 2
    assert "nothing to measure" in capsys.readouterr().err
    code, _ = _run(tiny, tmp_path, *base, "--device", "usb1")
    assert code == 2
    assert "bad Edge TPU device 'usb1'" in capsys.readouterr().err
    code, _ = _run(tiny, tmp_path, "--float", str(tmp_path / "nope.tflite"), "--int8",
                   str(tiny["int8"]))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing half-written


def _write_sidecar(int8: Path, float_file: Path | None) -> None:
    """Write the sidecar quantize would have written beside ``int8`` for a Keras float model."""
    record = Sidecar(
        model=int8.stem, created="2025-01-01T00:00:00+00:00", tflite_sha256="0" * 64,
        float_parent=FloatParent("tiny", "classify", "tiny.keras",
                                 source_file=None if float_file is None else str(float_file)),
        preprocess=inception_preprocess(SIZE), options=QuantizeOptions(), derived={},
        versions={},
    )
    sidecar_path(int8).write_text(record.to_json())


def test_float_reference_from_the_sidecar(tiny: dict, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --float the sidecar's float model and preprocessing are used; --float wins."""
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "cache"))
    keras_file = tmp_path / "tiny.keras"
    tiny["keras"].save(keras_file)
    int8 = tmp_path / "tiny_int8.tflite"
    int8.write_bytes(tiny["int8"].read_bytes())
    _write_sidecar(int8, keras_file)
    labels = ("--labels", str(tiny["labels"]), "--layer-images", "0")
    code, report = _run(tiny, tmp_path, "--int8", str(int8), *labels, "--max-drift", "50")
    assert code == 0
    assert report["float_model"]["source"] == str(keras_file)
    assert report["float"]["top1"] == 1.0  # the labels are the float model's own top-1
    assert report["drift_pts"] is not None
    code, report = _run(tiny, tmp_path, "--float", str(tiny["flipped"]), "--int8", str(int8),
                        *labels)
    assert code == 0 and report["float_model"]["source"] == str(tiny["flipped"])


def test_unusable_sidecar_is_bad_input(tiny: dict, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    int8 = tmp_path / "tiny_int8.tflite"
    int8.write_bytes(tiny["int8"].read_bytes())
    labels = ("--labels", str(tiny["labels"]))
    _write_sidecar(int8, None)
    assert _run(tiny, tmp_path, "--int8", str(int8), *labels)[0] == 2
    err = capsys.readouterr().err
    assert f"{sidecar_path(int8)}: records no float model file" in err and "--float" in err
    _write_sidecar(int8, tmp_path / "gone.keras")
    assert _run(tiny, tmp_path, "--int8", str(int8), *labels)[0] == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert "gone.keras: no such file" in last and f"recorded in {sidecar_path(int8)}" in last
    assert "pass --float REF" in last
    sidecar_path(int8).write_text("{")
    assert _run(tiny, tmp_path, "--int8", str(int8), *labels)[0] == 2
    assert f"{sidecar_path(int8)}: the sidecar is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_folder_per_class_labels(tiny: dict, tmp_path: Path) -> None:
    rows = list(csv.reader(tiny["labels"].open()))[1:]
    data = tmp_path / "classes"
    for k in range(CLASSES):  # sorted folder names give the class indices
        (data / f"class_{k:02d}").mkdir(parents=True)
    for name, label in rows:
        target = data / f"class_{int(label):02d}" / Path(name).name
        target.write_bytes((tiny["root"] / name).read_bytes())
    report = tmp_path / "r.json"
    code = main(["--float", str(tiny["float"]), "--int8", str(tiny["float"]), "--data",
                 str(data), "--out", str(tmp_path / "out"), "--json", str(report),
                 "--latency-runs", "0", "--layer-images", "0"])
    assert code == 0 and json.loads(report.read_text())["float"]["top1"] == 1.0


def test_detection_map_against_coco(shared_data: Path, tmp_path: Path) -> None:
    model = shared_data / "models" / "ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite"
    report = tmp_path / "r.json"
    code = main(["--int8", str(model), "--data", str(shared_data / "coco_mini" / "val2017"),
                 "--annotations",
                 str(shared_data / "coco_mini" / "annotations" / "instances_val2017.json"),
                 "--limit", "12", "--latency-runs", "2", "--out", str(tmp_path / "out"),
                 "--json", str(report)])
    assert code == 0
    result = json.loads(report.read_text())
    assert result["task"] == "detect" and result["images"] == 12
    assert 0.05 < result["int8"]["map"] < result["int8"]["map50"] < 1.0


def test_detection_against_itself_scores_one(shared_data: Path, tmp_path: Path) -> None:
    model = str(shared_data / "models" / "ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite")
    report = tmp_path / "r.json"
    code = main(["--float", model, "--int8", model, "--data", str(shared_data / "coral"),
                 "--latency-runs", "0", "--layer-images", "0", "--out", str(tmp_path / "out"),
                 "--json", str(report)])
    assert code == 0
    result = json.loads(report.read_text())
    assert result["int8_vs_float"]["map"] == pytest.approx(1.0)
    assert result["drift_pts"] == pytest.approx(0.0)


def test_keras_runner_matches_float_tflite(tiny: dict) -> None:
    paths = sorted(tiny["images"].iterdir())[:6]
    spec = inception_preprocess(SIZE)
    pixels = decode_images(paths, spec)
    keras_out = KerasRunner(tiny["keras"], spec, batch_size=4).classify(pixels)
    tflite_out = TfliteRunner(tiny["float"], spec).classify(pixels)
    assert keras_out.shape == tflite_out.shape == (6, CLASSES)
    assert np.allclose(keras_out, tflite_out, atol=1e-4)


def test_keras_model_converted_once(tiny: dict, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "cache"))
    path = converted_tflite(tiny["keras"])
    assert path.is_file() and path.is_relative_to(tmp_path / "cache")
    mtime = path.stat().st_mtime_ns
    assert converted_tflite(tiny["keras"]) == path and path.stat().st_mtime_ns == mtime
    spec = inception_preprocess(SIZE)
    pixels = decode_images(sorted(tiny["images"].iterdir())[:3], spec)
    assert np.allclose(TfliteRunner(path, spec).classify(pixels),
                       TfliteRunner(tiny["float"], spec).classify(pixels), atol=1e-5)


def test_archive_with_one_bundled_tflite(tiny: dict, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "model.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny["float"], arcname="./model/float.tflite")
        tar.add(tiny["labels"], arcname="./model/labels.csv")
    extracted = _bundled_tflite(archive)
    assert extracted.read_bytes() == tiny["float"].read_bytes()
    assert _bundled_tflite(archive) == extracted  # cached
    with tarfile.open(tmp_path / "two.tgz", "w:gz") as tar:
        tar.add(tiny["float"], arcname="a.tflite")
        tar.add(tiny["int8"], arcname="b.tflite")
    with pytest.raises(BadInputError, match="exactly one float .tflite"):
        _bundled_tflite(tmp_path / "two.tgz")


@pytest.mark.slow
def test_acceptance_mobilenet_v2(shared_data: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    data = shared_data / "imagenet_val1300"
    code = main(["--float", str(shared_data / "models" / "mobilenet_v2_1.0_224.tgz"),
                 "--int8", str(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite"),
                 "--data", str(data), "--labels", str(data / "labels.csv"),
                 "--out", str(tmp_path / "out"), "--json", str(report)])
    assert code == 0
    result = json.loads(report.read_text())
    assert result["float"]["top1"] == pytest.approx(0.766, abs=0.002)
    assert result["int8"]["top1"] == pytest.approx(0.783, abs=0.002)
    assert result["label_offset"] == 1


@pytest.mark.slow
def test_float_ssd_reference_from_checkpoint(shared_data: Path, tmp_path: Path) -> None:
    from quant.detection.sources import load_ssd_checkpoint
    from quant.validate.reference import _aligned_head

    int8 = shared_data / "models" / "ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite"
    loaded = load_ssd_checkpoint(
        shared_data / "models" / "ssd_mobilenet_v1_0.75_depth_300x300_coco_float.tar.gz")
    head = _aligned_head(loaded.head, int8)
    assert head.settings.max_detections == 10 and loaded.head.settings.max_detections == 100
    float_path = converted_tflite(loaded.model, head)
    report = tmp_path / "r.json"
    code = main(["--float", str(float_path), "--int8", str(int8),
                 "--data", str(shared_data / "coco_mini" / "val2017"), "--annotations",
                 str(shared_data / "coco_mini" / "annotations" / "instances_val2017.json"),
                 "--latency-runs", "0", "--out", str(tmp_path / "out"), "--json", str(report)])
    assert code == 0
    result = json.loads(report.read_text())
    # The float checkpoint holds the int8 model's dequantized weights: close scores.
    assert abs(result["map_drop"]) < 0.02
    assert result["int8_vs_float"]["map50"] > 0.9
    assert min(t["sqnr_db"] for t in result["layers"]["tensors"]) > 15
