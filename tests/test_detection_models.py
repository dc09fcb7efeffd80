"""SSD builders against OD API variable names; the archive loader on synthetic exports."""

from __future__ import annotations

import numpy as np
import pytest
from ssd_configs import BUILDERS, int8_analysis, pipeline_text, random_variables, write_export

from edgeq.errors import BadInputError
from edgeq.textproto import parse_text_proto
from quant.checkpoints import checkpoint_variable_name, open_checkpoint
from quant.detection.anchors import ssd_anchors
from quant.detection.pipeline_config import ssd_config_from_message
from quant.detection.sources import feature_map_sizes, load_ssd_checkpoint
from quant.detection.ssd import build_ssd

V1 = "FeatureExtractor/MobilenetV1"
SHARED = "WeightSharedConvolutionalBoxPredictor"
BN = ("beta", "gamma", "moving_mean", "moving_variance")

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
    # ssd_mobilenet_v1_ppn_feature_extractor.py + WeightSharedConvolutionalBoxPredictor with
    # share_prediction_tower, depth 512, one 1x1 layer, 6 anchors per location.
    "ssd_mobilenet_v1_ppn": {
        f"{V1}/Conv2d_11_pointwise/weights": (1, 1, 512, 512),
        f"{SHARED}/PredictionTower/conv2d_0/weights": (1, 1, 512, 512),
        f"{SHARED}/PredictionTower/conv2d_0/BatchNorm/feature_5/moving_variance": (512,),
        f"{SHARED}/BoxPredictor/weights": (1, 1, 512, 24),
        f"{SHARED}/BoxPredictor/biases": (24,),
        f"{SHARED}/ClassPredictor/weights": (1, 1, 512, 546),
    },
    # ssd_mobilenet_v1_fpn_feature_extractor.py (levels 3-7 from Conv2d_5 / 11 / 13), four
    # 3x3 layers per tower, depth 256.
    "ssd_mobilenet_v1_fpn": {
        **{f"{V1}/fpn/projection_{i}/weights": (1, 1, depth, 256)
           for i, depth in ((1, 256), (2, 512), (3, 1024))},
        f"{V1}/fpn/projection_3/biases": (256,),
        f"{V1}/fpn/smoothing_1/weights": (3, 3, 256, 256),
        f"{V1}/fpn/smoothing_2/BatchNorm/gamma": (256,),
        f"{V1}/fpn/bottom_up_Conv2d_14/weights": (3, 3, 256, 256),
        f"{V1}/fpn/bottom_up_Conv2d_15/BatchNorm/moving_mean": (256,),
        f"{SHARED}/BoxPredictionTower/conv2d_3/weights": (3, 3, 256, 256),
        f"{SHARED}/ClassPredictionTower/conv2d_0/BatchNorm/feature_4/beta": (256,),
        **{f"{SHARED}/{head}/weights": (3, 3, 256, depth)
           for head, depth in (("BoxPredictor", 24), ("ClassPredictor", 546))},
    },
}
# Variables of the OD API PPN checkpoint that its network never reads (mobilenet_v1_base
# is built up to Conv2d_13_pointwise, the pyramid starts at Conv2d_11_pointwise).
PPN_UNUSED = {
    **{f"{V1}/Conv2d_12_depthwise/depthwise_weights": (3, 3, 512, 1),
       f"{V1}/Conv2d_12_pointwise/weights": (1, 1, 512, 1024),
       f"{V1}/Conv2d_13_depthwise/depthwise_weights": (3, 3, 1024, 1),
       f"{V1}/Conv2d_13_pointwise/weights": (1, 1, 1024, 1024)},
    **{f"{V1}/Conv2d_{i}_{part}/BatchNorm/{v}": (depth,) for v in BN
       for i, part, depth in ((12, "depthwise", 512), (12, "pointwise", 1024),
                              (13, "depthwise", 1024), (13, "pointwise", 1024))},
}


def _shared_predictor_names(towers: tuple[str, ...], layers: int, maps: int) -> set[str]:
    """The WeightSharedConvolutionalBoxPredictor variables: shared conv weights, one BatchNorm
    per feature map, box and class predictors with biases."""
    names = {f"{SHARED}/{head}/{v}" for head in ("BoxPredictor", "ClassPredictor")
             for v in ("weights", "biases")}
    for tower in towers:
        for i in range(layers):
            names.add(f"{SHARED}/{tower}/conv2d_{i}/weights")
            names |= {f"{SHARED}/{tower}/conv2d_{i}/BatchNorm/feature_{m}/{v}"
                      for m in range(maps) for v in BN}
    return names


def _fpn_names() -> set[str]:
    """The ``fpn`` variables of levels 3-7: projections with biases, convs with BatchNorm."""
    names = {f"{V1}/fpn/projection_{i}/{v}" for i in (1, 2, 3) for v in ("weights", "biases")}
    for conv in ("smoothing_1", "smoothing_2", "bottom_up_Conv2d_14", "bottom_up_Conv2d_15"):
        names |= {f"{V1}/fpn/{conv}/weights"} | {f"{V1}/fpn/{conv}/BatchNorm/{v}" for v in BN}
    return names


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
    pytest.param(name, marks=[pytest.mark.slow] if "v3" in name or "edgetpu" in name
                 or "mobiledet" in name else [])
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


