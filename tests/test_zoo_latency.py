"""The zoo's buildable rows and their estimated Coral latency (quant/zoo_edgetpu.json).

The table is checked against the live builder registries and, for the cheapest row, against
a rebuild by ``scripts/zoo_latency.py``'s own function.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import pytest
from scripts_loader import SCRIPTS, load_script

from edgeq.errors import BadInputError
from quant import zoo
from quant.cli.listing import add_listing_arguments, estimate_title, run_listing

SCRIPT = SCRIPTS / "zoo_latency.py"
CHEAPEST = "mobilenet_v1_0.25_128"


def _specs() -> list[zoo.ModelSpec]:
    return [zoo.get_model(name) for name in zoo.list_models()]


def _buildable() -> list[zoo.ModelSpec]:
    return [spec for spec in _specs() if spec.buildable]


def _listing(capsys, *argv: str):
    parser = argparse.ArgumentParser()
    add_listing_arguments(parser)
    code = run_listing(parser.parse_args(list(argv)))
    out = capsys.readouterr().out
    return code, (json.loads(out) if "--json" in argv and code == 0 else out)


def test_table_holds_exactly_the_buildable_rows():
    table = zoo.edgetpu_table()
    assert set(table["models"]) == {spec.name for spec in _buildable()}
    assert not set(table["models"]) & set(table["refused"])
    assert table["tool_version"] and table["settings"]["quantize"]["rounding"] == "nearest"
    from edgetpu.cost import GraphFeatures

    assert table["graph_features"] == list(GraphFeatures.__dataclass_fields__), (
        f"edgetpu.cost.GraphFeatures changed: run {zoo.REGENERATE}")
    assert all(set(entry["features"]) == set(table["graph_features"])
               for entry in table["models"].values())
    # Classifiers of both families, and every single-shot detector of the zoo.
    builders = {spec.builder for spec in _buildable()}
    assert builders == {"mobilenet_v1", "mobilenet_v2", "ssd_mobilenet_v1",
                        "ssd_mobilenet_v1_ppn", "ssd_mobilenet_v1_fpn", "ssd_mobilenet_v2",
                        "ssd_mobilenet_v3_large", "ssd_mobilenet_v3_small",
                        "ssd_mobilenet_edgetpu", "ssd_mobiledet_cpu", "ssd_mobiledet_dsp",
                        "ssd_mobiledet_edgetpu", "ssd_mobilenet_v2_mnasfpn", "ssd_spaghettinet",
                        "ssd_resnet50_v1_fpn", "ssd_resnet101_v1_fpn", "ssd_inception_v2"}
    assert zoo.get_model("ssdlite_mobilenet_v2_coco").buildable
    for spec in _specs():
        two_stage = spec.family in ("faster_rcnn", "rfcn", "mask_rcnn", "context_rcnn")
        assert spec.buildable != two_stage, spec.name


def test_buildable_follows_the_live_builder_registries():
    """The registry keys stored with the table are those quantize dispatches on today, and
    every row a registered builder refuses is refused by it (quickly: before any layer)."""
    script = load_script("zoo_latency")
    table = zoo.edgetpu_table()
    assert table["builders"] == script.registries()
    assert {spec.name for spec in script.candidates()} == (
        set(table["models"]) | set(table["refused"]))
    assert zoo.get_model("facessd_mobilenet_v2_quantized_open_image_v4").buildable
    for name in table["refused"]:
        with pytest.raises(BadInputError):
            script.float_model(zoo.get_model(name))


def test_features_load_and_latencies_are_sensible():
    for spec in _buildable():
        features = zoo.edgetpu_features(spec.name)
        assert features is not None and features.macs > 0 and features.edgetpu_ops > 0
        latency = zoo.edgetpu_latency_ms(spec.name)
        assert set(latency) == set(zoo.DEVICES), spec.name
        assert all(value > 0 for value in latency.values()), (spec.name, latency)
        assert latency["usb2"] >= latency["usb3"], (spec.name, latency)
        if spec.task == "classify":  # the builders' graphs have the published MACs (within
            # 12%: the v1 table's 34 M for 0.25/192 is off its series, 41 M x (192/224)^2 = 30 M)
            assert abs(features.macs / 1e6 - spec.macs_m) <= 0.12 * spec.macs_m, spec.name
    for spec in _specs():
        if not spec.buildable:
            assert zoo.edgetpu_latency_ms(spec.name) is None
    # More work is slower: a wider or larger MobileNet v2 takes longer on every device.
    small, large = (zoo.edgetpu_latency_ms(f"mobilenet_v2_{n}") for n in ("0.35_96", "1.4_224"))
    assert all(small[d] < large[d] for d in zoo.DEVICES)


def test_listing_json_carries_buildable_and_the_estimate(capsys):
    code, rows = _listing(capsys, "--list", "--json")
    assert code == 0 and len(rows) == len(zoo.list_models())
    for row in rows:
        assert isinstance(row["buildable"], bool)
        latency = row["edgetpu_latency_ms"]
        if row["buildable"]:
            assert set(latency) == set(zoo.DEVICES)
        else:
            assert latency is None
        assert zoo.ModelSpec.from_dict(row) == zoo.get_model(row["name"])


def test_listing_json_names_the_ops_left_on_the_cpu(capsys):
    """The analyzer's verdict on our int8 build of each buildable row, as stored."""
    code, rows = _listing(capsys, "--list", "--json")
    for row in rows:
        cpu_ops = row["edgetpu_cpu_ops"]
        if not row["buildable"]:
            assert cpu_ops is None
        elif row["task"] == "detect":
            assert cpu_ops["TFLite_Detection_PostProcess"] == 1, row["name"]
        else:
            assert cpu_ops == {}, row["name"]
    verdicts = {row["name"]: row["edgetpu_cpu_ops"] for row in rows}
    # Only post-processing: explicit padding (PAD), Inception's pools, SpaghettiNet's slices.
    for name in ("facessd_mobilenet_v2_quantized_open_image_v4", "ssd_inception_v2_coco",
                 "spaghettinet_edgetpu_l", "ssd_mobiledet_edgetpu_coco"):
        assert verdicts[name] == {"TFLite_Detection_PostProcess": 1}, name
    # 51,150 anchors x 91 classes are beyond the compiler's row size: the score tail too.
    assert verdicts["ssd_resnet_50_fpn_coco"]["LOGISTIC"] == 1


