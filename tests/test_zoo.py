"""The model zoo against the published tables, its filters, recommendation and listing CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys

import pytest

from edgeq.errors import BadInputError
from quant import zoo
from quant.cli.listing import add_listing_arguments, format_table, run_listing

# Rows copied verbatim from the published markdown tables (tensorflow/models).
V2_README_ROWS = """
[mobilenet_v2_1.4_224](https://storage.googleapis.com/mobilenet_v2/checkpoints/mobilenet_v2_1.4_224.tgz)   | 582      | 6.06           | 75.0           | 92.5           | 138.0
[mobilenet_v2_1.0_224](https://storage.googleapis.com/mobilenet_v2/checkpoints/mobilenet_v2_1.0_224.tgz)   | 300      | 3.47           | 71.8           | 91.0           | 73.8
[mobilenet_v2_0.75_128](https://storage.googleapis.com/mobilenet_v2/checkpoints/mobilenet_v2_0.75_128.tgz) | 69       | 2.61           | 63.2           | 85.3           | 21.9
[mobilenet_v2_0.5_160](https://storage.googleapis.com/mobilenet_v2/checkpoints/mobilenet_v2_0.5_160.tgz)   | 50       | 1.95           | 61.0           | 83.2           | 14.9
[mobilenet_v2_0.35_96](https://storage.googleapis.com/mobilenet_v2/checkpoints/mobilenet_v2_0.35_96.tgz)   | 11       | 1.66           | 45.5           | 70.4           | 4.5
"""  # noqa: E501
V1_README_ROWS = """
[MobileNet_v1_1.0_224](http://download.tensorflow.org/models/mobilenet_v1_2018_08_02/mobilenet_v1_1.0_224.tgz)|569|4.24|70.9|89.9|
[MobileNet_v1_0.75_160](http://download.tensorflow.org/models/mobilenet_v1_2018_08_02/mobilenet_v1_0.75_160.tgz)|162|2.59|65.3|86.0|
[MobileNet_v1_0.50_192](http://download.tensorflow.org/models/mobilenet_v1_2018_08_02/mobilenet_v1_0.5_192.tgz)|110|1.34|61.7|83.6|
[MobileNet_v1_0.25_128](http://download.tensorflow.org/models/mobilenet_v1_2018_08_02/mobilenet_v1_0.25_128.tgz)|14|0.47|41.5|66.3|
"""  # noqa: E501
DETECTION_ROWS = """
[ssd_mobilenet_v1_coco](http://download.tensorflow.org/models/object_detection/ssd_mobilenet_v1_coco_2018_01_28.tar.gz) | 30 | 21 | Boxes
[ssd_mobilenet_v1_0.75_depth_quantized_coco ☆](http://download.tensorflow.org/models/object_detection/ssd_mobilenet_v1_0.75_depth_quantized_300x300_coco14_sync_2018_07_18.tar.gz) | 29 | 16 | Boxes
[ssdlite_mobilenet_v2_coco](http://download.tensorflow.org/models/object_detection/ssdlite_mobilenet_v2_coco_2018_05_09.tar.gz) | 27 | 22 | Boxes
[faster_rcnn_resnet50_lowproposals_coco](http://download.tensorflow.org/models/object_detection/faster_rcnn_resnet50_lowproposals_coco_2018_01_28.tar.gz) | 64 |  | Boxes
[mask_rcnn_inception_v2_coco](http://download.tensorflow.org/models/object_detection/mask_rcnn_inception_v2_coco_2018_01_28.tar.gz) | 79 | 25 | Masks
[ssd_mobilenet_v3_small_coco](http://download.tensorflow.org/models/object_detection/ssd_mobilenet_v3_small_coco_2020_01_14.tar.gz) | 43 | 15.4 | Boxes
[ssd_mobilenet_edgetpu_coco](https://storage.cloud.google.com/mobilenet_edgetpu/checkpoints/ssdlite_mobilenet_edgetpu_coco_quant.tar.gz) | 6.6 | -/24.3 | Boxes
[ssd_mobiledet_dsp_coco](http://download.tensorflow.org/models/object_detection/ssdlite_mobiledet_dsp_320x320_coco_2020_05_19.tar.gz) | 12.3 | 28.9/28.8 | Boxes
[faster_rcnn_resnet101_kitti](http://download.tensorflow.org/models/object_detection/faster_rcnn_resnet101_kitti_2018_01_28.tar.gz) | 79 | 87 | Boxes
[facessd_mobilenet_v2_quantized_open_image_v4](http://download.tensorflow.org/models/object_detection/facessd_mobilenet_v2_quantized_320x320_open_image_v4.tar.gz) [^3] | 20 | 73 (faces) | Boxes
[ssd_resnet_101_fpn_oidv4](http://download.tensorflow.org/models/object_detection/ssd_resnet101_v1_fpn_shared_box_predictor_oid_512x512_sync_2019_01_20.tar.gz) | 237 | 38 | Boxes
[faster_rcnn_resnet50_fgvc](http://download.tensorflow.org/models/object_detection/faster_rcnn_resnet50_fgvc_2018_07_19.tar.gz) | 366 | 55 | Boxes
[faster_rcnn_resnet101_ava_v2.1](http://download.tensorflow.org/models/object_detection/faster_rcnn_resnet101_ava_v2.1_2018_04_30.tar.gz) | 93 | 11 | Boxes
"""  # noqa: E501

# Rows per published detection table (tf1_detection_zoo.md).
TABLE_COUNTS = {
    "COCO-trained models": 25, "Mobile models": 4, "Pixel4 Edge TPU models": 2,
    "Pixel4 DSP models": 1, "Kitti-trained models": 1, "Open Images-trained models": 3,
    "Open Images-trained models (Open Images Challenge metric)": 3,
    "iNaturalist Species-trained models": 2, "AVA v2.1 trained models": 1,
    "Snapshot Serengeti Camera Trap trained models": 2, "Pixel 6 Edge TPU models": 3,
}


def _rows(text: str) -> list[tuple[str, str, list[str]]]:
    rows = []
    for line in text.strip().splitlines():
        match = re.match(r"\[([^\]]+)\]\(([^)]+)\)[^|]*\|(.*)", line)
        name, url, rest = match.groups()
        rows.append((name.split(" ")[0], url, [c.strip() for c in rest.strip("|").split("|")]))
    return rows


def _specs(task: str | None = None) -> list[zoo.ModelSpec]:
    return [zoo.get_model(name) for name in zoo.list_models(task=task)]


def test_counts():
    assert len(zoo.list_models("mobilenet_v2_*")) == 22
    assert len(zoo.list_models("mobilenet_v1_*")) == 16
    assert [s.family for s in _specs("classify")].count("mobilenet_v2") == 22
    per_table: dict[str, int] = {}
    for spec in _specs("detect"):
        table = spec.source_table.split(" (", 1)[1][:-1]
        per_table[table] = per_table.get(table, 0) + 1
    assert per_table == TABLE_COUNTS
    assert len(zoo.list_models()) == 38 + sum(TABLE_COUNTS.values())


@pytest.mark.parametrize("row", _rows(V2_README_ROWS), ids=lambda r: r[0])
def test_mobilenet_v2_rows_as_published(row):
    name, url, (macs, params, top1, top5, pixel1) = row
    spec = zoo.get_model(name)
    assert spec.url == url
    assert (spec.macs_m, spec.params_m, spec.top1, spec.top5, spec.latency_ms) == (
        float(macs), float(params), float(top1), float(top5), float(pixel1))
    assert spec.checkpoint_prefix == f"{name}.ckpt"
    assert spec.timing == "Mobile CPU (ms) Pixel 1"


@pytest.mark.parametrize("row", _rows(V1_README_ROWS), ids=lambda r: r[0])
def test_mobilenet_v1_rows_as_published(row):
    _, url, (macs, params, top1, top5) = row
    name = url.rsplit("/", 1)[1].removesuffix(".tgz")
    spec = zoo.get_model(name)
    assert spec.url == url
    assert (spec.macs_m, spec.params_m, spec.top1, spec.top5) == (
        float(macs), float(params), float(top1), float(top5))
    assert spec.latency_ms is None and spec.timing is None  # the v1 table has no latency


@pytest.mark.parametrize("row", _rows(DETECTION_ROWS), ids=lambda r: r[0])
def test_detection_rows_as_published(row):
    name, url, (speed, published_map, outputs) = row
    spec = zoo.get_model(name)
    assert spec.url == url
    assert spec.speed_ms == float(speed)
    last = published_map.split("/")[-1].split(" ")[0]
    assert spec.map == (float(last) if last else None)
    assert spec.outputs == outputs
    assert spec.checkpoint_prefix == "model.ckpt"
    if "/" in published_map or "(" in published_map:
        assert (spec.map_metric.split(" (")[0], published_map) in [
            (column.split(" (")[0], cell) for column, cell in spec.extra_columns]


def test_classifier_metadata():
    for spec in _specs("classify"):
        mult, size = spec.name.rsplit("_", 2)[1:]
        assert (spec.depth_multiplier, spec.input_size) == (float(mult), int(size))
        assert spec.num_classes == 1001
        assert (spec.preprocess.height, spec.preprocess.input_range) == (spec.input_size,
                                                                        (-1.0, 1.0))
        assert spec.edgetpu_capable


def test_detection_metadata():
    ssd = zoo.get_model("ssdlite_mobilenet_v2_coco")
    assert (ssd.family, ssd.input_size, ssd.num_classes, ssd.coco_map) == (
        "ssdlite_mobilenet_v2", 300, 90, 22)
    assert ssd.preprocess.height == 300 and ssd.edgetpu_capable
    assert zoo.get_model("ssd_mobilenet_edgetpu_coco").input_size == 320
    assert zoo.get_model("ssd_mobilenet_v1_0.75_depth_quantized_coco").depth_multiplier == 0.75
    kitti = zoo.get_model("faster_rcnn_resnet101_kitti")
    assert (kitti.input_size, kitti.num_classes, kitti.coco_map) == (None, 2, None)
    assert kitti.map_metric == "Pascal mAP@0.5" and kitti.preprocess is None
    assert "min_dimension 600 max_dimension 1987" in kitti.resizer
    assert zoo.get_model("faster_rcnn_nas").input_size == 1200  # fixed_shape_resizer


def test_two_stage_detectors_are_not_edgetpu_capable():
    two_stage = [s for s in _specs("detect") if s.family in ("faster_rcnn", "rfcn",
                                                             "mask_rcnn", "context_rcnn")]
    assert len(two_stage) == 23
    for spec in two_stage:
        assert not spec.edgetpu_capable
        assert "CropAndResize" in spec.edgetpu_note and "static shapes" in spec.edgetpu_note
    # Our PTQ lowers the hard-swish of MobileNetV3 and MobileDet-CPU.
    assert zoo.get_model("ssd_mobilenet_v3_large_coco").edgetpu_capable
    assert "rewrites it" in zoo.get_model("ssd_mobilenet_v3_small_coco").edgetpu_note
    assert zoo.get_model("ssd_mobiledet_cpu_coco").edgetpu_capable
    assert "rewrites it" in zoo.get_model("ssd_mobiledet_cpu_coco").edgetpu_note


def test_unknown_name_suggests_the_closest():
    with pytest.raises(BadInputError) as info:
        zoo.get_model("mobilenet_v2_1.0_244")
    message = str(info.value)
    assert "mobilenet_v2_1.0_224" in message and "\n" not in message
    with pytest.raises(BadInputError, match="see quantize --list"):
        zoo.get_model("resnet")
    assert zoo.is_model("ssd_mobilenet_v1_coco") and not zoo.is_model("resnet")


def test_registry_rejects_duplicates_and_specs_are_frozen():
    spec = zoo.get_model("mobilenet_v1_1.0_224")
    with pytest.raises(ValueError, match="duplicate"):
        zoo._register(spec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.top1 = 99.0  # type: ignore[misc]
    assert zoo.get_model("mobilenet_v1_1.0_224").top1 == 70.9


def test_json_round_trip():
    for name in zoo.list_models():
        spec = zoo.get_model(name)
        assert zoo.ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(BadInputError, match="unknown model spec keys"):
        zoo.ModelSpec.from_dict({**spec.to_dict(), "colour": "red"})


def test_filters():
    small = zoo.select_models(zoo.Constraints(task="classify", max_macs=100))
    assert len(small) == 20  # 14 MobileNetV2 and 6 MobileNetV1 rows at or below 100 M MACs
    assert all(s.macs_m <= 100 for s in small)
    at_224 = zoo.select_models(zoo.Constraints(task="classify", input_size=224))
    assert len(at_224) == 10
    # Detectors publish no top-1 and classifiers no mAP: each filter drops the other task.
    assert {s.task for s in zoo.select_models(zoo.Constraints(min_top1=50))} == {"classify"}
    assert {s.task for s in zoo.select_models(zoo.Constraints(min_map=20))} == {"detect"}
    # MobileNetV1 publishes no latency, so a latency bound keeps only MobileNetV2.
    fast = zoo.select_models(zoo.Constraints(task="classify", max_latency_ms=20))
    assert {s.family for s in fast} == {"mobilenet_v2"} and len(fast) == 10
    tpu = zoo.select_models(zoo.Constraints(task="detect", edgetpu_only=True))
    # 47 rows less 23 two-stage (MobileDet-CPU's hard-swish is lowered by our PTQ)
    assert len(tpu) == 24 and all(s.edgetpu_capable for s in tpu)
    with pytest.raises(BadInputError):
        zoo.Constraints(task="segment")
    with pytest.raises(BadInputError):
        zoo.select_models(sort="size")


def test_sorting():
    by_macs = zoo.select_models(zoo.Constraints(task="classify"), sort="macs")
    assert [s.name for s in by_macs[:2]] == ["mobilenet_v2_0.35_96", "mobilenet_v1_0.25_128"]
    by_top1 = zoo.select_models(zoo.Constraints(task="classify"), sort="top1")
    assert by_top1[0].name == "mobilenet_v2_1.4_224"
    assert zoo.select_models()[0].name == "mobilenet_v2_1.4_224"  # table order


def test_recommend_prefers_the_smallest_meeting_all_constraints():
    # rank="size": the published-size ranking (the default ranks by the Coral estimate).
    result = zoo.recommend(zoo.Constraints(task="classify", min_top1=70), rank="size")
    # Candidates: v2 1.4/224, 1.3/224, 1.0/224, 1.0/192 and v1 1.0/224, 1.0/192.
    assert result.spec.name == "mobilenet_v2_1.0_192" and result.candidates == 6
    assert (result.limiting, result.limiting_count) == ("min_top1", 6)
    result = zoo.recommend(zoo.Constraints(task="classify", min_top1=60, max_params=2),
                           rank="size")
    assert result.spec.name == "mobilenet_v2_0.5_160"  # 50 M MACs, 61.0 %
    assert result.limiting == "max_params"
    none = zoo.recommend(zoo.Constraints(task="classify", max_macs=5), rank="size")
    assert none.spec is None and none.candidates == 0


def _listing(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_listing_arguments(parser)
    return run_listing(parser.parse_args(argv))


def test_cli_list_table(capsys):
    assert _listing(["--list", "--task", "classify", "--max-macs", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "task", "input", "MACs(M)"]
    names = [line.split()[0] for line in lines[1:-1]]
    assert names == ["mobilenet_v2_0.5_96", "mobilenet_v2_0.35_128", "mobilenet_v2_0.35_96",
                     "mobilenet_v1_0.25_128"]
    assert lines[-1].startswith("4 of 85 models (--task classify --max-macs 20)")
    # aligned: every column starts at the same offset as its header
    assert len({line.index("classify") for line in lines[1:-1]}) == 1
    assert format_table([]).split() == lines[0].split()


def test_cli_json_round_trip(capsys):
    assert _listing(["--list", "--json", "--task", "detect", "--edgetpu-only"]) == 0
    data = json.loads(capsys.readouterr().out)
    specs = [zoo.ModelSpec.from_dict(item) for item in data]
    assert specs == zoo.select_models(zoo.Constraints(task="detect", edgetpu_only=True))


def test_cli_recommend(capsys):
    assert _listing(["--recommend", "--task", "classify", "--min-top1", "70"]) == 0
    out = capsys.readouterr().out
    # Ranked by the estimated Coral USB 3 latency among the 6 (buildable) candidates.
    fastest = min(zoo.select_models(zoo.Constraints(task="classify", min_top1=70)),
                  key=lambda s: zoo.edgetpu_latency_ms(s.name)["usb3"])
    assert out.startswith(f"{fastest.name}: the fastest of 6 buildable zoo models")
    assert "most limiting filter: --min-top1" in out
    assert _listing(["--recommend", "--json", "--max-params", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["recommended"]["name"] == "mobilenet_v1_0.25_128"


def test_cli_recommend_without_match_exits_1(capsys):
    assert _listing(["--recommend", "--task", "classify", "--max-macs", "5"]) == 1
    assert capsys.readouterr().out.strip() == (
        "no buildable zoo model meets --task classify --max-macs 5")


def test_listing_does_not_import_tensorflow():
    code = ("import sys; from quant.cli.listing import run_listing; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