@pytest.mark.parametrize("name, expected, anchors", [
    ("ssd_mobilenet_v1_ppn", _shared_predictor_names(("PredictionTower",), 1, 6),
     6 * (19**2 + 10**2 + 5**2 + 3**2 + 2**2 + 1)),
    ("ssd_mobilenet_v1_fpn",
     _fpn_names() | _shared_predictor_names(("BoxPredictionTower", "ClassPredictionTower"), 4, 5),
     6 * (80**2 + 40**2 + 20**2 + 10**2 + 5**2)),
])
def test_weight_shared_builders_match_the_zoo_configs(name, expected, anchors):
    """Every non-backbone variable is one the OD API creates (and nothing else); the anchor
    count follows the config: PPN 6 boxes on 19..1, FPN 2 scales x 3 ratios on levels 3-7."""
    model = _built(name)
    shapes = _variable_shapes(model)
    assert {n for n in shapes if not n.startswith(f"{V1}/Conv2d_")} == expected
    assert tuple(model.outputs[0].shape) == (1, anchors, 4)
    assert tuple(model.outputs[1].shape) == (1, anchors, 91)
    config = _config(name)
    assert len(ssd_anchors(config.anchors, feature_map_sizes(model), config.image_size)) == anchors


@pytest.mark.parametrize("name, size", [("ssd_mobilenet_v1_ppn", 300),
                                        ("ssd_mobilenet_v1_fpn", 320)])
def test_weight_shared_export_loads_by_name(tmp_path, name, size):
    """A synthetic OD API checkpoint (the PPN's unused Conv2d_12/13 included) loads into the
    builder by name and reproduces its outputs; a missing variable is named."""
    text = pipeline_text(name, size=size)
    source = build_ssd(ssd_config_from_message(parse_text_proto(text)))
    variables = random_variables(source)
    for layer in source.layers:
        layer.set_weights([variables[checkpoint_variable_name(layer.name, w.name)]
                           for w in layer.weights])
    extra = {k: np.ones(v, np.float32) for k, v in PPN_UNUSED.items()} \
        if name == "ssd_mobilenet_v1_ppn" else {}
    loaded = load_ssd_checkpoint(write_export(tmp_path / name, text, variables | extra))
    assert loaded.loaded == len(variables)
    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    for ours, reference in zip(loaded.model(x), source(x), strict=True):
        np.testing.assert_allclose(ours.numpy(), reference.numpy(), atol=1e-5)
    assert loaded.model.outputs[0].shape[1] == len(loaded.head.anchors)
    missing = f"{SHARED}/BoxPredictor/biases"
    with pytest.raises(BadInputError, match=missing):
        load_ssd_checkpoint(write_export(
            tmp_path / "missing", text, {k: v for k, v in variables.items() if k != missing}))
    stray = {f"{SHARED}/ProjectionLayer/conv2d_0/weights": np.zeros((1, 1, 8, 8), np.float32)}
    with pytest.raises(BadInputError, match="took .* of the checkpoint"):
        load_ssd_checkpoint(write_export(tmp_path / "stray", text, variables | extra | stray))


def test_fpn_needs_levels_that_halve_exactly():
    with pytest.raises(BadInputError, match="FPN"):
        build_ssd(_config("ssd_mobilenet_v1_fpn", size=300))


@pytest.mark.parametrize("name, size", [  # 20 s and 50 s: slow, the suite stays < 10 min
    pytest.param("ssd_mobilenet_v1_ppn", 300, marks=pytest.mark.slow),
    pytest.param("ssd_mobilenet_v1_fpn", 128, marks=pytest.mark.slow)])
def test_weight_shared_int8_maps_to_the_edgetpu(tmp_path, name, size):
    """Our PTQ of the random-weight builder maps the FPN's nearest-neighbour upsampling and
    the PPN's max-pooled maps; only the post-processing stays on the CPU, and for the PPN at
    300 (3,000 anchors x 91 classes) the class-score tail too, over the compiler's size limit
    for the two innermost dimensions (edgetpu.analyze, rule row_size)."""
    from quant.detection.sources import random_ssd

    analysis = int8_analysis(random_ssd(_config(name, size=size), name), size, tmp_path,
                             images=4)
    if name.endswith("ppn"):
        cpu = [op for op in analysis.ops if not op.mapped]
        rules = {op.rule for op in cpu}
        assert "row_size" in rules <= {"row_size", "partition", "detection_postprocess"}
        assert all(op.index >= len(analysis.ops) - 8 for op in cpu)  # the head's tail only
    else:
        assert analysis.cpu_ops == {"TFLite_Detection_PostProcess": 1}
    opcodes = {op.opcode for op in analysis.ops if op.mapped}
    assert ("MAX_POOL_2D" if name.endswith("ppn") else "RESIZE_NEAREST_NEIGHBOR") in opcodes


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
    text = pipeline_text("ssd_mobilenet_v2").replace("'ssd_mobilenet_v2'", "'ssd_inception_v3'")
    with pytest.raises(BadInputError, match="ssd_inception_v3"):
        build_ssd(ssd_config_from_message(parse_text_proto(text)))


def test_zoo_detection_spec_loads_as_float_model(shared_data):
    """The path ``quant.sources`` takes for zoo specs with ``task == "detect"``."""
    pytest.importorskip("quant.zoo", reason="the model zoo is not in this checkout yet")
    from types import SimpleNamespace

    from quant.detection.sources import load_detection_model

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
