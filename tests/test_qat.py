"""Quantization-aware fine-tuning: a tiny real model trains, resumes, exports for the Edge TPU."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from edgeq.errors import BadInputError, MissingToolError
from edgeq.images import inception_preprocess
from quant.float_model import FloatModel

SIZE, CLASSES = 32, 5


def tiny_model(hard_swish: bool = False):
    """Conv-BN-ReLU6, depthwise block with a residual add, pooled 1x1 logits (batch 1)."""
    from edgeq._tensorflow import keras

    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3), batch_size=1, name="input")
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False,
                      kernel_initializer=keras.initializers.HeNormal(1), name="c1")(inputs)
    x = layers.BatchNormalization(name="c1/bn")(x)
    if hard_swish:
        from quant.models.mobilenet_v3 import activation

        x = activation("hard_swish", "c1")(x)
    else:
        x = layers.ReLU(6.0, name="c1/relu")(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw",
                               depthwise_initializer=keras.initializers.HeNormal(2))(x)
    y = layers.BatchNormalization(name="dw/bn")(y)
    y = layers.ReLU(6.0, name="dw/relu")(y)
    y = layers.Conv2D(8, 1, use_bias=False, name="pw",
                      kernel_initializer=keras.initializers.HeNormal(3))(y)
    y = layers.BatchNormalization(name="pw/bn")(y)
    x = layers.Add(name="add")([x, y])
    x = layers.GlobalAveragePooling2D(keepdims=True, name="pool")(x)
    x = layers.Conv2D(CLASSES, 1, name="logits",
                      kernel_initializer=keras.initializers.HeNormal(4))(x)
    return keras.Model(inputs, layers.Reshape((CLASSES,), name="squeeze")(x))


@pytest.fixture(scope="module")
def float_model() -> FloatModel:
    return FloatModel(model=tiny_model(), preprocess=inception_preprocess(SIZE), name="tiny",
                      task="classify", source="test")


@pytest.fixture(scope="module")
def images(shared_data, float_model):
    from quant.qat.data import load_training_set

    return load_training_set(shared_data / "coco_mini" / "train2017", float_model.preprocess,
                             CLASSES, limit=12)


def _run_tflite(model: bytes, pixels: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for image in pixels:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        scale, zero = out["quantization"]
        rows.append((interpreter.get_tensor(out["index"])[0].astype(np.float32) - zero) * scale)
    return np.stack(rows)


def test_label_free_training_exports_a_model_that_maps_completely(float_model, images,
                                                                  tmp_path):
    from edgetpu.analyze import analyze_model
    from quant.qat import QatOptions, save, train_qat

    options = QatOptions(steps=3, batch_size=4, checkpoint_dir=tmp_path / "ck", progress=False)
    result = train_qat(float_model, images, options)
    assert images.labels is None
    assert [h["steps"] for h in result.history] == [3]
    assert np.isfinite(result.history[0]["loss"])

    paths = save(result, tmp_path / "out")
    assert [p.name for p in paths] == ["tiny_qat_int8.tflite", "tiny_qat_int8.json",
                                       "tiny_qat_int8.md"]
    analysis = analyze_model(paths[0])
    assert analysis.ops and all(op.mapped for op in analysis.ops), \
        [(op.opcode, op.reason) for op in analysis.ops if not op.mapped]

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(paths[0]))
    detail = interpreter.get_input_details()[0]
    assert list(detail["shape"]) == [1, SIZE, SIZE, 3] and detail["dtype"] == np.uint8
    assert interpreter.get_output_details()[0]["dtype"] == np.uint8
    # The int8 model follows the float one: logits within a few quantization steps.
    reference = float_model.model.predict(float_model.preprocess.normalize(images.pixels),
                                          batch_size=1, verbose=0)
    quantized = _run_tflite(result.tflite, images.pixels)
    spread = float(reference.max() - reference.min())
    assert np.mean(np.abs(quantized - reference)) < 0.1 * spread

    import json

    data = json.loads(paths[1].read_text())
    assert data["method"] == "qat"
    assert data["derived"]["dataset"]["images"] == len(images)


def test_interrupted_run_resumes_from_its_last_checkpoint(float_model, images, tmp_path):
    from quant.qat import QatOptions, train_qat

    options = QatOptions(epochs=2, batch_size=6, checkpoint_dir=tmp_path / "ck",
                         progress=False)
    seen = []

    def interrupt(stats):
        seen.append(stats.epoch)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_qat(float_model, images, options, on_epoch_end=interrupt)
    assert seen == [1]
    first_loss = None

    def record(stats):
        seen.append(stats.epoch)

    result = train_qat(float_model, images, options, on_epoch_end=record)
    assert seen == [1, 2]  # only the second epoch ran again
    assert result.resumed_from_epoch == 1
    assert [h["epoch"] for h in result.history] == [1, 2]
    first_loss = result.history[0]["loss"]
    assert np.isfinite(first_loss)


def test_labels_add_cross_entropy(shared_data, float_model, tmp_path):
    from quant.qat import QatOptions, layers, train
    from quant.qat.data import load_training_set

    folder = shared_data / "coco_mini" / "train2017"
    files = sorted(folder.glob("*.jpg"))[:4]
    labels_csv = tmp_path / "labels.csv"
    with labels_csv.open("w", newline="") as handle:
        csv.writer(handle).writerows([("file", "label"),
                                      *[(f.name, i % CLASSES) for i, f in enumerate(files)]])
    data = load_training_set(folder, float_model.preprocess, CLASSES, labels_csv)
    assert data.labels.tolist() == [0, 1, 2, 3]
    student = layers.with_batch(float_model.model, None)
    qat_model = layers.quantize_for_training(student, "tiny")
    teacher = train.teacher_outputs(student, float_model.preprocess.normalize, data.pixels, 4)
    losses = {}
    for weight in (0.0, 1.0):
        options = QatOptions(steps=1, batch_size=4, lr=1e-12, label_weight=weight,
                             flip=False, progress=False)
        stats = train.fit(qat_model, float_model.preprocess.normalize, data.pixels, teacher,
                          data.labels, options, tmp_path / f"ck{weight}")
        losses[weight] = stats[0].loss
    # Cross-entropy of 5 classes is far above the distillation term of an untrained copy.
    assert losses[1.0] > losses[0.0] + 0.5


def test_layers_tfmot_cannot_wrap_are_refused_by_name():
    from quant.qat.layers import quantize_for_training

    with pytest.raises(BadInputError, match=r"c1/hard_swish \(Activation hard_swish\)"):
        quantize_for_training(tiny_model(hard_swish=True), "tiny")


def test_bad_options_and_missing_gpu():
    from edgeq._tensorflow import tf
    from quant.qat import QatOptions
    from quant.qat.train import device_name

    with pytest.raises(BadInputError, match="--io"):
        QatOptions(io_type="int16")
    with pytest.raises(BadInputError, match="--batch-size"):
        QatOptions(batch_size=0)
    assert device_name("cpu") == "/CPU:0"
    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(MissingToolError, match="--device gpu"):
            device_name("gpu")


def test_depthwise_weights_are_quantized_per_channel_and_batchnorm_is_frozen(float_model):
    from quant.qat import layers

    student = layers.with_batch(float_model.model, None)
    qat_model = layers.quantize_for_training(student, "tiny")
    depthwise = qat_model.get_layer("quant_dw")
    ranges = [w for w in depthwise.non_trainable_weights if w.name.endswith("_min:0")]
    assert [tuple(w.shape) for w in ranges] == [(8,)]  # one range per channel, not one
    tuned = {v.name for v in layers.trainable_variables(qat_model)}
    assert "dw/depthwise_kernel:0" in tuned
    assert not any("bn/" in name for name in tuned)


@pytest.mark.parametrize(("io_type", "dtype"), [("int8", np.int8), ("float", np.float32)])
def test_export_io_types_keep_every_op_on_the_edgetpu(float_model, images, io_type, dtype):
    from ai_edge_litert.interpreter import Interpreter

    from quant.qat import export, layers

    student = layers.with_batch(float_model.model, None)
    qat_model = layers.quantize_for_training(student, "tiny")
    layers.calibrate_ranges(qat_model, student, [float_model.preprocess.normalize(images.pixels)])
    model = export.to_tflite(qat_model, (SIZE, SIZE, 3), io_type)
    assert export.edgetpu_problems(model, io_type) == []
    interpreter = Interpreter(model_content=model)
    assert interpreter.get_input_details()[0]["dtype"] == dtype
    assert interpreter.get_output_details()[0]["dtype"] == dtype
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, SIZE, SIZE, 3]