def test_table_keeps_published_timings_apart_from_the_estimate(capsys):
    code, out = _listing(capsys, "--list", "--task", "classify", "--input-size", "96")
    header, *lines, summary = out.splitlines()
    assert code == 0 and header.rstrip().endswith(estimate_title("usb3"))
    assert "Coral USB3 est. ms" in header and "timed on" in header
    published = header.index("published ms")
    estimate = header.index("Coral USB3 est. ms")
    for line in lines:  # Pixel 1 CPU timing in its column, the estimate in another
        spec = zoo.get_model(line.split()[0])
        assert line[published:].split()[0] == str(spec.latency_ms)
        assert "Pixel 1" in line
        assert float(line[estimate:]) == pytest.approx(
            zoo.edgetpu_latency_ms(spec.name)["usb3"], abs=0.01)
    assert "estimated from the graph, not measured" in summary
    _, out = _listing(capsys, "--list", "--device", "devboard", "--task", "classify")
    assert out.splitlines()[0].rstrip().endswith("Coral DevBoard est. ms")


def test_device_and_max_latency_filter_on_the_estimate(capsys):
    usb2 = {spec.name: zoo.edgetpu_latency_ms(spec.name)["usb2"] for spec in _buildable()}
    limit = statistics.median(usb2.values())
    _, rows = _listing(capsys, "--list", "--json", "--device", "usb2",
                       "--max-latency-ms", str(limit))
    assert {row["name"] for row in rows} == {n for n, ms in usb2.items() if ms <= limit}
    assert all(row["edgetpu_latency_ms"]["usb2"] <= limit for row in rows)
    # MobileNet v1 publishes no timing: only the estimate lets a latency bound keep it.
    assert any(row["family"] == "mobilenet_v1" for row in rows)
    _, rows = _listing(capsys, "--list", "--json", "--max-latency-ms", str(limit))
    assert {row["name"] for row in rows} == {
        s.name for s in _specs()
        if s.published_latency_ms is not None and s.published_latency_ms <= limit}
    # sorted by the estimate on the device, rows without one last
    _, rows = _listing(capsys, "--list", "--json", "--device", "pcie", "--sort", "coral")
    estimates = [row["edgetpu_latency_ms"]["pcie"] for row in rows if row["buildable"]]
    assert estimates == sorted(estimates) and rows[len(estimates)]["buildable"] is False
    code, _ = _listing(capsys, "--list", "--buildable-only")
    assert code == 0
    with pytest.raises(BadInputError, match="unknown Edge TPU device"):
        zoo.Constraints(device="usb1")


