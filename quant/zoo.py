"""The model zoo: every checkpoint of the published TF-slim and TF detection model zoo tables.

One frozen :class:`ModelSpec` per pretrained variant, held in a private registry filled
from the tables below (the published columns exactly as published). The public API is
:func:`list_models`, :func:`get_model`, :func:`is_model`, :func:`suggest`,
:func:`select_models` and :func:`recommend`. Importing this module does not import
TensorFlow.

Sources:
- MobileNetV2: ``tensorflow/models`` ``research/slim/nets/mobilenet/README.md``
  (MACs (M), Parameters (M), Top 1, Top 5, Mobile CPU (ms) Pixel 1).
- MobileNetV1: ``research/slim/nets/mobilenet_v1.md`` (Million MACs, Million Parameters,
  Top-1, Top-5; no latency column).
- Detection: ``research/object_detection/g3doc/tf1_detection_zoo.md`` (speed or device
  latency, the table's mAP, outputs).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable

from quant.errors import BadInputError
from quant.preprocess import Preprocess, inception_preprocess

TASKS = ("classify", "detect")
SORT_KEYS = ("name", "macs", "params", "latency", "top1", "input_size")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A pretrained model variant and its published figures.

    Attributes:
        name: registry name (``mobilenet_v2_1.0_224``, ``ssdlite_mobilenet_v2_coco``).
        task: ``"classify"`` or ``"detect"``.
        family: architecture family, the builder key for classifiers.
        url: official download URL (a ``.tgz`` / ``.tar.gz`` archive).
        input_size: square input side; None for keep-aspect-ratio resizers.
        depth_multiplier: width multiplier, when the architecture has one.
        num_classes: outputs of the classifier (1001 with background), or detection classes
            (None where only the archive's ``pipeline.config`` says).
        checkpoint_prefix: checkpoint file prefix inside the archive.
        preprocess: input preprocessing; None when the input size is not fixed.
        macs_m, params_m: published millions of multiply-accumulates and parameters.
        top1, top5: published ImageNet accuracy (%).
        latency_ms: published latency or speed; ``latency_device`` says where.
        latency_device: hardware of ``latency_ms``.
        map: published detection mAP (%); ``map_metric`` says which one.
        map_metric: the table's metric (``COCO mAP``, ``Pascal mAP@0.5``...).
        outputs: ``Boxes`` or ``Masks`` for detectors.
        edgetpu_capable: whether the whole network (post-processing aside) can map to the
            Edge TPU once quantized.
        edgetpu_note: why not, or what to expect.
        source_table: the published table the row comes from.
    """

    name: str
    task: str
    family: str
    url: str
    input_size: int | None
    depth_multiplier: float | None
    num_classes: int | None
    checkpoint_prefix: str
    preprocess: Preprocess | None
    macs_m: float | None = None
    params_m: float | None = None
    top1: float | None = None
    top5: float | None = None
    latency_ms: float | None = None
    latency_device: str | None = None
    map: float | None = None
    map_metric: str | None = None
    outputs: str | None = None
    edgetpu_capable: bool = True
    edgetpu_note: str = ""
    source_table: str = ""

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["preprocess"] = self.preprocess.to_dict() if self.preprocess else None
        return data


_REGISTRY: dict[str, ModelSpec] = {}


def _register(spec: ModelSpec) -> None:
    if spec.name in _REGISTRY:
        raise ValueError(f"duplicate zoo model {spec.name}")
    _REGISTRY[spec.name] = spec


# --- MobileNetV2 (multiplier, resolution, MACs M, params M, top-1, top-5, Pixel 1 ms) -------
_V2_TABLE = "tensorflow/models research/slim/nets/mobilenet/README.md"
_V2_ROWS = (
    (1.4, 224, 582, 6.06, 75.0, 92.5, 138.0), (1.3, 224, 509, 5.34, 74.4, 92.1, 123.0),
    (1.0, 224, 300, 3.47, 71.8, 91.0, 73.8), (1.0, 192, 221, 3.47, 70.7, 90.1, 55.1),
    (1.0, 160, 154, 3.47, 68.8, 89.0, 40.2), (1.0, 128, 99, 3.47, 65.3, 86.9, 27.6),
    (1.0, 96, 56, 3.47, 60.3, 83.2, 17.6), (0.75, 224, 209, 2.61, 69.8, 89.6, 55.8),
    (0.75, 192, 153, 2.61, 68.7, 88.9, 41.6), (0.75, 160, 107, 2.61, 66.4, 87.3, 30.4),
    (0.75, 128, 69, 2.61, 63.2, 85.3, 21.9), (0.75, 96, 39, 2.61, 58.8, 81.6, 14.2),
    (0.5, 224, 97, 1.95, 65.4, 86.4, 28.7), (0.5, 192, 71, 1.95, 63.9, 85.4, 21.1),
    (0.5, 160, 50, 1.95, 61.0, 83.2, 14.9), (0.5, 128, 32, 1.95, 57.7, 80.8, 9.9),
    (0.5, 96, 18, 1.95, 51.2, 75.8, 6.4), (0.35, 224, 59, 1.66, 60.3, 82.9, 19.7),
    (0.35, 192, 43, 1.66, 58.2, 81.2, 14.6), (0.35, 160, 30, 1.66, 55.7, 79.1, 10.5),
    (0.35, 128, 20, 1.66, 50.8, 75.0, 6.9), (0.35, 96, 11, 1.66, 45.5, 70.4, 4.5),
)

