"""Quantization-aware fine-tuning: a tiny real model trains, resumes, exports for the Edge TPU."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from random_images import write_random_pngs

from edgeq.errors import BadInputError, MissingToolError
from edgeq.images import Preprocess, decode_images, inception_preprocess, list_images
from quant.float_model import FloatModel
from quant.options import QatOptions

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
def images(shared_data):
    from quant.qat.dataset import listed_files

    folder = shared_data / "coco_mini" / "train2017"
    return listed_files(list_images(folder).head(12).paths, f"{folder} (first 12)")


@pytest.fixture(scope="module")
def pixels(images, float_model) -> np.ndarray:
    return decode_images(images.paths, float_model.preprocess)


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


def test_label_free_training_exports_a_model_that_maps_completely(float_model, images, pixels,
                                                                  tmp_path):
    from edgetpu.analyze import analyze_model
    from quant.qat import QatOptions, save, train_qat

    options = QatOptions(steps=3, batch_size=4, checkpoint_dir=tmp_path / "ck", progress=False)
    result = train_qat(float_model, images, options)
    assert not images.has_labels
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
    reference = float_model.model.predict(float_model.preprocess.normalize(pixels),
                                          batch_size=1, verbose=0)
    quantized = _run_tflite(result.tflite, pixels)
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
    from quant.qat import QatOptions, distribute, image_files, layers, train

    folder = shared_data / "coco_mini" / "train2017"
    files = sorted(folder.glob("*.jpg"))[:4]
    labels_csv = tmp_path / "labels.csv"
    with labels_csv.open("w", newline="") as handle:
        csv.writer(handle).writerows([("file", "label"),
                                      *[(f.name, i % CLASSES) for i, f in enumerate(files)]])
    data = image_files(folder, CLASSES, labels_csv)
    assert data.labels == (0, 1, 2, 3) and data.has_labels
    strategy = distribute.strategy()
    with strategy.scope():
        teacher = layers.with_batch(float_model.model, None)
        qat_model = layers.quantize_for_training(teacher, "tiny")
    losses = {}
    for weight in (0.0, 1.0):
        options = QatOptions(steps=1, batch_size=4, lr=1e-12, label_weight=weight,
                             flip=False, progress=False)
        stats = train.fit(qat_model, teacher, data, float_model.preprocess, options,
                          tmp_path / f"ck{weight}", strategy)
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
    from quant.qat.distribute import device_name

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
def test_export_io_types_keep_every_op_on_the_edgetpu(float_model, pixels, io_type, dtype):
    from ai_edge_litert.interpreter import Interpreter

    from quant.qat import export, layers

    student = layers.with_batch(float_model.model, None)
    qat_model = layers.quantize_for_training(student, "tiny")
    layers.calibrate_ranges(qat_model, student, [float_model.preprocess.normalize(pixels)])
    model = export.to_tflite(qat_model, (SIZE, SIZE, 3), io_type)
    assert export.edgetpu_problems(model, io_type) == []
    interpreter = Interpreter(model_content=model)
    assert interpreter.get_input_details()[0]["dtype"] == dtype
    assert interpreter.get_output_details()[0]["dtype"] == dtype
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, SIZE, SIZE, 3]


def write_imagenet_shards(folder: Path, images: list[np.ndarray], labels: list[int],
                          shards: int) -> str:
    """Write ``images`` as TFRecord shards in the ImageNet layout; return their glob."""
    from edgeq._tensorflow import tf

    def feature(value: bytes | int):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    folder.mkdir(parents=True)
    for shard, part in enumerate(np.array_split(np.arange(len(images)), shards)):
        with tf.io.TFRecordWriter(str(folder / f"train-{shard:05d}-of-{shards:05d}")) as out:
            for i in part:
                height, width = images[i].shape[:2]
                example = {"image/encoded": tf.io.encode_jpeg(images[i]).numpy(),
                           "image/format": b"JPEG", "image/colorspace": b"RGB",
                           "image/channels": 3, "image/height": height, "image/width": width,
                           "image/class/label": labels[i], "image/class/synset": b"n01440764",
                           "image/filename": f"n01440764_{i}.JPEG".encode()}
                out.write(tf.train.Example(features=tf.train.Features(
                    feature={k: feature(v) for k, v in example.items()})).SerializeToString())
    return str(folder / "train-*")


def test_tfrecord_shards_in_the_imagenet_layout_stream_with_their_labels(tmp_path):
    from edgeq._tensorflow import tf
    from quant.qat import tfrecord_files
    from quant.qat.dataset import pipeline

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40 + 4 * i, 48, 3), np.uint8) for i in range(5)]
    pattern = write_imagenet_shards(tmp_path / "records", images, [1, 2, 3, 4, 1000], 2)
    files = tfrecord_files(pattern, 1001)
    assert len(files) == 5 and len(files.paths) == 2 and files.has_labels
    preprocess = inception_preprocess(SIZE)
    batches = list(pipeline(files, preprocess, 2, seed=0, training=False))
    assert [len(y) for _, y in batches] == [2, 2, 1]
    assert np.concatenate([y for _, y in batches]).tolist() == [1, 2, 3, 4, 1000]
    decoded = tf.io.decode_jpeg(tf.io.encode_jpeg(images[0]), dct_method="INTEGER_ACCURATE")
    expected = preprocess.normalize(preprocess.resize_pixels(decoded.numpy()))
    assert np.abs(batches[0][0][0].numpy() - expected).max() <= 1.01 / 127.5

    shifted = tfrecord_files(pattern, 1000)  # 1-based labels -> a 1000-output model's 0..999
    x, y = next(iter(pipeline(shifted, preprocess, 8, seed=0)))
    assert x.shape == (8, SIZE, SIZE, 3) and set(y.numpy().tolist()) <= {0, 1, 2, 3, 999}

    with pytest.raises(BadInputError, match="no TFRecord shard matches"):
        tfrecord_files(str(tmp_path / "none-*"), 1001)
    with tf.io.TFRecordWriter(str(tmp_path / "other-0")) as out:
        out.write(tf.train.Example().SerializeToString())
    with pytest.raises(BadInputError, match="not an ImageNet-layout TFRecord"):
        tfrecord_files(str(tmp_path / "other-*"), 1001)


def test_the_pipeline_streams_files_it_has_not_decoded(tmp_path):
    """Listing and building read no image: 300 broken files fail only once reached."""
    from edgeq._tensorflow import tf
    from quant.qat import image_files
    from quant.qat.dataset import pipeline

    folder = write_random_pngs(tmp_path / "images", 2, 40)
    for i in range(300):
        (folder / f"broken{i:03d}.png").write_bytes(b"not an image")
    files = image_files(folder, CLASSES)
    assert len(files) == 302 and not files.has_labels
    batches = iter(pipeline(files, inception_preprocess(SIZE), 2, seed=0, training=False))
    x, y = next(batches)  # 0.png, 1.png
    assert x.shape == (2, SIZE, SIZE, 3) and y.numpy().tolist() == [-1, -1]
    with pytest.raises(tf.errors.InvalidArgumentError):
        next(batches)
    (folder / "scan.tiff").write_bytes(b"II*\0")
    with pytest.raises(BadInputError, match=r"scan\.tiff: .*convert them to JPEG or PNG"):
        image_files(folder, CLASSES)


def test_training_batches_are_random_resized_crops_and_flips(tmp_path):
    from PIL import Image

    from quant.qat import image_files
    from quant.qat.dataset import pipeline

    folder = tmp_path / "images"
    folder.mkdir()
    ramp = np.broadcast_to(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 64, 3))
    Image.fromarray(np.ascontiguousarray(ramp)).save(folder / "ramp.png")
    files = image_files(folder, CLASSES)
    preprocess = inception_preprocess(SIZE)
    x, y = next(iter(pipeline(files, preprocess, 16, seed=0, flip=False)))
    x = x.numpy()
    assert x.shape == (16, SIZE, SIZE, 3) and x.dtype == np.float32
    assert y.numpy().tolist() == [-1] * 16
    assert x.min() >= -1.0 and x.max() <= 1.0
    pixels = x * 127.5 + 127.5
    assert np.abs(pixels - np.round(pixels)).max() < 1e-3  # whole pixel values
    assert len({round(float(v), 3) for v in x.mean(axis=(1, 2, 3))}) > 1  # crops differ
    left, right = x[:, :, 0].mean(axis=(1, 2)), x[:, :, -1].mean(axis=(1, 2))
    assert (left < right).all()  # the ramp rises to the right in every crop
    flipped, _ = next(iter(pipeline(files, preprocess, 16, seed=0)))
    flipped = flipped.numpy()
    assert (flipped[:, :, 0].mean(axis=(1, 2)) > flipped[:, :, -1].mean(axis=(1, 2))).any()


def test_evaluation_batches_are_the_models_preprocessing(images):
    from quant.qat.dataset import pipeline

    for preprocess in (Preprocess(SIZE, SIZE, resize="center_crop"), Preprocess(40, 48)):
        x, _ = next(iter(pipeline(images, preprocess, 6, seed=0, training=False)))
        expected = np.stack([preprocess.load(p) for p in images.paths[:6]])
        assert np.abs(x.numpy() - expected).max() <= 1.01 / preprocess.std[0]  # one level


def _distributed_run(strategy: str, images: Path, checkpoints: Path,
                     env: dict[str, str] | None = None) -> subprocess.Popen:
    script = Path(__file__).parent / "qat_distributed.py"
    return subprocess.Popen([sys.executable, str(script), strategy, str(images),
                             str(checkpoints)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


def _result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_trains_and_resumes(tmp_path):
    images = write_random_pngs(tmp_path / "images", 8, SIZE)
    result = _result(_distributed_run("mirrored", images, tmp_path / "ck"))
    assert result["replicas"] == 2 and result["chief"]
    assert result["resumed"] == 1  # the second run restored epoch 1's checkpoint
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert [h["steps"] for h in result["history"]] == [2, 2]
    assert all(np.isfinite(h["loss"]) for h in result["history"])
    assert result["tflite_bytes"] > 0
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index", "state.json"]


@pytest.mark.slow
def test_two_workers_train_resume_and_only_the_chief_writes(tmp_path):
    images = write_random_pngs(tmp_path / "images", 8, SIZE)
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("localhost", 0))
            ports.append(probe.getsockname()[1])
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    runs = [_distributed_run("multiworker", images, tmp_path / "ck", {"TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": i}})}) for i in range(2)]
    chief, other = (_result(run) for run in runs)
    assert (chief["chief"], other["chief"]) == (True, False)
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["resumed"] == other["resumed"] == 1
    assert chief["history"] == other["history"] and len(chief["history"]) == 2
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index", "state.json"]


def test_multiworker_needs_a_reachable_tf_config(monkeypatch):
    from edgeq.errors import MissingToolError
    from quant.qat import distribute

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(MissingToolError, match="needs TF_CONFIG"):
        distribute.cluster_config()
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}}')
    with pytest.raises(BadInputError, match="TF_CONFIG is malformed"):
        distribute.cluster_config()
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"chief": ["localhost:1"], "worker": ["nowhere.invalid:2222"]},
        "task": {"type": "chief", "index": 0}}))
    with pytest.raises(MissingToolError, match=r"nowhere\.invalid:2222 is unreachable"):
        distribute.check_cluster(distribute.cluster_config(), timeout=1)
    with pytest.raises(BadInputError, match="--checkpoint-dir"):
        QatOptions(strategy="multiworker")
