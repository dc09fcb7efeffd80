"""Model sources: the user's own Keras files and SavedModels, refusals with clear messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeq._tensorflow import keras, tf
from edgeq.errors import BadInputError
from quant.preprocess import PreprocessOptions
from quant.sources import load_float_model

RANGE = PreprocessOptions(input_range=(-1.0, 1.0))


def _user_model():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5)(x))


@pytest.fixture(scope="module")
def user_model():
    return _user_model()


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_file_with_input_range(tmp_path, user_model, suffix):
    path = tmp_path / f"mine{suffix}"
    user_model.save(path)
    loaded = load_float_model(str(path), preprocess=RANGE)
    assert loaded.name == "mine"
    assert (loaded.preprocess.height, loaded.preprocess.width) == (32, 32)
    assert loaded.preprocess.input_range == pytest.approx((-1.0, 1.0))
    assert tuple(loaded.model.inputs[0].shape) == (1, 32, 32, 3)  # batch fixed to 1
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.model(x), user_model(x), atol=1e-6)
    assert loaded.num_classes == 5


def test_saved_model_from_keras(tmp_path, user_model):
    folder = tmp_path / "saved"
    user_model.save(folder, save_format="tf")
    loaded = load_float_model(str(folder), preprocess=PreprocessOptions(mean=(0.0,),
                                                                         std=(255.0,)))
    assert loaded.preprocess.input_range == pytest.approx((0.0, 1.0))


def test_plain_saved_model_signature_is_wrapped(tmp_path, user_model):
    folder = tmp_path / "hub_style"
    module = tf.Module()
    module.model = user_model
    module.serve = tf.function(
        lambda images: {"logits": user_model(images)},
        input_signature=[tf.TensorSpec((1, 32, 32, 3), tf.float32, name="images")],
    )
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    loaded = load_float_model(str(folder), preprocess=RANGE)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.model(x), user_model(x), atol=1e-5)


def test_preprocess_file(tmp_path, user_model):
    path = tmp_path / "mine.keras"
    user_model.save(path)
    spec = tmp_path / "pre.json"
    spec.write_text(json.dumps({"mean": [123.7, 116.3, 103.5], "std": [58.4, 57.1, 57.4],
                                "resize": "center_crop"}))
    loaded = load_float_model(str(path), preprocess=PreprocessOptions(file=spec))
    assert loaded.preprocess.resize == "center_crop"
    assert loaded.preprocess.mean == (123.7, 116.3, 103.5)


def test_keras_without_preprocessing_asks_for_it(tmp_path, user_model):
    path = tmp_path / "mine.keras"
    user_model.save(path)
    with pytest.raises(BadInputError, match="--input-range"):
        load_float_model(str(path))


def test_dynamic_spatial_shape_is_refused(tmp_path):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    path = tmp_path / "dynamic.keras"
    model.save(path)
    with pytest.raises(BadInputError, match="fixed input size"):
        load_float_model(str(path), preprocess=RANGE)


def test_tflite_is_refused_for_quantization(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(BadInputError, match="cannot be quantized again"):
        load_float_model(str(path))


def test_corrupt_keras_file(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"not a zip")
    with pytest.raises(BadInputError, match="broken.keras: not a readable Keras model"):
        load_float_model(str(path), preprocess=RANGE)


def test_bad_preprocess_file(tmp_path, user_model):
    path = tmp_path / "mine.keras"
    user_model.save(path)
    spec = tmp_path / "pre.json"
    spec.write_text(json.dumps({"mean": [1, 2], "colour": "rgb"}))
    with pytest.raises(BadInputError, match="unknown preprocessing keys"):
        load_float_model(str(path), preprocess=PreprocessOptions(file=spec))