# --- MobileNetV1 (multiplier, resolution, MACs M, params M, top-1, top-5) --------------------
_V1_TABLE = "tensorflow/models research/slim/nets/mobilenet_v1.md"
_V1_ROWS = (
    (1.0, 224, 569, 4.24, 70.9, 89.9), (1.0, 192, 418, 4.24, 70.0, 89.2),
    (1.0, 160, 291, 4.24, 68.0, 87.7), (1.0, 128, 186, 4.24, 65.2, 85.8),
    (0.75, 224, 317, 2.59, 68.4, 88.2), (0.75, 192, 233, 2.59, 67.2, 87.3),
    (0.75, 160, 162, 2.59, 65.3, 86.0), (0.75, 128, 104, 2.59, 62.1, 83.9),
    (0.5, 224, 150, 1.34, 63.3, 84.9), (0.5, 192, 110, 1.34, 61.7, 83.6),
    (0.5, 160, 77, 1.34, 59.1, 81.9), (0.5, 128, 49, 1.34, 56.3, 79.4),
    (0.25, 224, 41, 0.47, 49.8, 74.2), (0.25, 192, 34, 0.47, 47.7, 72.3),
    (0.25, 160, 21, 0.47, 45.5, 70.3), (0.25, 128, 14, 0.47, 41.5, 66.3),
)


def _register_classifiers() -> None:
    for mult, size, macs, params, top1, top5, latency in _V2_ROWS:
        name = f"mobilenet_v2_{mult}_{size}"
        _register(ModelSpec(
            name=name, task="classify", family="mobilenet_v2",
            url=f"https://storage.googleapis.com/mobilenet_v2/checkpoints/{name}.tgz",
            input_size=size, depth_multiplier=mult, num_classes=1001,
            checkpoint_prefix=f"{name}.ckpt", preprocess=inception_preprocess(size),
            macs_m=macs, params_m=params, top1=top1, top5=top5, latency_ms=latency,
            latency_device="Pixel 1 CPU", source_table=_V2_TABLE,
        ))
    for mult, size, macs, params, top1, top5 in _V1_ROWS:
        name = f"mobilenet_v1_{mult}_{size}"
        _register(ModelSpec(
            name=name, task="classify", family="mobilenet_v1",
            url=f"http://download.tensorflow.org/models/mobilenet_v1_2018_08_02/{name}.tgz",
            input_size=size, depth_multiplier=mult, num_classes=1001,
            checkpoint_prefix=f"{name}.ckpt", preprocess=inception_preprocess(size),
            macs_m=macs, params_m=params, top1=top1, top5=top5, source_table=_V1_TABLE,
        ))


# --- TF1 detection model zoo ------------------------------------------------------------------
_OD = "http://download.tensorflow.org/models/object_detection/"
_OD_TABLE = "tensorflow/models research/object_detection/g3doc/tf1_detection_zoo.md"
_TWO_STAGE = (
    "two-stage detector: its second stage crops a variable number of proposals with "
    "CropAndResize and runs NMS between stages; the Edge TPU compiler maps neither dynamic "
    "shapes nor these ops, so at most the backbone could run on the Edge TPU"
)
_SSD_NOTE = "single-shot: every layer can map; TFLite_Detection_PostProcess runs on the CPU"
_LARGE_NOTE = (_SSD_NOTE + "; its parameters exceed the ~8 MB on-chip cache and are streamed "
               "each inference")

