"""SSD builders against OD API variable names; the archive loader on synthetic exports."""

from __future__ import annotations

import numpy as np
import pytest
from ssd_configs import BUILDERS, pipeline_text, random_variables, write_export

from quant.checkpoints import checkpoint_variable_name, open_checkpoint
from quant.detection_sources import feature_map_sizes, load_ssd_checkpoint
from quant.errors import BadInputError
from quant.models.ssd import build_ssd
from quant.pipeline_config import parse_text_proto, ssd_config_from_message

# Variables (and shapes) of the public OD API checkpoints that each builder must name.
KNOWN_VARIABLES = {
    "ssd_mobilenet_v2": {
        "FeatureExtractor/MobilenetV2/expanded_conv_13/expand/weights": (1, 1, 96, 576),
        "FeatureExtractor/MobilenetV2/Conv_1/weights": (1, 1, 320, 1280),
        "FeatureExtractor/MobilenetV2/layer_19_1_Conv2d_2_1x1_256/weights": (1, 1, 1280, 256),
        "FeatureExtractor/MobilenetV2/layer_19_2_Conv2d_2_3x3_s2_512/weights": (3, 3, 256, 512),
        "FeatureExtractor/MobilenetV2/layer_19_2_Conv2d_5_3x3_s2_128/BatchNorm/beta": (128,),
        "BoxPredictor_0/BoxEncodingPredictor/weights": (1, 1, 576, 12),
        "BoxPredictor_0/ClassPredictor/biases": (273,),
        "BoxPredictor_1/ClassPredictor/weights": (1, 1, 1280, 546),
    },
    "ssdlite_mobilenet_v2": {
        "FeatureExtractor/MobilenetV2/layer_19_2_Conv2d_2_3x3_s2_512_depthwise/"
        "depthwise_weights": (3, 3, 256, 1),
        "FeatureExtractor/MobilenetV2/layer_19_2_Conv2d_2_3x3_s2_512/weights": (1, 1, 256, 512),
        "BoxPredictor_0/BoxEncodingPredictor_depthwise/depthwise_weights": (3, 3, 576, 1),
        "BoxPredictor_0/BoxEncodingPredictor_depthwise/BatchNorm/gamma": (576,),
        "BoxPredictor_0/BoxEncodingPredictor/weights": (1, 1, 576, 12),
        "BoxPredictor_5/ClassPredictor_depthwise/depthwise_weights": (3, 3, 128, 1),
        "BoxPredictor_5/ClassPredictor/weights": (1, 1, 128, 546),
    },
    # Shapes follow TF-slim's V3_*_DETECTION / V3_EDGETPU specs and the OD API's from_layer
    # (layer_14/expansion_output + layer_17, layer_10/... + layer_13, layer_18/... + layer_23).
    "ssdlite_mobilenet_v3_large": {
        "FeatureExtractor/MobilenetV3/Conv/weights": (3, 3, 3, 16),
        "FeatureExtractor/MobilenetV3/expanded_conv_3/squeeze_excite/Conv/weights":
            (1, 1, 72, 24),
        "FeatureExtractor/MobilenetV3/expanded_conv_12/expand/weights": (1, 1, 112, 672),
        "FeatureExtractor/MobilenetV3/expanded_conv_14/project/weights": (1, 1, 480, 80),
        "FeatureExtractor/MobilenetV3/Conv_1/weights": (1, 1, 80, 480),
        "FeatureExtractor/MobilenetV3/layer_17_1_Conv2d_2_1x1_256/weights": (1, 1, 480, 256),
        "FeatureExtractor/MobilenetV3/layer_17_2_Conv2d_5_3x3_s2_128_depthwise/"
        "depthwise_weights": (3, 3, 64, 1),
        "BoxPredictor_0/BoxEncodingPredictor_depthwise/depthwise_weights": (3, 3, 672, 1),
        "BoxPredictor_1/ClassPredictor/weights": (1, 1, 480, 546),
    },
    "ssdlite_mobilenet_v3_small": {
        "FeatureExtractor/MobilenetV3/expanded_conv/squeeze_excite/Conv_1/biases": (16,),
        "FeatureExtractor/MobilenetV3/expanded_conv_8/expand/weights": (1, 1, 48, 288),
        "FeatureExtractor/MobilenetV3/Conv_1/weights": (1, 1, 48, 288),
        "FeatureExtractor/MobilenetV3/layer_13_1_Conv2d_5_1x1_64/weights": (1, 1, 256, 64),
        "FeatureExtractor/MobilenetV3/layer_13_2_Conv2d_5_3x3_s2_128/weights": (1, 1, 64, 128),
        "BoxPredictor_0/ClassPredictor/weights": (1, 1, 288, 273),
    },
    "ssdlite_mobilenet_edgetpu": {
        "FeatureExtractor/MobilenetEdgeTPU/Conv/weights": (3, 3, 3, 32),
        "FeatureExtractor/MobilenetEdgeTPU/expanded_conv/project/weights": (1, 1, 32, 16),
        "FeatureExtractor/MobilenetEdgeTPU/expanded_conv_1/expand/weights": (3, 3, 16, 128),
        "FeatureExtractor/MobilenetEdgeTPU/expanded_conv_16/expand/weights": (1, 1, 96, 384),
        "FeatureExtractor/MobilenetEdgeTPU/expanded_conv_21/project/weights": (1, 1, 1280, 192),
        "FeatureExtractor/MobilenetEdgeTPU/layer_23_1_Conv2d_2_1x1_256/weights":
            (1, 1, 192, 256),
        "BoxPredictor_0/BoxEncodingPredictor_depthwise/depthwise_weights": (3, 3, 384, 1),
    },
}


