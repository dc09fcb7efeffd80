"""Interpreter creation, Edge TPU device handling and the input / output adapters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.errors import BadInputError, MissingToolError
from edgeq.images import inception_preprocess
from edgetpu import adapters, runtime
from edgetpu.adapters import BBox


@pytest.mark.parametrize("device", [":0", ":12", "usb", "usb:0", "usb:3", "pci", "pci:1"])
def test_valid_device_strings(device: str) -> None:
    assert runtime.validate_device(device) == device


@pytest.mark.parametrize("device", ["", "0", "usb0", "usb:", "USB", "pci:x", "tpu:0", ":"])
def test_bad_device_strings(device: str) -> None:
    with pytest.raises(BadInputError, match="bad Edge TPU device"):
        runtime.validate_device(device)


@pytest.mark.parametrize(("system", "library"), [
    ("Linux", "libedgetpu.so.1"), ("Darwin", "libedgetpu.1.dylib"), ("Windows", "edgetpu.dll"),
])
def test_library_table(system: str, library: str) -> None:
    assert runtime.edgetpu_library_name(system) == library


def test_library_unknown_platform() -> None:
    with pytest.raises(MissingToolError, match="not available on Plan9"):
        runtime.edgetpu_library_name("Plan9")


def test_default_backend_is_litert() -> None:
    assert runtime.get_backend().name == "ai-edge-litert"
    assert runtime.available_backends()[0] == "ai-edge-litert"
    with pytest.raises(BadInputError, match="unknown interpreter"):
        runtime.get_backend("onnx")


def test_missing_and_garbage_models(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such model file"):
        runtime.make_interpreter(tmp_path / "absent.tflite")
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(BadInputError, match="not a TFLite model"):
        runtime.make_interpreter(garbage)


def test_compiled_model_needs_the_runtime(shared_data: Path) -> None:
    compiled = shared_data / "coral" / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    assert runtime.is_edgetpu_model(compiled)
    source = shared_data / "coral" / "mobilenet_v1_0.25_128_quant.tflite"
    assert not runtime.is_edgetpu_model(source)
    if runtime.list_edge_tpus():
        pytest.skip("an Edge TPU is attached here")
    with pytest.raises(MissingToolError, match="libedgetpu1-std") as info:
        runtime.make_interpreter(compiled)
    assert info.value.exit_code == 3


def test_bad_device_rejected_before_loading(shared_data: Path) -> None:
    with pytest.raises(BadInputError, match="bad Edge TPU device"):
        runtime.make_interpreter(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite",
                                 device="usb-1")


def test_sysfs_discovery(tmp_path: Path) -> None:
    usb = tmp_path / "usb" / "devices"
    for name, vendor, product in [("1-1", "18d1", "9302"), ("1-2", "046d", "c52b"),
                                  ("2-1", "1a6e", "089a")]:
        (usb / name).mkdir(parents=True)
        (usb / name / "idVendor").write_text(vendor + "\n")
        (usb / name / "idProduct").write_text(product + "\n")
    pci = tmp_path / "pci" / "devices" / "0000:01:00.0"
    pci.mkdir(parents=True)
    (pci / "vendor").write_text("0x1ac1\n")
    (pci / "device").write_text("0x089a\n")
    found = runtime._list_from_sysfs(tmp_path)
    assert found == [runtime.EdgeTpuDevice("usb", "1-1"), runtime.EdgeTpuDevice("usb", "2-1"),
                     runtime.EdgeTpuDevice("pci", "0000:01:00.0")]


def test_bbox_behaviour() -> None:
    a, b = BBox(0, 0, 10, 10), BBox(5, 5, 15, 15)
    assert a.area == 100 and a.valid
    assert a.iou(a) == 1.0
    assert a.iou(b) == pytest.approx(25 / 175)
    assert a.iou(BBox(20, 20, 30, 30)) == 0.0
    assert BBox(0.1, 0.2, 0.5, 0.6).scale(100, 10) == pytest.approx((10, 2, 50, 6))
    assert not BBox(3, 3, 1, 5).valid and BBox(3, 3, 1, 5).area == 0
    assert b.to_xywh() == (5, 5, 10, 10)


def _interpreter(path: Path):
    interpreter = runtime.make_interpreter(path)
    interpreter.allocate_tensors()
    return interpreter


def test_classification_adapters(shared_data: Path) -> None:
    interpreter = _interpreter(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite")
    assert adapters.input_size(interpreter) == (224, 224)
    assert adapters.input_quantization(interpreter) == (0.0078125, 128)
    assert adapters.pixel_table(interpreter) is None  # uint8, 1/128, 128: raw pixels
    pixels = inception_preprocess(224).load_pixels(shared_data / "coral" / "parrot.jpg")
    adapters.set_pixels(interpreter, pixels)
    interpreter.invoke()
    scores = adapters.classification_scores(interpreter)
    labels = (shared_data / "coral" / "imagenet_labels.txt").read_text().splitlines()
    assert scores.shape == (1001,) and scores.dtype == np.float32
    assert labels[int(scores.argmax())] == "macaw"
    with pytest.raises(BadInputError, match="does not match"):
        adapters.set_input(interpreter, pixels[:100])


def test_pixel_table_quantizes_int8_input(tmp_path: Path, shared_data: Path) -> None:
    interpreter = _interpreter(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite")
    table = adapters.pixel_table(interpreter, mean=(0, 0, 0), std=(255, 255, 255))
    assert table is not None and table.dtype == np.uint8
    # [0, 1] input on a [-1, 1] quantization: pixel p -> round(p / 255 * 128 + 128).
    expected = np.clip(np.round(np.arange(256) / 255 * 128 + 128), 0, 255)
    assert np.array_equal(table[:, 0], expected)


def test_detection_outputs_found_by_name(shared_data: Path) -> None:
    model = shared_data / "models" / "ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite"
    interpreter = _interpreter(model)
    index = adapters.detection_outputs(interpreter)
    shapes = {d["index"]: list(d["shape"]) for d in interpreter.get_output_details()}
    assert shapes[index.boxes] == [1, 10, 4] and shapes[index.count] == [1]
    names = {d["index"]: d["name"] for d in interpreter.get_output_details()}
    assert names[index.classes].endswith(":1") and names[index.scores].endswith(":2")
    image = shared_data / "coral" / "kite_and_cold.jpg"
    adapters.set_pixels(interpreter, inception_preprocess(300).load_pixels(image))
    interpreter.invoke()
    objects = adapters.get_objects(interpreter, 0.5, image_scale=(1352, 900))
    assert objects and all(isinstance(o, adapters.Detection) for o in objects)
    assert {o.label_id for o in objects} <= {0, 37}  # person, kite
    assert all(0 <= o.bbox.xmin < o.bbox.xmax <= 1352 for o in objects)
    assert [o.score for o in objects] == sorted((o.score for o in objects), reverse=True)
    assert not adapters.is_detection_model(
        _interpreter(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite"))


def test_model_bytes_skip_the_load_probe(shared_data: Path, monkeypatch) -> None:
    """Bytes (a model this process made) load without the child-process probe; a file given
    by a user still goes through it."""
    path = shared_data / "models" / "ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite"
    probed = []
    monkeypatch.setattr(runtime, "check_loads", lambda path, *args, **kw: probed.append(path))
    from_bytes = runtime.make_interpreter(path.read_bytes(), num_threads=1)
    assert probed == []
    from_file = runtime.make_interpreter(path, num_threads=1)
    assert probed == [path]
    assert [d["shape"].tolist() for d in from_bytes.get_input_details()] == \
        [d["shape"].tolist() for d in from_file.get_input_details()]
    with pytest.raises(BadInputError, match="<in-memory model>: not a TFLite model"):
        runtime.make_interpreter(b"x" * 64)


def test_analyzer_reads_bytes_like_the_file(shared_data: Path) -> None:
    from edgetpu.analyze import analyze_model

    path = shared_data / "coral" / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    from_file, from_bytes = analyze_model(path), analyze_model(path.read_bytes())
    assert [(op.opcode, op.mapped, op.reason) for op in from_bytes.ops] == \
        [(op.opcode, op.mapped, op.reason) for op in from_file.ops]
    assert any(not op.mapped for op in from_file.ops)
