"""The models behind Coral's published Edge TPU latencies, as int8 ``.tflite`` files.

Each published figure of ``../shared/data/edgetpu_latency/coral_published.csv`` whose model
this project can have is tied to one entry here: the real ``.tflite`` where it is in
``../shared/data`` (Coral's own files), otherwise the same architecture at the published input
size built with random weights (latency depends on the graph, not on the weights) by the
project's builders or ``tf.keras.applications``, then quantized by the project's PTQ with its
fast settings (nearest rounding, min/max ranges, two random calibration images). Built files
are cached under ``--models`` (default: the download cache).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import statistics
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.paths import shared_data_dir


@dataclass(frozen=True)
class LatencyModel:
    """One architecture with published latencies: where its ``.tflite`` comes from."""

    key: str
    size: int
    source: str          # "shared:<path under shared data>", "keras:<App>", "builder:<name>"
    published: tuple[tuple[str, str], ...]  # (CSV model name, CSV input size) rows it matches


def _rows(*names: str, size: str) -> tuple[tuple[str, str], ...]:
    return tuple((name, size) for name in names)


#: Every architecture with published Coral latencies that this project can rebuild or has.
MODELS: tuple[LatencyModel, ...] = (
    LatencyModel("mobilenet_v1_0.25_128", 128, "shared:coral/mobilenet_v1_0.25_128_quant.tflite",
                 _rows("mobilenet_v1_0.25_128_quant", size="128x128")),
    LatencyModel("mobilenet_v1_0.5_160", 160, "shared:coral/mobilenet_v1_0.5_160_quant.tflite",
                 _rows("mobilenet_v1_0.5_160_quant", size="160x160")),
    LatencyModel("mobilenet_v1_0.75_192", 192, "shared:coral/mobilenet_v1_0.75_192_quant.tflite",
                 _rows("mobilenet_v1_0.75_192_quant", size="192x192")),
    LatencyModel("mobilenet_v1_1.0_224", 224, "builder:mobilenet_v1",
                 _rows("MobileNet v1", "mobilenet_v1_1.0_224_quant", "tf2_mobilenet_v1_1.0_224_ptq",
                       "MobileNet v1 1.0 (mobilenet_v1_1.0_224_quant_edgetpu.tflite)",
                       size="224x224")),
    LatencyModel("mobilenet_v1_1.0_224_l2norm", 224, "builder:mobilenet_v1_l2norm",
                 _rows("mobilenet_v1_1.0_224_l2norm_quant", size="224x224")),
    LatencyModel("mobilenet_v2_1.0_224", 224, "shared:coral/mobilenet_v2_1.0_224_quant.tflite",
                 _rows("MobileNet v2", "mobilenet_v2_1.0_224_quant",
                       "MobileNet v2 1.0 (mobilenet_v2_1.0_224_quant_edgetpu.tflite)",
                       size="224x224")),
    LatencyModel("tf2_mobilenet_v2_1.0_224_ptq", 224,
                 "shared:coral/tf2_mobilenet_v2_1.0_224_ptq.tflite",
                 _rows("tf2_mobilenet_v2_1.0_224_ptq", size="224x224")),
    LatencyModel("mobilenet_edgetpu_1.0_224", 224, "builder:mobilenet_edgetpu",
                 _rows("tf2_mobilenet_v3_edgetpu_1.0_224_ptq", size="224x224")),
    LatencyModel("deeplabv3_mnv2_dm05_513", 513,
                 "shared:coral/deeplabv3_mnv2_dm05_pascal_quant.tflite",
                 _rows("deeplabv3_mnv2_dm05_pascal_quant", size="513x513")),
    LatencyModel("ssd_mobilenet_v1_300", 300, "builder:ssd_mobilenet_v1",
                 _rows("MobileNet v1 SSD", size="224x224")
                 + _rows("ssd_mobilenet_v1_coco_quant_postprocess",
                         "SSD MobileNet v1 COCO with postprocess "
                         "(mobilenet_ssd_v1_coco_quant_postprocess_edgetpu.tflite)",
                         size="300x300")),
    LatencyModel("ssd_mobilenet_v2_300", 300, "builder:ssd_mobilenet_v2",
                 _rows("MobileNet v2 SSD", size="224x224")
                 + _rows("ssd_mobilenet_v2_coco_quant_postprocess",
                         "SSD MobileNet v2 COCO with postprocess "
                         "(mobilenet_ssd_v2_coco_quant_postprocess_edgetpu.tflite)",
                         size="300x300")),
    LatencyModel("ssd_mobilenet_v2_face_320", 320, "builder:ssd_mobilenet_v2_face",
                 _rows("ssd_mobilenet_v2_face_quant_postprocess",
                       "SSD MobileNet v2 face with postprocess "
                       "(mobilenet_ssd_v2_face_quant_postprocess_edgetpu.tflite)",
                       size="320x320")),
    LatencyModel("unet_mv2_128", 128, "builder:unet_mv2",
                 _rows("Unet Mv2", "keras_post_training_unet_mv2_128_quant", size="128x128")),
    LatencyModel("unet_mv2_256", 256, "builder:unet_mv2",
                 _rows("keras_post_training_unet_mv2_256_quant", size="256x256")),
    LatencyModel("densenet121_224", 224, "keras:DenseNet121", _rows("DenseNet", size="224x224")),
    LatencyModel("inception_v1_224", 224, "builder:inception_v1",
                 _rows("Inception v1", "inception_v1_224_quant",
                       "Inception v1 (inception_v1_224_quant_edgetpu.tflite)", size="224x224")),
    LatencyModel("inception_v3_299", 299, "keras:InceptionV3",
                 _rows("inception_v3_299_quant", size="299x299")),
    LatencyModel("inception_resnet_v2_299", 299, "keras:InceptionResNetV2",
                 _rows("Inception-ResNet V2", size="299x299")),
    LatencyModel("resnet50_v1_299", 299, "keras:ResNet50", _rows("ResNet-50 V1", size="299x299")),
    LatencyModel("resnet50_v1_224", 224, "keras:ResNet50",
                 _rows("tfhub_tf2_resnet_50_imagenet_ptq", size="224x224")),
    LatencyModel("resnet50_v2_299", 299, "keras:ResNet50V2", _rows("ResNet-50 V2", size="299x299")),
    LatencyModel("resnet152_v2_299", 299, "keras:ResNet152V2",
                 _rows("ResNet-152 V2", size="299x299")),
    LatencyModel("vgg16_224", 224, "keras:VGG16", _rows("VGG16", size="224x224")),
    LatencyModel("vgg19_224", 224, "keras:VGG19", _rows("VGG19", size="224x224")),
)

PUBLISHED_CSV = "edgetpu_latency/coral_published.csv"


def published_latencies(models: tuple[LatencyModel, ...] = MODELS) -> dict[str, dict[str, Any]]:
    """Return, per model key and device, the median published figure and its rows."""
    path = shared_data_dir() / PUBLISHED_CSV
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    result: dict[str, dict[str, Any]] = {}
    for model in models:
        wanted = set(model.published)
        for row in rows:
            if (row["model"], row["input_size"]) in wanted:
                device = row["device"]
                result.setdefault(model.key, {}).setdefault(device, []).append(
                    float(row["latency_ms"]))
    return {key: {device: {"ms": statistics.median(values), "figures": values}
                  for device, values in devices.items()}
            for key, devices in result.items()}


#: Coral's benchmarks page also times each model on the CPU alone (no Edge TPU): the desktop
#: of its USB 3 column and the Dev Board's embedded CPU. ``edgetpu_latency/README.md`` holds
#: that table (``| model | Desktop CPU | Embedded CPU |``).
CPU_TABLE = "edgetpu_latency/README.md"
#: Which host's CPU-only figures go with each device's points.
CPU_HOST = {"usb3": "desktop", "usb2": "embedded", "devboard": "embedded"}


def cpu_only_latencies(models: tuple[LatencyModel, ...] = MODELS) -> dict[str, dict[str, float]]:
    """Return, per model key, the published CPU-only ms: ``{"desktop": ms, "embedded": ms}``."""
    text = (shared_data_dir() / CPU_TABLE).read_text()
    table: dict[str, tuple[float, float]] = {}
    inside = False
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[:3] == ["model", "Desktop CPU", "Embedded CPU"]:
            inside = True
        elif inside and len(cells) == 3 and not set(cells[1]) <= set("- "):
            try:
                table[cells[0]] = (float(cells[1]), float(cells[2]))
            except ValueError:
                inside = False
        elif inside and not line.strip().startswith("|"):
            inside = False
    result = {}
    for model in models:
        for name, _ in model.published:
            if name in table:
                result[model.key] = {"desktop": table[name][0], "embedded": table[name][1]}
    return result


def model_path(model: LatencyModel, folder: Path) -> Path:
    """Where the ``.tflite`` of ``model`` is (shared data) or will be built (``folder``)."""
    kind, _, name = model.source.partition(":")
    if kind == "shared":
        return shared_data_dir() / name
    return folder / f"{model.key}_int8_random.tflite"


def build_models(folder: Path, models: tuple[LatencyModel, ...] = MODELS,
                 force: bool = False) -> dict[str, float]:
    """Build the random-weight int8 models not in ``folder`` yet; return seconds each.

    Quantized as the zoo table's rows are (``zoo_latency.quantize_random``: the project's PTQ,
    fast settings, random calibration images).
    """
    from zoo_latency import quantize_random

    folder.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for model in models:
        path = model_path(model, folder)
        if model.source.startswith("shared:") or (path.is_file() and not force):
            continue
        start = time.perf_counter()
        tflite = quantize_random(float_model_for(model), model.size)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(tflite)
        tmp.replace(path)
        seconds[model.key] = round(time.perf_counter() - start, 1)
        print(f"built {path.name} in {seconds[model.key]} s", flush=True)
    return seconds


def float_model_for(model: LatencyModel):
    """The float :class:`quant.float_model.FloatModel` of a built entry (random weights)."""
    from edgeq.images import inception_preprocess
    from quant.float_model import FloatModel

    kind, _, name = model.source.partition(":")
    if kind == "builder" and name.startswith("ssd_"):
        return _ssd(model)
    keras_model = (_keras_application(name, model.size) if kind == "keras"
                   else _BUILDERS[name](model.size))
    return FloatModel(model=keras_model, preprocess=inception_preprocess(model.size),
                      name=model.key, task="classify", source="random weights")


def _keras_application(name: str, size: int):
    from edgeq._tensorflow import keras

    inputs = keras.Input((size, size, 3), batch_size=1)
    return getattr(keras.applications, name)(weights=None, input_tensor=inputs)


def _mobilenet_v1(size: int):
    from quant.models import build_classifier

    return build_classifier("mobilenet_v1", size, 1.0)


def _mobilenet_v1_l2norm(size: int):
    """MobileNet v1 1.0 with its logits L2-normalized (an L2_NORMALIZATION op at the end)."""
    from edgeq._tensorflow import keras, tf

    base = _mobilenet_v1(size)
    return keras.Model(base.input, keras.layers.Lambda(
        lambda x: tf.math.l2_normalize(x, axis=-1))(base.output))


def _mobilenet_edgetpu(size: int):
    """MobileNet EdgeTPU 1.0: the ``V3_EDGETPU`` trunk, global pool, 1x1 conv logits."""
    from edgeq._tensorflow import keras
    from quant.models._layers import logits_head
    from quant.models.mobilenet_edgetpu import V3_EDGETPU
    from quant.models.mobilenet_v3 import mobilenet_v3_trunk

    inputs = keras.Input((size, size, 3), batch_size=1)
    endpoints = mobilenet_v3_trunk(inputs, V3_EDGETPU, "MobilenetEdgeTPU")
    features = endpoints[f"layer_{len(V3_EDGETPU)}"]
    return keras.Model(inputs, logits_head(features, 1001, "MobilenetEdgeTPU/Logits"))


def _unet_mv2(size: int):
    """The U-Net of TensorFlow's segmentation tutorial: a MobileNetV2 encoder (its
    ``block_1/3/6/13_expand_relu`` and ``block_16_project`` outputs) and pix2pix upsampling
    (transposed 3x3 convolution, BatchNorm, ReLU), 3 classes."""
    from edgeq._tensorflow import keras

    inputs = keras.Input((size, size, 3), batch_size=1)
    base = keras.applications.MobileNetV2(input_tensor=inputs, include_top=False, weights=None)
    names = ["block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
             "block_13_expand_relu", "block_16_project"]
    skips = [base.get_layer(name).output for name in names]
    x = skips[-1]
    for filters, skip in zip((512, 256, 128, 64), reversed(skips[:-1]), strict=True):
        x = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same",
                                         use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Concatenate()([x, skip])
    outputs = keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same")(x)
    return keras.Model(inputs, outputs)


def _inception_v1(size: int):
    """Inception v1 as TF-slim builds it (GoogLeNet with batch norm, 3 x 3 convolutions in
    the branches Szegedy et al. give 5 x 5), 1001 classes."""
    from edgeq._tensorflow import keras

    def conv(x, filters: int, kernel: int, stride: int = 1):
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same",
                                use_bias=False)(x)
        return keras.layers.ReLU()(keras.layers.BatchNormalization()(x))

    def mixed(x, b0: int, b1: tuple[int, int], b2: tuple[int, int], b3: int):
        pool = keras.layers.MaxPooling2D(3, 1, padding="same")(x)
        return keras.layers.Concatenate()([
            conv(x, b0, 1), conv(conv(x, b1[0], 1), b1[1], 3),
            conv(conv(x, b2[0], 1), b2[1], 3), conv(pool, b3, 1)])

    inputs = keras.Input((size, size, 3), batch_size=1)
    x = keras.layers.MaxPooling2D(3, 2, padding="same")(conv(inputs, 64, 7, 2))
    x = keras.layers.MaxPooling2D(3, 2, padding="same")(conv(conv(x, 64, 1), 192, 3))
    x = mixed(mixed(x, 64, (96, 128), (16, 32), 32), 128, (128, 192), (32, 96), 64)
    x = keras.layers.MaxPooling2D(3, 2, padding="same")(x)
    for b0, b1, b2, b3 in ((192, (96, 208), (16, 48), 64), (160, (112, 224), (24, 64), 64),
                           (128, (128, 256), (24, 64), 64), (112, (144, 288), (32, 64), 64),
                           (256, (160, 320), (32, 128), 128)):
        x = mixed(x, b0, b1, b2, b3)
    x = keras.layers.MaxPooling2D(2, 2, padding="same")(x)
    x = mixed(mixed(x, 256, (160, 320), (32, 128), 128), 384, (192, 384), (48, 128), 128)
    x = keras.layers.Conv2D(1001, 1)(keras.layers.GlobalAveragePooling2D(keepdims=True)(x))
    return keras.Model(inputs, keras.layers.Softmax()(keras.layers.Flatten()(x)))


_BUILDERS: dict[str, Callable[[int], Any]] = {
    "mobilenet_v1": _mobilenet_v1,
    "mobilenet_v1_l2norm": _mobilenet_v1_l2norm,
    "mobilenet_edgetpu": _mobilenet_edgetpu,
    "unet_mv2": _unet_mv2,
    "inception_v1": _inception_v1,
}

_ARCHIVE = "models/ssd_mobilenet_v1_0.75_depth_300x300_coco_float.tar.gz"


def _ssd(model: LatencyModel):
    """SSD MobileNet v1 / v2 (COCO, 90 classes; the face model: 1 class at 320x320), with
    ``TFLite_Detection_PostProcess``, from the shared archive's ``pipeline.config``."""
    from edgeq.textproto import parse_text_proto
    from quant.detection.pipeline_config import ssd_config_from_message
    from quant.detection.sources import random_ssd

    with tarfile.open(shared_data_dir() / _ARCHIVE) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("pipeline.config"))
        text = io.TextIOWrapper(archive.extractfile(member)).read()
    config = ssd_config_from_message(parse_text_proto(text), _ARCHIVE)
    kind = "ssd_mobilenet_v2" if "v2" in model.source else "ssd_mobilenet_v1"
    config = dataclasses.replace(config, feature_extractor=dataclasses.replace(
        config.feature_extractor, type=kind, depth_multiplier=1.0),
        image_size=(model.size, model.size))
    if "face" in model.source:
        config = dataclasses.replace(config, num_classes=1)
    return random_ssd(config, model.key)