@pytest.mark.parametrize("device", [None, "devboard"])
@pytest.mark.parametrize("filters", [("--task", "classify", "--min-top1", "70"),
                                     ("--task", "detect", "--edgetpu-only"), ()])
def test_recommend_ranks_buildable_rows_by_the_estimate(capsys, filters, device):
    argv = ["--recommend", "--json", *filters] + (["--device", device] if device else [])
    code, result = _listing(capsys, *argv)
    assert code == 0
    constraints = zoo.Constraints(task=filters[1] if filters else None,
                                  min_top1=70 if "--min-top1" in filters else None,
                                  edgetpu_only="--edgetpu-only" in filters)
    pool = [s for s in zoo.select_models(constraints) if s.buildable]
    device = device or "usb3"
    fastest = min(pool, key=lambda s: zoo.edgetpu_latency_ms(s.name)[device])
    assert result["recommended"]["name"] == fastest.name and result["device"] == device
    assert result["recommended"]["buildable"] and result["candidates"] == len(pool)
    assert result["recommended"]["edgetpu_latency_ms"] == zoo.edgetpu_latency_ms(fastest.name)


def test_recommend_proposes_only_buildable_rows(capsys):
    # Only a two-stage detector publishes this mAP (Kitti, Pascal mAP@0.5 87).
    code, out = _listing(capsys, "--recommend", "--task", "detect", "--min-map", "80")
    assert code == 1
    assert out.startswith("no buildable zoo model meets --task detect --min-map 80")
    assert "this tool cannot build" in out
    assert zoo.recommend(zoo.Constraints(task="detect", min_map=80)).spec is None
    assert zoo.select_models(zoo.Constraints(task="detect", min_map=80))
    # Lower, the single-shot rows compete: the pick is buildable.
    spec = zoo.recommend(zoo.Constraints(task="detect", min_map=27)).spec
    assert spec is not None and spec.buildable


@pytest.mark.slow  # about 20 s of TensorFlow conversion; the default suite stays under 10 min
def test_stored_features_match_a_rebuild_of_the_cheapest_row():
    script = load_script("zoo_latency")
    spec = zoo.get_model(CHEAPEST)
    entry = script.measure(spec)
    assert entry["features"] == zoo.edgetpu_table()["models"][CHEAPEST]["features"]
    assert entry["builder"] == zoo.edgetpu_table()["models"][CHEAPEST]["builder"]


def test_listing_with_estimates_does_not_import_tensorflow():
    code = ("import sys; from quant.cli.quantize import main; "
            "assert main(['--list', '--device', 'usb2', '--sort', 'coral']) == 0; "
            "assert main(['--recommend', '--json']) == 0; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Coral USB2 est. ms" in result.stdout.splitlines()[0]


def test_quantize_device_flag_is_shared_with_qat(capsys):
    from quant.cli.quantize import main

    assert main(["--list", "--device", "cpu"]) == 2
    assert "give a Coral device: usb3, usb2, pcie, devboard" in capsys.readouterr().err
    assert main(["--model", "mobilenet_v1_0.25_128", "--device", "usb3"]) == 2
    assert "--device usb3 picks the Coral device of --list" in capsys.readouterr().err