# (table, latency device, mAP metric, num_classes, rows); a row is
# (name, archive, latency ms, mAP or None, outputs, input size or None).
_DETECTION_TABLES = (
    ("COCO-trained models", "GTX TITAN X GPU, 600x600", "COCO mAP", 90, (
        ("ssd_mobilenet_v1_coco", "ssd_mobilenet_v1_coco_2018_01_28", 30, 21, "Boxes", 300),
        ("ssd_mobilenet_v1_0.75_depth_coco",
         "ssd_mobilenet_v1_0.75_depth_300x300_coco14_sync_2018_07_03", 26, 18, "Boxes", 300),
        ("ssd_mobilenet_v1_quantized_coco",
         "ssd_mobilenet_v1_quantized_300x300_coco14_sync_2018_07_18", 29, 18, "Boxes", 300),
        ("ssd_mobilenet_v1_0.75_depth_quantized_coco",
         "ssd_mobilenet_v1_0.75_depth_quantized_300x300_coco14_sync_2018_07_18", 29, 16,
         "Boxes", 300),
        ("ssd_mobilenet_v1_ppn_coco",
         "ssd_mobilenet_v1_ppn_shared_box_predictor_300x300_coco14_sync_2018_07_03", 26, 20,
         "Boxes", 300),
        ("ssd_mobilenet_v1_fpn_coco",
         "ssd_mobilenet_v1_fpn_shared_box_predictor_640x640_coco14_sync_2018_07_03", 56, 32,
         "Boxes", 640),
        ("ssd_resnet_50_fpn_coco",
         "ssd_resnet50_v1_fpn_shared_box_predictor_640x640_coco14_sync_2018_07_03", 76, 35,
         "Boxes", 640),
        ("ssd_mobilenet_v2_coco", "ssd_mobilenet_v2_coco_2018_03_29", 31, 22, "Boxes", 300),
        ("ssd_mobilenet_v2_quantized_coco",
         "ssd_mobilenet_v2_quantized_300x300_coco_2019_01_03", 29, 22, "Boxes", 300),
        ("ssdlite_mobilenet_v2_coco", "ssdlite_mobilenet_v2_coco_2018_05_09", 27, 22, "Boxes",
         300),
        ("ssd_inception_v2_coco", "ssd_inception_v2_coco_2018_01_28", 42, 24, "Boxes", 300),
        ("faster_rcnn_inception_v2_coco", "faster_rcnn_inception_v2_coco_2018_01_28", 58, 28,
         "Boxes", None),
        ("faster_rcnn_resnet50_coco", "faster_rcnn_resnet50_coco_2018_01_28", 89, 30, "Boxes",
         None),
        ("faster_rcnn_resnet50_lowproposals_coco",
         "faster_rcnn_resnet50_lowproposals_coco_2018_01_28", 64, None, "Boxes", None),
        ("rfcn_resnet101_coco", "rfcn_resnet101_coco_2018_01_28", 92, 30, "Boxes", None),
        ("faster_rcnn_resnet101_coco", "faster_rcnn_resnet101_coco_2018_01_28", 106, 32,
         "Boxes", None),
        ("faster_rcnn_resnet101_lowproposals_coco",
         "faster_rcnn_resnet101_lowproposals_coco_2018_01_28", 82, None, "Boxes", None),
        ("faster_rcnn_inception_resnet_v2_atrous_coco",
         "faster_rcnn_inception_resnet_v2_atrous_coco_2018_01_28", 620, 37, "Boxes", None),
        ("faster_rcnn_inception_resnet_v2_atrous_lowproposals_coco",
         "faster_rcnn_inception_resnet_v2_atrous_lowproposals_coco_2018_01_28", 241, None,
         "Boxes", None),
        ("faster_rcnn_nas", "faster_rcnn_nas_coco_2018_01_28", 1833, 43, "Boxes", None),
        ("faster_rcnn_nas_lowproposals_coco", "faster_rcnn_nas_lowproposals_coco_2018_01_28",
         540, None, "Boxes", None),
        ("mask_rcnn_inception_resnet_v2_atrous_coco",
         "mask_rcnn_inception_resnet_v2_atrous_coco_2018_01_28", 771, 36, "Masks", None),
        ("mask_rcnn_inception_v2_coco", "mask_rcnn_inception_v2_coco_2018_01_28", 79, 25,
         "Masks", None),
        ("mask_rcnn_resnet101_atrous_coco", "mask_rcnn_resnet101_atrous_coco_2018_01_28", 470,
         33, "Masks", None),
        ("mask_rcnn_resnet50_atrous_coco", "mask_rcnn_resnet50_atrous_coco_2018_01_28", 343,
         29, "Masks", None),
    )),
    ("Mobile models", "Pixel 1 CPU", "COCO mAP", 90, (
        ("ssd_mobiledet_cpu_coco", "ssdlite_mobiledet_cpu_320x320_coco_2020_05_19", 113, 24.0,
         "Boxes", 320),
        ("ssd_mobilenet_v2_mnasfpn_coco",
         "ssd_mobilenet_v2_mnasfpn_shared_box_predictor_320x320_coco_sync_2020_05_18", 183,
         26.6, "Boxes", 320),
        ("ssd_mobilenet_v3_large_coco", "ssd_mobilenet_v3_large_coco_2020_01_14", 119, 22.6,
         "Boxes", 320),
        ("ssd_mobilenet_v3_small_coco", "ssd_mobilenet_v3_small_coco_2020_01_14", 43, 15.4,
         "Boxes", 320),
    )),
    ("Pixel4 Edge TPU models", "Pixel 4 Edge TPU", "COCO mAP (uint8)", 90, (
        ("ssd_mobiledet_edgetpu_coco", "ssdlite_mobiledet_edgetpu_320x320_coco_2020_05_19", 6.9,
         25.6, "Boxes", 320),
        ("ssd_mobilenet_edgetpu_coco",
         "https://storage.cloud.google.com/mobilenet_edgetpu/checkpoints/"
         "ssdlite_mobilenet_edgetpu_coco_quant.tar.gz", 6.6, 24.3, "Boxes", 320),
    )),
    ("Pixel4 DSP models", "Pixel 4 DSP", "COCO mAP (uint8)", 90, (
        ("ssd_mobiledet_dsp_coco", "ssdlite_mobiledet_dsp_320x320_coco_2020_05_19", 12.3, 28.8,
         "Boxes", 320),
    )),
    ("Kitti-trained models", "GTX TITAN X GPU", "Pascal mAP@0.5", None, (
        ("faster_rcnn_resnet101_kitti", "faster_rcnn_resnet101_kitti_2018_01_28", 79, 87,
         "Boxes", None),
    )),
    ("Open Images-trained models", "GTX TITAN X GPU", "Open Images mAP@0.5", None, (
        ("faster_rcnn_inception_resnet_v2_atrous_oidv2",
         "faster_rcnn_inception_resnet_v2_atrous_oid_2018_01_28", 727, 37, "Boxes", None),
        ("faster_rcnn_inception_resnet_v2_atrous_lowproposals_oidv2",
         "faster_rcnn_inception_resnet_v2_atrous_lowproposals_oid_2018_01_28", 347, None,
         "Boxes", None),
        ("facessd_mobilenet_v2_quantized_open_image_v4",
         "facessd_mobilenet_v2_quantized_320x320_open_image_v4", 20, 73, "Boxes", 320),
        ("faster_rcnn_inception_resnet_v2_atrous_oidv4",
         "faster_rcnn_inception_resnet_v2_atrous_oid_v4_2018_12_12", 425, 54, "Boxes", None),
        ("ssd_mobilenetv2_oidv4", "ssd_mobilenet_v2_oid_v4_2018_12_12", 89, 36, "Boxes", 300),
        ("ssd_resnet_101_fpn_oidv4",
         "ssd_resnet101_v1_fpn_shared_box_predictor_oid_512x512_sync_2019_01_20", 237, 38,
         "Boxes", 512),
    )),
    ("iNaturalist Species-trained models", "GTX TITAN X GPU", "Pascal mAP@0.5", None, (
        ("faster_rcnn_resnet101_fgvc", "faster_rcnn_resnet101_fgvc_2018_07_19", 395, 58,
         "Boxes", None),
        ("faster_rcnn_resnet50_fgvc", "faster_rcnn_resnet50_fgvc_2018_07_19", 366, 55, "Boxes",
         None),
    )),
    ("AVA v2.1 trained models", "GTX TITAN X GPU", "Pascal mAP@0.5", None, (
        ("faster_rcnn_resnet101_ava_v2.1", "faster_rcnn_resnet101_ava_v2.1_2018_04_30", 93, 11,
         "Boxes", None),
    )),
)


