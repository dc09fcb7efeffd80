"""edgetpu-detect on the real SSD: JSON lines, annotated output, labels, and bad inputs."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from edgetpu.cli.detect import main

#: Runs on the base install (no TensorFlow): the CI job for the Coral host.
pytestmark = pytest.mark.coral_host


@pytest.fixture(scope="module")
def model(shared_data):
    return str(shared_data / "models/ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite")


@pytest.fixture(scope="module")
def labels(shared_data):
    return str(shared_data / "models/ssd_mobilenet_v1_0.75_depth_labelmap.txt")


def test_kites_and_people_as_json_lines(model, labels, shared_data, tmp_path, capsys):
    image = shared_data / "coral/kite_and_cold.jpg"
    code = main(["--model", model, "--labels", labels, "--image", str(image), "--json",
                 "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0
    (line,) = captured.out.strip().splitlines()
    record = json.loads(line)
    names = {obj["label"] for obj in record["objects"]}
    assert {"person", "kite"} <= names
    width, height = Image.open(image).size
    assert (record["width"], record["height"]) == (width, height)
    for obj in record["objects"]:
        xmin, ymin, xmax, ymax = obj["box"]
        assert 0 <= xmin < xmax <= width + 1 and 0 <= ymin < ymax <= height + 1
        assert obj["score"] >= 0.4
    assert set(record["timing_ms"]) == {"preprocess", "inference", "postprocess"}
    assert "FPS" in captured.err
    annotated = tmp_path / "kite_and_cold_detections.jpg"
    assert Image.open(annotated).size == (width, height)
    assert not list(tmp_path.glob("*.part"))


def test_folder_threshold_and_top_k(model, shared_data, tmp_path, capsys):
    for name in ("kite_and_cold.jpg", "grace_hopper.bmp"):
        (tmp_path / name).write_bytes((shared_data / "coral" / name).read_bytes())
    assert main(["--model", model, "--image", str(tmp_path), "--json", "--top-k", "2",
                 "--threshold", "0.3"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["source"].rsplit("/", 1)[1] for r in records] == [
        "grace_hopper.bmp", "kite_and_cold.jpg"]
    assert all(0 < len(r["objects"]) <= 2 for r in records)
    assert records[0]["objects"][0]["label"] == "0"  # no label file: class index (person)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--image", "{tmp}/broken.jpg"], 2, "not a readable image"),
    (["--image", "{tmp}/missing.jpg"], 2, "no such image"),
    (["--camera", "57"], 3, "camera 57 cannot be opened"),
    (["--video", "{tmp}/missing.mp4"], 2, "no such video"),
    (["--image", "{data}/coral/kite_and_cold.jpg", "--threshold", "2"], 2, "threshold"),
])
def test_bad_inputs_are_one_line_errors(model, shared_data, tmp_path, capsys, args, code,
                                        message):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    argv = [a.format(tmp=tmp_path, data=shared_data) for a in args]
    assert main(["--model", model, *argv]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_model_without_postprocessing_is_refused(shared_data, capsys):
    classifier = shared_data / "coral/mobilenet_v2_1.0_224_quant.tflite"
    code = main(["--model", str(classifier), "--image",
                 str(shared_data / "coral/kite_and_cold.jpg")])
    assert code == 2
    assert "TFLite_Detection_PostProcess" in capsys.readouterr().err


def test_compiled_model_without_edge_tpu_says_how_to_install(shared_data, capsys):
    compiled = shared_data / "coral/mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    code = main(["--model", str(compiled), "--image",
                 str(shared_data / "coral/kite_and_cold.jpg")])
    assert code == 3
    assert "libedgetpu1-std" in capsys.readouterr().err


def test_video_in_annotated_video_out(model, labels, shared_data, tmp_path, capsys):
    import cv2
    import numpy as np

    frame = np.asarray(Image.open(shared_data / "coral/kite_and_cold.jpg").resize((320, 240)))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for _ in range(3):
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    out = tmp_path / "out"
    assert main(["--model", model, "--labels", labels, "--video", str(video), "--json",
                 "--out", str(out)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert all(r["objects"] for r in records)
    written = cv2.VideoCapture(str(out / "clip_detections.mp4"))
    assert written.isOpened() and int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert not list(out.glob(".*part*"))
