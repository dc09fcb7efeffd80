"""TF-slim checkpoints onto the Keras builders: names, EMA shadows, clear failures."""

from __future__ import annotations

import numpy as np
import pytest
from slim_checkpoints import slim_variables, with_ema, write_checkpoint

from edgeq.errors import BadInputError
from quant.checkpoints import checkpoint_variable_name, load_weights
from quant.models import build_classifier


def _outputs(model, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(-1, 1, (1, *model.inputs[0].shape[1:]))
    return model(x.astype(np.float32)).numpy()


@pytest.mark.parametrize(("family", "size", "multiplier"), [
    ("mobilenet_v2", 96, 0.35),
    ("mobilenet_v2", 128, 1.4),
    ("mobilenet_v1", 128, 0.25),
])
def test_round_trip_reproduces_the_weights(tmp_path, family, size, multiplier):
    source = build_classifier(family, size, multiplier)
    variables = slim_variables(source)
    prefix = write_checkpoint(tmp_path / "model.ckpt", variables)
    model = build_classifier(family, size, multiplier)
    report = load_weights(model, prefix)
    assert report.loaded == len(variables)
    assert report.from_ema == 0 and report.unused == ()
    for layer in model.layers:
        for weight, value in zip(layer.weights, layer.get_weights(), strict=True):
            np.testing.assert_array_equal(
                value, variables[checkpoint_variable_name(layer.name, weight.name)]
            )


def test_ema_shadows_are_preferred(tmp_path):
    model = build_classifier("mobilenet_v2", 96, 0.35)
    variables = slim_variables(model, seed=3)
    prefix = write_checkpoint(tmp_path / "ema.ckpt", with_ema(variables))
    report = load_weights(model, prefix)
    assert report.from_ema > 0
    logits = model.get_layer("MobilenetV2/Logits/Conv2d_1c_1x1")
    np.testing.assert_array_equal(
        logits.get_weights()[0], variables["MobilenetV2/Logits/Conv2d_1c_1x1/weights"]
    )


def test_missing_variable_is_named(tmp_path):
    model = build_classifier("mobilenet_v2", 96, 0.35)
    variables = slim_variables(model)
    del variables["MobilenetV2/expanded_conv_5/depthwise/depthwise_weights"]
    prefix = write_checkpoint(tmp_path / "missing.ckpt", variables)
    with pytest.raises(BadInputError, match="expanded_conv_5/depthwise/depthwise_weights"):
        load_weights(model, prefix)


def test_wrong_variant_is_a_shape_error(tmp_path):
    other = build_classifier("mobilenet_v2", 96, 0.5)
    prefix = write_checkpoint(tmp_path / "other.ckpt", slim_variables(other))
    model = build_classifier("mobilenet_v2", 96, 0.35)
    with pytest.raises(BadInputError, match="another variant"):
        load_weights(model, prefix)


def test_v1_checkpoint_into_v2_model_fails_clearly(tmp_path):
    v1 = build_classifier("mobilenet_v1", 128, 0.25)
    prefix = write_checkpoint(tmp_path / "v1.ckpt", slim_variables(v1))
    with pytest.raises(BadInputError, match="no variable MobilenetV2/Conv/weights"):
        load_weights(build_classifier("mobilenet_v2", 128, 0.35), prefix)


def test_loaded_model_computes_what_the_source_computes(tmp_path):
    source = build_classifier("mobilenet_v2", 96, 0.35)
    variables = slim_variables(source, seed=7)
    for layer in source.layers:
        if layer.weights:
            layer.set_weights([variables[checkpoint_variable_name(layer.name, w.name)]
                               for w in layer.weights])
    prefix = write_checkpoint(tmp_path / "same.ckpt", variables)
    model = build_classifier("mobilenet_v2", 96, 0.35)
    load_weights(model, prefix)
    np.testing.assert_allclose(_outputs(model), _outputs(source), rtol=1e-5, atol=1e-5)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(BadInputError, match="not a readable TensorFlow checkpoint"):
        load_weights(build_classifier("mobilenet_v2", 96, 0.35), tmp_path / "nothing")
