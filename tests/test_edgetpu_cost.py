"""edgetpu.cost: MACs against published numbers, cache vs streamed parameters, the features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripts_loader import load_script

from edgeq.errors import BadInputError
from edgetpu import cost
from edgetpu.analyze import analyze_model
from edgetpu.cli.check import main as check_main
from edgetpu.tflite_model import Model, Operator, Tensor, read_model


@pytest.mark.parametrize(("name", "published_macs"), [
    ("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", 569e6),  # minus ~1 M classifier
    ("mobilenet_v2_1.0_224_quant.tflite", 300e6),
])
def test_macs_match_published(shared_data: Path, name: str, published_macs: float) -> None:
    estimate = cost.estimate(shared_data / "coral" / name)
    assert estimate.macs == pytest.approx(published_macs, rel=0.01)


def test_small_model_is_cached_and_devices_order(shared_data: Path) -> None:
    estimate = cost.estimate(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite")
    features = estimate.features
    assert features.streamed_bytes == 0
    assert features.cached_bytes == features.parameter_bytes > 3_000_000
    assert features.input_bytes == 224 * 224 * 3
    latency = estimate.latency_ms
    assert set(latency) == set(cost.DEVICES)
    assert 0 < latency["usb3"] < latency["usb2"]


def _mapped_everything(path: Path) -> tuple[Model, list[bool]]:
    model = read_model(path)
    return model, [True] * len(model.operators)


def test_parameters_beyond_the_cache_are_streamed(shared_data: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model, mapped = _mapped_everything(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite")
    base = cost.graph_features(model, mapped)
    monkeypatch.setattr(cost, "ON_CHIP_CACHE_BYTES", 1_000_000)
    squeezed = cost.graph_features(model, mapped)
    assert squeezed.streamed_bytes == base.parameter_bytes - 1_000_000
    assert cost.latency_ms(squeezed)["usb2"] > cost.latency_ms(base)["usb2"]


def test_large_activations_leave_less_cache(shared_data: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """MobileNet v2 224's largest op holds at least a 112x112x96 and a 112x112x16 tensor."""
    model, mapped = _mapped_everything(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite")
    features = cost.graph_features(model, mapped)
    assert features.activation_bytes >= 112 * 112 * (96 + 16)
    monkeypatch.setattr(cost, "SRAM_BYTES", features.activation_bytes + 1_000_000)
    assert cost.graph_features(model, mapped).cached_bytes == 1_000_000


def test_cpu_ops_are_excluded(shared_data: Path) -> None:
    path = shared_data / "coral" / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    predicted = cost.estimate(path)
    model, mapped = _mapped_everything(path)
    everything = cost.estimate_model(model, None, mapped)
    assert predicted.features.edgetpu_ops == 64 and predicted.macs < everything.macs
    assert predicted.features.output_bytes > 0  # tensors handed back to the CPU part

    features = cost.graph_features(model, [op.mapped for op in analyze_model(path).ops])
    assert features.cpu_macs == everything.macs - predicted.macs
    assert features.cpu_elements >= 513 * 513 * 21  # the full-size resize on the CPU


def test_ssd_postprocessing_work_is_anchors_times_classes(shared_data: Path) -> None:
    path = shared_data / "models" / "ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite"
    features = cost.estimate(path).features
    assert features.postprocess_elements == 1917 * 91  # class scores [1, 1917, 90 + background]
    assert features.cpu_elements == 0 and features.cpu_macs == 0
    assert features.input_bytes == 300 * 300 * 3
    assert features.output_bytes == 1917 * 4 + 1917 * 91  # box encodings and scores back


def test_latency_is_the_features_times_the_constants(shared_data: Path) -> None:
    """Independent constants: 1 ms per Edge TPU op, 1 ms per MB streamed, nothing else."""
    model, mapped = _mapped_everything(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite")
    features = cost.graph_features(model, mapped)
    table = {"x": {"edgetpu_ops": 1.0, "streamed_bytes": 1e-6, "invoke": 0.5}}
    assert cost.latency_ms(features, table) == {
        "x": pytest.approx(0.5 + len(model.operators) + features.streamed_bytes * 1e-6)}
    assert cost.GraphFeatures.from_dict(features.to_dict()) == features
    assert len(features.vector()) == len(cost.FEATURES)


def test_features_stored_before_the_copy_and_pool_terms_still_read(shared_data: Path) -> None:
    """A table written before ``pool_macs`` and ``concat_copy_elements`` existed reads them
    as 0; a field that was always there is still required."""
    model, mapped = _mapped_everything(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite")
    stored = cost.graph_features(model, mapped).to_dict()
    del stored["pool_macs"], stored["concat_copy_elements"]
    old = cost.GraphFeatures.from_dict(stored)
    assert old.pool_macs == old.concat_copy_elements == 0
    del stored["array_macs"]
    with pytest.raises(KeyError):
        cost.GraphFeatures.from_dict(stored)


def test_pooling_windows_count_as_per_channel_work(shared_data: Path) -> None:
    """MobileNet v2's only pool averages its 7 x 7 x 1280 map: 49 reads per output."""
    model, mapped = _mapped_everything(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite")
    features = cost.graph_features(model, mapped)
    assert features.pool_macs == 7 * 7 * 1280
    assert features.vector()[cost.FEATURES.index("channel_macs")] == (
        features.depthwise_macs + 7 * 7 * 1280)


def _tensor(index: int, shape: tuple[int, ...], nbytes: int = 0) -> Tensor:
    return Tensor(index, f"t{index}", "INT8", shape, shape, nbytes, False, True)


def _graph(tensors: list[Tensor], ops: list[tuple[str, tuple[int, ...], int]]) -> Model:
    """A model of ``tensors`` and ``(opcode, inputs, output)`` ops in that order."""
    operators = tuple(Operator(i, opcode, 1, False, inputs, (output,))
                      for i, (opcode, inputs, output) in enumerate(ops))
    return Model(Path("synthetic.tflite"), 0, 3, 1, tuple(tensors), operators, (0,),
                 (ops[-1][2],))


def test_shared_concatenation_inputs_are_copied() -> None:
    """x (2) and y (4) each feed a convolution besides the first concatenation: copied; the
    second concatenation's inputs feed only it: written in place."""
    tensors = [_tensor(0, (1, 8, 8, 16)), _tensor(1, (32, 1, 1, 16), 512),
               _tensor(2, (1, 8, 8, 32)), _tensor(3, (32, 1, 1, 32), 1024),
               _tensor(4, (1, 8, 8, 32)), _tensor(5, (1, 8, 8, 64)),
               _tensor(6, (1, 8, 8, 32)), _tensor(7, (1, 8, 8, 96))]
    ops = [("CONV_2D", (0, 1), 2), ("CONV_2D", (2, 3), 4), ("CONCATENATION", (2, 4), 5),
           ("CONV_2D", (4, 3), 6), ("CONCATENATION", (5, 6), 7)]
    model = _graph(tensors, ops)
    assert cost.concat_copy_elements(model, [True] * 5) == 8 * 8 * 32 * 2
    # y's other reader on the CPU: on the Edge TPU only the concatenation reads it
    assert cost.concat_copy_elements(model, [True, True, True, False, True]) == 8 * 8 * 32


def test_transposed_convolution_runs_over_its_zero_upsampled_input() -> None:
    """Stride 2, 3 x 3, 16 -> 32 channels, 8 x 8 -> 16 x 16: every output pixel is a pass of
    the 16 input channels (one 64-row tile) x 9 taps x 32 outputs (288: five 64-column
    tiles) on the 64 x 64 array."""
    tensors = [_tensor(0, (4,), 16), _tensor(1, (32, 3, 3, 16), 4608),
               _tensor(2, (1, 8, 8, 16)), _tensor(3, (1, 16, 16, 32))]
    model = _graph(tensors, [("TRANSPOSE_CONV", (0, 1, 2), 3)])
    assert cost.array_macs(model, model.operators[0]) == 16 * 16 * 64 * (5 * 64)
    assert cost.op_macs(model, model.operators[0]) == 8 * 8 * 16 * 9 * 32


def test_compiled_model_is_refused(shared_data: Path) -> None:
    with pytest.raises(BadInputError, match="already compiled"):
        cost.estimate(shared_data / "coral" / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")


def test_edgetpu_check_prints_the_estimate(shared_data: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    source = shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
    assert check_main([str(source), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cost"]["macs"] == pytest.approx(300e6, rel=0.01)  # the published 300 M
    assert set(data["cost"]["latency_ms"]) == set(cost.DEVICES)
    assert check_main([str(source)]) == 0
    assert "Estimate (cost model, not a measurement)" in capsys.readouterr().out
    compiled = shared_data / "coral" / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    assert check_main([str(compiled), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cost"] is None


def test_joint_fit_recovers_known_constants(shared_data: Path) -> None:
    """Points made from known constants (shared Edge TPU ones, per-device link / CPU ones)
    on real graphs, with their CPU-only twins: the fit finds the constants, and held-out
    models are predicted within 2%."""
    bench = load_script("bench_edgetpu_cost")
    coral = shared_data / "coral"
    graphs, cpu_only = [], []
    for name in ("mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.5_160_quant",
                 "mobilenet_v1_0.75_192_quant", "mobilenet_v2_1.0_224_quant",
                 "deeplabv3_mnv2_dm05_pascal_quant", "tf2_mobilenet_v2_1.0_224_ptq"):
        path = coral / f"{name}.tflite"
        model = read_model(path)
        graphs.append((name, cost.graph_features(model,
                                                 [op.mapped for op in analyze_model(path).ops])))
        cpu_only.append((name, cost.graph_features(model, [False] * len(model.operators))))
    truth = {device: {"invoke": 0.2 * (i + 1), "array_macs": 1e-9, "channel_macs": 3e-8,
                      "edgetpu_ops": 0.01, "concat_copy_elements": 0.0,
                      "streamed_bytes": 2e-6 * (i + 1),
                      "boundary_bytes": 5e-6 * (i + 1), "cpu_macs": 1e-7, "cpu_elements": 1e-5,
                      "postprocess_elements": 2e-5}
             for i, device in enumerate(bench.FITTED_DEVICES)}
    points = [bench.Point(name, device, cost.latency_ms(features, truth)[device], features)
              for name, features in graphs for device in bench.FITTED_DEVICES]
    points += [bench.Point(name, device, cost.latency_ms(features, truth)[device], features,
                           cpu_only=True)
               for name, features in cpu_only for device in bench.FITTED_DEVICES]
    devices, calibration = bench.report(points)
    for device in bench.FITTED_DEVICES:
        assert devices[device]["loo_max_rel_error"] < 0.02
        for _, features in graphs:
            assert cost.latency_ms(features, calibration)[device] == pytest.approx(
                cost.latency_ms(features, truth)[device], rel=0.02)


def test_figures_faster_than_the_link_are_left_out(shared_data: Path) -> None:
    """A figure below the time its link needs for the parameters that cannot fit the SRAM
    (60 MB at USB 3's 500 MB/s: over 100 ms) is neither fitted nor scored, but listed."""
    bench = load_script("bench_edgetpu_cost")
    path = shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
    model, mapped = _mapped_everything(path)
    small = cost.graph_features(model, mapped)
    huge = cost.GraphFeatures(**{**small.to_dict(), "parameter_bytes": 60_000_000 + cost.SRAM_BYTES,
                                 "streamed_bytes": 60_000_000})
    assert bench.link_bound_ms(bench.Point("huge", "usb3", 50.0, huge)) == pytest.approx(120.0)
    points = [bench.Point(f"m{i}", device, 2.0 + i, small)
              for i in range(3) for device in bench.FITTED_DEVICES]
    points.append(bench.Point("huge", "usb3", 50.0, huge))
    devices, _ = bench.report(points)
    assert devices["usb3"]["points"] == 3
    assert [row["model"] for row in devices["usb3"]["below_link_bound"]] == ["huge"]
    assert devices["usb3"]["below_link_bound"][0]["link_bound_ms"] == pytest.approx(120.0)