def _detection_family(name: str) -> str:
    for prefix in ("faster_rcnn", "rfcn", "mask_rcnn"):
        if name.startswith(prefix):
            return prefix
    return name.rsplit("_coco", 1)[0].rsplit("_oidv4", 1)[0].rsplit("_open_image", 1)[0]


def _register_detectors() -> None:
    for table, device, metric, classes, rows in _DETECTION_TABLES:
        for name, archive, latency, published_map, outputs, size in rows:
            family = _detection_family(name)
            two_stage = family in ("faster_rcnn", "rfcn", "mask_rcnn")
            large = "resnet" in name and not two_stage
            url = archive if archive.startswith("http") else f"{_OD}{archive}.tar.gz"
            _register(ModelSpec(
                name=name, task="detect", family=family, url=url, input_size=size,
                depth_multiplier=0.75 if "0.75_depth" in name else None, num_classes=classes,
                checkpoint_prefix="model.ckpt",
                preprocess=inception_preprocess(size) if size and not two_stage else None,
                latency_ms=latency, latency_device=device, map=published_map,
                map_metric=metric, outputs=outputs, edgetpu_capable=not two_stage,
                edgetpu_note=_TWO_STAGE if two_stage else (_LARGE_NOTE if large else _SSD_NOTE),
                source_table=f"{_OD_TABLE} ({table})",
            ))