def _config(name: str, **kwargs):
    return ssd_config_from_message(parse_text_proto(pipeline_text(name, **kwargs)))


_BUILT: dict[str, object] = {}


def _built(name: str):
    """Return the builder's model for the default config (built once per session)."""
    if name not in _BUILT:
        _BUILT[name] = build_ssd(_config(name))
    return _BUILT[name]


def _variable_shapes(model) -> dict[str, tuple[int, ...]]:
    return {checkpoint_variable_name(layer.name, w.name): tuple(w.shape)
            for layer in model.layers for w in layer.weights}


def test_v1_names_and_shapes_equal_the_real_archive(shared_data):
    archive = shared_data / "models/ssd_mobilenet_v1_0.75_depth_300x300_coco_float.tar.gz"
    loaded = load_ssd_checkpoint(archive)
    reader = open_checkpoint(loaded.prefix)
    real = {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items()
            if k != "global_step"}
    assert _variable_shapes(loaded.model) == real
    assert feature_map_sizes(loaded.model) == [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2),
                                               (1, 1)]
    assert tuple(loaded.model.outputs[1].shape) == (1, 1917, 91)


@pytest.mark.parametrize("name", sorted(KNOWN_VARIABLES))
def test_builders_name_the_od_api_variables(name):
    shapes = _variable_shapes(_built(name))
    for variable, shape in KNOWN_VARIABLES[name].items():
        assert shapes.get(variable) == shape, variable


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[pytest.mark.slow] if "v3" in name or "edgetpu" in name else [])
    for name in sorted(BUILDERS)
])
def test_synthetic_export_loads_through_the_loader(tmp_path, name):
    source = _built(name)
    variables = random_variables(source)
    for layer in source.layers:
        layer.set_weights([variables[checkpoint_variable_name(layer.name, w.name)]
                           for w in layer.weights])
    loaded = load_ssd_checkpoint(write_export(tmp_path / name, pipeline_text(name), variables))
    assert loaded.loaded == len(variables)
    size = BUILDERS[name][3]
    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    for ours, reference in zip(loaded.model(x), source(x), strict=True):
        np.testing.assert_allclose(ours.numpy(), reference.numpy(), atol=1e-5)
    boxes, scores = loaded.model.outputs
    assert boxes.shape[1] == scores.shape[1] == len(loaded.head.anchors)
    assert scores.shape[2] == 91 and loaded.head.settings.num_classes == 90


def test_stray_and_missing_variables_are_named(tmp_path):
    name = "ssd_mobilenet_v1_0.75_depth"
    text = pipeline_text(name, num_classes=2, size=96)
    variables = random_variables(build_ssd(_config(name, num_classes=2, size=96)))
    stray = dict(variables, **{"BoxPredictor_6/ClassPredictor/biases": np.zeros(3, np.float32)})
    with pytest.raises(BadInputError, match="took .* of the checkpoint"):
        load_ssd_checkpoint(write_export(tmp_path / "stray", text, stray))
    missing = {k: v for k, v in variables.items() if "BoxPredictor_2/ClassPredictor" not in k}
    with pytest.raises(BadInputError, match="BoxPredictor_2/ClassPredictor"):
        load_ssd_checkpoint(write_export(tmp_path / "missing", text, missing))


def test_export_without_pipeline_config_is_refused(tmp_path):
    folder = write_export(tmp_path / "x", "", {"a": np.zeros(1, np.float32)})
    (folder / "pipeline.config").unlink()
    with pytest.raises(BadInputError, match="no pipeline.config"):
        load_ssd_checkpoint(folder)


def test_unsupported_settings_are_listed():
    text = pipeline_text("ssd_mobilenet_v2").replace("activation: RELU_6", "activation: SWISH")
    with pytest.raises(BadInputError, match="activation SWISH"):
        build_ssd(ssd_config_from_message(parse_text_proto(text)))
    text = pipeline_text("ssd_mobilenet_v2").replace("'ssd_mobilenet_v2'", "'ssd_resnet50_v1_fpn'")
    with pytest.raises(BadInputError, match="ssd_resnet50_v1_fpn"):
        build_ssd(ssd_config_from_message(parse_text_proto(text)))


def test_zoo_detection_spec_loads_as_float_model(shared_data):
    """The path ``quant.sources`` takes for zoo specs with ``task == "detect"``."""
    pytest.importorskip("quant.zoo", reason="the model zoo is not in this checkout yet")
    from types import SimpleNamespace

    from quant.detection_sources import load_detection_model

    archive = shared_data / "models/ssd_mobilenet_v1_0.75_depth_300x300_coco_float.tar.gz"
    spec = SimpleNamespace(name="ssd_mobilenet_v1_0.75_depth_coco", task="detect",
                           input_size=300, checkpoint_prefix="model.ckpt", preprocess=None)
    model = load_detection_model(spec, str(archive), str(archive))
    assert model.task == "detect" and model.postprocess.anchors.shape == (1917, 4)
    assert model.preprocess.input_range == (-1.0, 1.0)
    assert model.postprocess.settings.max_detections == 100
    spec.input_size = 320
    with pytest.raises(BadInputError, match="320x320"):
        load_detection_model(spec, str(archive), str(archive))
