"""The sidecar record: PTQ and QAT results written and read back by one class, its schema check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeq.errors import BadInputError
from edgeq.images import Preprocess
from edgeq.sidecar import SCHEMA_VERSION, find_sidecar
from quant.calibration import CalibrationSet
from quant.float_model import FloatModel
from quant.modes import Method
from quant.options import QatOptions, QuantizeOptions
from quant.ptq import QuantizedModel
from quant.qat import QatResult
from quant.qat.dataset import TrainingFiles
from quant.sidecar import FloatParent, Sidecar, save

SIZE = 16


@pytest.fixture
def float_model(tmp_path: Path) -> FloatModel:
    """A float model read from a (stand-in) Keras file; no Keras model is needed here."""
    source = tmp_path / "tiny.keras"
    source.write_bytes(b"weights")
    return FloatModel(model=None, preprocess=Preprocess(SIZE, SIZE, resize="center_crop"),
                      name="tiny", task="classify", source="tiny.keras", source_file=source)


def _images() -> dict:
    return {"pixels": np.zeros((2, SIZE, SIZE, 3), np.uint8),
            "paths": (Path("a.png"), Path("b.png")), "source": "images/", "sha256": "ab" * 32}


def test_ptq_result_round_trip(tmp_path: Path, float_model: FloatModel) -> None:
    result = QuantizedModel(
        tflite=b"tflite", float_model=float_model, calibration=CalibrationSet(**_images()),
        options=QuantizeOptions(per_tensor=True, ranges="mse"), ranges_changed=3,
        timings={"total_s": 1.234}, drift={"images": 2, "agreement": 1.0, "mean_abs_diff": 0.0},
    )
    paths = save(result, tmp_path / "out")
    assert [p.name for p in paths] == ["tiny_int8.tflite", "tiny_int8.json", "tiny_int8.md"]
    record = Sidecar.from_json(paths[1])
    assert record.to_json() == paths[1].read_text()
    assert json.loads(paths[1].read_text())["schema_version"] == Sidecar.SCHEMA_VERSION == 1
    assert record.method == Method.PTQ
    assert record.options == QuantizeOptions(per_tensor=True, ranges="mse")
    assert record.preprocess == float_model.preprocess
    assert record.float_parent.source_file == str(tmp_path / "tiny.keras")
    assert record.float_parent.loader_arguments() == (str(tmp_path / "tiny.keras"), None)
    derived = record.derived
    assert derived["weights"] == "per-tensor" and derived["ranges_changed"] == 3
    assert derived["dataset"]["images"] == 2 and derived["timings_s"] == {"total_s": 1.23}
    assert record.compile is None
    summary = paths[2].read_text()
    assert "- calibration: 2 images from `images/`" in summary
    assert "activation ranges: mse (3 changed)" in summary and "top-1 agreement 1.000" in summary


def test_qat_result_round_trip(tmp_path: Path, float_model: FloatModel) -> None:
    options = QatOptions(steps=3, checkpoint_dir=tmp_path / "ck", progress=False)
    result = QatResult(
        tflite=b"tflite", float_model=float_model,
        calibration=TrainingFiles(paths=(Path("a.png"), Path("b.png")), labels=(0, 0),
                                  tfrecords=False, label_offset=0, source="images/",
                                  sha256="ab" * 32, count=2), options=options,
        history=({"loss": 0.5, "agreement": 0.9, "steps": 3},), checkpoint_dir=tmp_path / "ck",
    )
    paths = save(result, tmp_path / "out")
    record = Sidecar.from_json(paths[1])
    assert record.to_json() == paths[1].read_text()
    assert record.method == Method.QAT and record.options == options
    assert record.derived["loss"] == "distillation + cross-entropy"
    assert record.derived["checkpoint_dir"] == str(tmp_path / "ck")
    summary = paths[2].read_text()
    assert "- training: 2 images from `images/`" in summary and "last epoch: loss 0.5000" in summary


def test_a_compile_section_is_kept(tmp_path: Path, float_model: FloatModel) -> None:
    result = QuantizedModel(tflite=b"tflite", float_model=float_model,
                            calibration=CalibrationSet(**_images()), options=QuantizeOptions())
    path = save(result, tmp_path)[1]
    data = json.loads(path.read_text())
    data["compile"] = {"compiler_version": "16.0", "mapped_ops": 31}
    compiled = tmp_path / "tiny_int8_edgetpu.json"
    compiled.write_text(json.dumps(data))
    record = Sidecar.beside(tmp_path / "tiny_int8_edgetpu.tflite")
    assert record is not None and record.compile == data["compile"]
    assert record.float_parent == Sidecar.from_json(path).float_parent


def test_loader_arguments_of_a_zoo_model() -> None:
    prefix = "/cache/mobilenet_v2_1.0_224.ckpt"
    parent = FloatParent("mobilenet_v2_1.0_224", "classify", "https://host/x.tgz",
                         source_file=prefix, zoo={"name": "mobilenet_v2_1.0_224"})
    assert parent.loader_arguments() == ("mobilenet_v2_1.0_224", prefix)
    built = FloatParent("ssd", "detect", "random weights", zoo={"name": "ssd"})
    assert built.loader_arguments() is None


@pytest.mark.parametrize(("content", "message"), [
    ("{", "not valid JSON"),
    ("[1]", "not a JSON object"),
    ('{"model": "x_int8", "quantization": {}}', "no schema_version"),
    (json.dumps({"schema_version": SCHEMA_VERSION + 1}), f"schema version {SCHEMA_VERSION + 1}"),
    (json.dumps({"schema_version": SCHEMA_VERSION, "model": "x_int8"}),
     "missing or malformed entry"),
])
def test_bad_sidecars_are_refused_with_the_fix(tmp_path: Path, content: str,
                                               message: str) -> None:
    path = tmp_path / "x_int8.json"
    path.write_text(content)
    with pytest.raises(BadInputError, match=message) as error:
        Sidecar.from_json(path)
    assert str(path) in str(error.value) and "quantize the model again" in str(error.value)
    with pytest.raises(BadInputError, match=message):
        Sidecar.beside(tmp_path / "x_int8.tflite")


def test_no_sidecar_beside_a_model(tmp_path: Path) -> None:
    assert Sidecar.beside(tmp_path / "x_int8.tflite") is None
    with pytest.raises(BadInputError, match="cannot read the sidecar"):
        Sidecar.from_json(tmp_path / "x_int8.json")
    # another JSON file there (compile-edgetpu's report of a model without a sidecar)
    (tmp_path / "y_edgetpu.json").write_text(json.dumps({"compiled": True}))
    assert find_sidecar(tmp_path / "y_edgetpu.tflite") is None