_register_classifiers()
_register_detectors()


def list_models(task: str | None = None) -> list[str]:
    """Return the registered model names (of one task when given), in table order."""
    return [name for name, spec in _REGISTRY.items() if task in (None, spec.task)]


def is_model(name: str) -> bool:
    """Return True when ``name`` is a zoo model."""
    return name in _REGISTRY


def suggest(name: str, limit: int = 3) -> list[str]:
    """Return the zoo names closest to ``name``."""
    return difflib.get_close_matches(name, list(_REGISTRY), n=limit, cutoff=0.6)


def get_model(name: str) -> ModelSpec:
    """Return the spec of ``name``.

    Raises:
        BadInputError: unknown name; the message suggests the closest names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        close = suggest(name)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see quantize --list"
        raise BadInputError(f"unknown model {name!r}{hint}") from None


def _sort_value(spec: ModelSpec, key: str):
    values = {"name": spec.name, "macs": spec.macs_m, "params": spec.params_m,
              "latency": spec.latency_ms, "top1": spec.top1 or spec.map,
              "input_size": spec.input_size}
    value = values[key]
    return (value is None, value if value is not None else 0)


def select_models(task: str | None = None, max_macs: float | None = None,
                  max_params: float | None = None, max_latency_ms: float | None = None,
                  min_top1: float | None = None, input_size: int | None = None,
                  edgetpu_only: bool = False, sort: str = "name",
                  models: Iterable[ModelSpec] | None = None) -> list[ModelSpec]:
    """Return the models meeting every given constraint, sorted by ``sort``.

    A model lacking the published figure a constraint needs does not meet it. ``min_top1``
    applies to ImageNet top-1 for classifiers and to the published mAP for detectors.

    Raises:
        BadInputError: unknown task or sort key.
    """
    if task is not None and task not in TASKS:
        raise BadInputError(f"unknown task {task!r}; expected one of {TASKS}")
    if sort not in SORT_KEYS:
        raise BadInputError(f"unknown sort key {sort!r}; expected one of {SORT_KEYS}")

    def within(value: float | None, limit: float | None, above: bool = False) -> bool:
        if limit is None:
            return True
        return value is not None and (value >= limit if above else value <= limit)

    chosen = [
        spec for spec in (models if models is not None else _REGISTRY.values())
        if task in (None, spec.task)
        and within(spec.macs_m, max_macs) and within(spec.params_m, max_params)
        and within(spec.latency_ms, max_latency_ms)
        and within(spec.top1 if spec.task == "classify" else spec.map, min_top1, above=True)
        and (input_size is None or spec.input_size == input_size)
        and (spec.edgetpu_capable or not edgetpu_only)
    ]
    return sorted(chosen, key=lambda spec: _sort_value(spec, sort))


def recommend(**constraints) -> ModelSpec | None:
    """Return the smallest model meeting ``constraints`` (see :func:`select_models`).

    As the TFLite model guide advises: narrow by the constraints, then prefer the smallest
    (fewest MACs, then fewest parameters, then lowest published latency); among equals, the
    more accurate.
    """
    candidates = select_models(**constraints)
    if not candidates:
        return None

    def size(spec: ModelSpec) -> tuple:
        accuracy = spec.top1 if spec.task == "classify" else spec.map
        return (_sort_value(spec, "macs"), _sort_value(spec, "params"),
                _sort_value(spec, "latency"), -(accuracy or 0.0))

    return min(candidates, key=size)
