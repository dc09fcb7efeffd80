"""edgetpu.cost: MACs against published numbers, cache vs streamed parameters, link speeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgetpu import cost
from edgetpu.cli.check import main as check_main
from edgetpu.tflite_model import read_model
from quant.errors import BadInputError


@pytest.mark.parametrize(("name", "published_macs"), [
    ("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", 569e6),  # minus ~1 M classifier
    ("mobilenet_v2_1.0_224_quant.tflite", 300e6),
])
def test_macs_match_published(shared_data: Path, name: str, published_macs: float) -> None:
    estimate = cost.estimate(shared_data / "coral" / name)
    assert estimate.macs == pytest.approx(published_macs, rel=0.01)


def test_small_model_is_cached_and_links_order(shared_data: Path) -> None:
    estimate = cost.estimate(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite")
    assert estimate.streamed_bytes == 0
    assert estimate.cached_bytes == estimate.parameter_bytes > 3_000_000
    assert estimate.input_bytes == 224 * 224 * 3
    latency = estimate.latency_ms
    assert latency["pcie"] < latency["usb3"] < latency["usb2"]


def test_parameters_beyond_the_cache_are_streamed(shared_data: Path) -> None:
    model = read_model(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite")
    mapped = [True] * len(model.operators)
    base = cost.estimate_model(model, cost.CALIBRATION, mapped)
    small = cost.ON_CHIP_CACHE_BYTES
    try:
        cost.ON_CHIP_CACHE_BYTES = 1_000_000
        squeezed = cost.estimate_model(model, cost.CALIBRATION, mapped)
    finally:
        cost.ON_CHIP_CACHE_BYTES = small
    assert squeezed.streamed_bytes == base.parameter_bytes - 1_000_000
    assert squeezed.latency_ms["usb2"] > base.latency_ms["usb2"]


def test_cpu_ops_are_excluded(shared_data: Path) -> None:
    path = shared_data / "coral" / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    predicted = cost.estimate(path)
    everything = cost.estimate_model(read_model(path), cost.CALIBRATION,
                                     [True] * len(read_model(path).operators))
    assert predicted.edgetpu_ops == 64 and predicted.macs < everything.macs
    assert predicted.output_bytes > 0  # tensors handed back to the CPU part


def test_ssd_postprocessing_work_is_anchors_times_classes(shared_data: Path) -> None:
    path = shared_data / "models" / "ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite"
    macs, ops, link_ms, work = cost.features(path)
    assert work == 1917 * 91  # class scores [1, 1917, 90 + background]
    estimate = cost.estimate(path)
    assert estimate.cpu_elements == work and estimate.edgetpu_ops == ops
    assert estimate.input_bytes == 300 * 300 * 3
    assert estimate.output_bytes == 1917 * 4 + 1917 * 91  # box encodings and scores back
    assert link_ms == pytest.approx((estimate.input_bytes + estimate.output_bytes)
                                    / cost.LINK_BYTES_PER_SECOND["usb3"] * 1e3, abs=1e-3)


def test_calibrated_latency_of_the_published_mobilenet_v2(shared_data: Path) -> None:
    """Coral publishes 2.6 ms (USB 3) for this very file; the fit keeps it within 25%."""
    estimate = cost.estimate(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite")
    assert estimate.latency_ms["usb3"] == pytest.approx(2.6, rel=0.25)


def test_compiled_model_is_refused(shared_data: Path) -> None:
    with pytest.raises(BadInputError, match="already compiled"):
        cost.estimate(shared_data / "coral" / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")


def test_edgetpu_check_prints_the_estimate(shared_data: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    source = shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
    assert check_main([str(source), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cost"]["macs"] == cost.estimate(source).macs
    assert set(data["cost"]["latency_ms"]) == {"usb3", "usb2", "pcie"}
    assert check_main([str(source)]) == 0
    assert "Estimate (cost model, not a measurement)" in capsys.readouterr().out
    compiled = shared_data / "coral" / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    assert check_main([str(compiled), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cost"] is None
