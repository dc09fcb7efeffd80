"""The model zoo: every checkpoint of the published TF-slim and TF1 detection model zoo tables.

One frozen :class:`ModelSpec` per pretrained variant, held in a private registry filled
from the tables below (the published columns exactly as published; ``None`` where a table
has no value). The public API is :func:`list_models`, :func:`is_model`, :func:`get_model`,
:func:`suggest`, :func:`select_models`, :func:`recommend` and :func:`edgetpu_latency_ms`.
Importing this module does not import TensorFlow.

Buildable rows and the Coral estimate: ``ModelSpec.builder`` names the registry entry
``quantize --model NAME`` builds the row with (the classifier family, a key of
:func:`quant.models.build_classifier`, or the ``feature_extractor.type`` of the detection
archive's ``pipeline.config``, a key of :func:`quant.detection.ssd.build_ssd`). Those registries
import TensorFlow, so ``scripts/zoo_latency.py`` records their keys (and the rows a builder
refuses, e.g. for ``use_explicit_padding``) in the package data ``zoo_edgetpu.json``, next to
the graph features of every buildable row built with random weights; ``ModelSpec.buildable``
is read from that record and a test keeps it equal to the live registries. Latencies are
computed from the stored features when read (:func:`edgetpu_latency_ms`, through
:func:`edgetpu.cost.latency_ms`), so refitting the cost model's constants needs no
regeneration (changing a builder or the features of ``edgetpu.cost.GraphFeatures`` does).

Sources (``tensorflow/models``):

- MobileNetV2: ``research/slim/nets/mobilenet/README.md`` (MACs (M), Parameters (M),
  Top 1 Accuracy, Top 5 Accuracy, Mobile CPU (ms) Pixel 1).
- MobileNetV1: ``research/slim/nets/mobilenet_v1.md`` (Million MACs, Million Parameters,
  Top-1 Accuracy, Top-5 Accuracy; no latency column). Float checkpoints only.
- Detection: ``research/object_detection/g3doc/tf1_detection_zoo.md`` (speed or device
  latency, the table's mAP, outputs); input sizes, resizers and class counts from the
  matching ``research/object_detection/samples/configs/*.config``.

Families: ``mobilenet_v1`` and ``mobilenet_v2`` (classifiers, the keys of
:func:`quant.models.build_classifier`); for detectors the meta-architecture and backbone:
``ssd_mobilenet_v1``, ``ssd_mobilenet_v1_ppn``, ``ssd_mobilenet_v1_fpn``,
``ssd_resnet50_v1_fpn``, ``ssd_resnet101_v1_fpn``, ``ssd_mobilenet_v2``,
``ssd_mobilenet_v2_mnasfpn``, ``ssd_inception_v2``, ``ssdlite_mobilenet_v2``,
``ssdlite_mobilenet_v3_large``, ``ssdlite_mobilenet_v3_small``, ``ssdlite_mobilenet_edgetpu``,
``ssdlite_mobiledet``, ``ssd_spaghettinet`` (single-shot) and ``faster_rcnn``, ``rfcn``,
``mask_rcnn``, ``context_rcnn`` (two-stage).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import fnmatch
import functools
import json
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

from edgeq.errors import BadInputError
from edgeq.images import Preprocess, inception_preprocess
from quant.detection.preprocessing import extractor_preprocess

TASKS = ("classify", "detect")
# Sort keys: "table" keeps the published order; size-like keys ascend, accuracy keys
# descend; models lacking the value go last.
# "latency": the published timing (its table's device); "coral": the estimated Coral Edge
# TPU latency on the chosen device (default usb3).
SORT_KEYS = ("table", "name", "macs", "params", "latency", "coral", "top1", "map",
             "input_size")
_DESCENDING = ("top1", "map")
#: Coral Edge TPU devices with a latency estimate (the keys of ``edgetpu.cost.latency_ms``).
DEVICES = ("usb3", "usb2", "pcie", "devboard")
DEFAULT_DEVICE = "usb3"
#: Short device names for column headers and messages.
DEVICE_LABELS = {"usb3": "USB3", "usb2": "USB2", "pcie": "PCIe", "devboard": "Dev Board"}
#: The package data file of buildable rows and their graph features.
EDGETPU_TABLE = "zoo_edgetpu.json"
#: How to regenerate it.
REGENERATE = "python scripts/zoo_latency.py"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A pretrained model variant and its published figures.

    Attributes:
        name: registry name (``mobilenet_v2_1.0_224``, ``ssdlite_mobilenet_v2_coco``).
        task: ``"classify"`` or ``"detect"``.
        family: architecture family (see the module docstring).
        url: official download URL (a ``.tgz`` / ``.tar.gz`` archive).
        input_size: square input side in pixels; None for keep-aspect-ratio resizers
            (``resizer`` gives their min / max) or where no config was published.
        depth_multiplier: width multiplier, when the variant is named by one.
        num_classes: classifier outputs (1001 with background) or detection classes
            without background, from the training config; None where unpublished.
        checkpoint_prefix: checkpoint file prefix inside the archive.
        preprocess: input preprocessing; None when the input size is not fixed.
        source_table: the published table the row comes from.
        macs_m, params_m: published millions of multiply-accumulates and parameters.
        top1, top5: published ImageNet accuracy (%).
        latency_ms: published classifier latency (``Mobile CPU (ms) Pixel 1``).
        speed_ms: published detector timing; ``timing`` names the column and device.
        timing: the column ``latency_ms`` / ``speed_ms`` comes from, with its device.
        map: the detection table's accuracy figure; ``map_metric`` names it.
        map_metric: the table's metric column as published (``COCO mAP``, ...).
        coco_map: ``map`` when the metric is COCO mAP on COCO, else None.
        outputs: ``Boxes`` or ``Masks`` for detectors.
        resizer: the detector's image resizer from its training config.
        extra_columns: other published cells of the row, verbatim, as (column, cell).
        edgetpu_capable: whether the network (detection post-processing aside) can be
            mapped to the Coral Edge TPU once fully int8-quantized.
        edgetpu_note: why not, or what to expect.
        builder: the builder registry key ``quantize --model`` dispatches on: the classifier
            family or the ``feature_extractor.type`` of the row's ``pipeline.config``; None
            for two-stage detectors (quantize builds single-shot detectors only).
        buildable: whether this tool can build and quantize the row today (its builder is
            registered and accepts the row's settings; see the module docstring).
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
    source_table: str
    macs_m: float | None = None
    params_m: float | None = None
    top1: float | None = None
    top5: float | None = None
    latency_ms: float | None = None
    speed_ms: float | None = None
    timing: str | None = None
    map: float | None = None
    map_metric: str | None = None
    coco_map: float | None = None
    outputs: str | None = None
    resizer: str | None = None
    extra_columns: tuple[tuple[str, str], ...] = ()
    edgetpu_capable: bool = True
    edgetpu_note: str = ""
    builder: str | None = None
    buildable: bool = False

    @property
    def published_latency_ms(self) -> float | None:
        """Return the published timing of either task (``latency_ms`` or ``speed_ms``)."""
        return self.latency_ms if self.task == "classify" else self.speed_ms

    @property
    def accuracy(self) -> float | None:
        """Return top-1 for classifiers, the table's mAP for detectors."""
        return self.top1 if self.task == "classify" else self.map

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (inverse of :meth:`from_dict`)."""
        data = dataclasses.asdict(self)
        data["preprocess"] = self.preprocess.to_dict() if self.preprocess else None
        data["extra_columns"] = [list(pair) for pair in self.extra_columns]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Rebuild a spec from :meth:`to_dict` output (e.g. a JSON sidecar).

        Keys that listings add to the spec (``edgetpu_latency_ms``, ``edgetpu_cpu_ops``) are
        ignored.

        Raises:
            BadInputError: unknown or missing keys.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k not in _DERIVED_KEYS}
        unknown = set(data) - fields
        if unknown:
            raise BadInputError(f"unknown model spec keys {sorted(unknown)}")
        values = dict(data)
        if values.get("preprocess") is not None:
            values["preprocess"] = Preprocess.from_dict(values["preprocess"])
        values["extra_columns"] = tuple(tuple(p) for p in values.get("extra_columns", ()))
        try:
            return cls(**values)
        except TypeError as exc:
            raise BadInputError(f"incomplete model spec: {exc}") from exc


# Keys a listing adds to ModelSpec.to_dict() that are computed, not part of the spec.
_DERIVED_KEYS = ("edgetpu_latency_ms", "edgetpu_cpu_ops")

_REGISTRY: dict[str, ModelSpec] = {}


def _register(spec: ModelSpec) -> None:
    if spec.name in _REGISTRY:
        raise ValueError(f"duplicate zoo model {spec.name}")
    _REGISTRY[spec.name] = spec


# --- Classifiers: TF-slim MobileNetV2 and MobileNetV1 ------------------------------------------
_V2_TABLE = "research/slim/nets/mobilenet/README.md (Mobilenet V2 Imagenet Checkpoints)"
_V2_URL = "https://storage.googleapis.com/mobilenet_v2/checkpoints/{name}.tgz"
# (multiplier, resolution, MACs (M), Parameters (M), Top 1, Top 5, Mobile CPU (ms) Pixel 1)
_V2_ROWS = (
    (1.4, 224, 582, 6.06, 75.0, 92.5, 138.0),
    (1.3, 224, 509, 5.34, 74.4, 92.1, 123.0),
    (1.0, 224, 300, 3.47, 71.8, 91.0, 73.8),
    (1.0, 192, 221, 3.47, 70.7, 90.1, 55.1),
    (1.0, 160, 154, 3.47, 68.8, 89.0, 40.2),
    (1.0, 128, 99, 3.47, 65.3, 86.9, 27.6),
    (1.0, 96, 56, 3.47, 60.3, 83.2, 17.6),
    (0.75, 224, 209, 2.61, 69.8, 89.6, 55.8),
    (0.75, 192, 153, 2.61, 68.7, 88.9, 41.6),
    (0.75, 160, 107, 2.61, 66.4, 87.3, 30.4),
    (0.75, 128, 69, 2.61, 63.2, 85.3, 21.9),
    (0.75, 96, 39, 2.61, 58.8, 81.6, 14.2),
    (0.5, 224, 97, 1.95, 65.4, 86.4, 28.7),
    (0.5, 192, 71, 1.95, 63.9, 85.4, 21.1),
    (0.5, 160, 50, 1.95, 61.0, 83.2, 14.9),
    (0.5, 128, 32, 1.95, 57.7, 80.8, 9.9),
    (0.5, 96, 18, 1.95, 51.2, 75.8, 6.4),
    (0.35, 224, 59, 1.66, 60.3, 82.9, 19.7),
    (0.35, 192, 43, 1.66, 58.2, 81.2, 14.6),
    (0.35, 160, 30, 1.66, 55.7, 79.1, 10.5),
    (0.35, 128, 20, 1.66, 50.8, 75.0, 6.9),
    (0.35, 96, 11, 1.66, 45.5, 70.4, 4.5),
)

_V1_TABLE = "research/slim/nets/mobilenet_v1.md (Pre-trained Models, float rows)"
_V1_URL = "http://download.tensorflow.org/models/mobilenet_v1_2018_08_02/{name}.tgz"
# (multiplier, resolution, Million MACs, Million Parameters, Top-1, Top-5)
_V1_ROWS = (
    (1.0, 224, 569, 4.24, 70.9, 89.9),
    (1.0, 192, 418, 4.24, 70.0, 89.2),
    (1.0, 160, 291, 4.24, 68.0, 87.7),
    (1.0, 128, 186, 4.24, 65.2, 85.8),
    (0.75, 224, 317, 2.59, 68.4, 88.2),
    (0.75, 192, 233, 2.59, 67.2, 87.3),
    (0.75, 160, 162, 2.59, 65.3, 86.0),
    (0.75, 128, 104, 2.59, 62.1, 83.9),
    (0.5, 224, 150, 1.34, 63.3, 84.9),
    (0.5, 192, 110, 1.34, 61.7, 83.6),
    (0.5, 160, 77, 1.34, 59.1, 81.9),
    (0.5, 128, 49, 1.34, 56.3, 79.4),
    (0.25, 224, 41, 0.47, 49.8, 74.2),
    (0.25, 192, 34, 0.47, 47.7, 72.3),
    (0.25, 160, 21, 0.47, 45.5, 70.3),
    (0.25, 128, 14, 0.47, 41.5, 66.3),
)

_CLASSIFIER_NOTE = ("every op (conv, depthwise conv, ReLU6, add, average pool, 1x1 conv "
                    "head, softmax) is in the Edge TPU's supported set")


def _classifier(family: str, url: str, table: str, mult: float, size: int, macs: float,
                params: float, top1: float, top5: float,
                latency: float | None = None) -> ModelSpec:
    name = f"{family}_{mult}_{size}"
    return ModelSpec(
        name=name, task="classify", family=family, url=url.format(name=name),
        input_size=size, depth_multiplier=mult, num_classes=1001,
        checkpoint_prefix=f"{name}.ckpt", preprocess=inception_preprocess(size),
        source_table=table, macs_m=macs, params_m=params, top1=top1, top5=top5,
        latency_ms=latency, timing="Mobile CPU (ms) Pixel 1" if latency is not None else None,
        edgetpu_note=_CLASSIFIER_NOTE, builder=family,
    )


# --- Detectors: the TF1 detection model zoo ----------------------------------------------------
_OD_URL = "http://download.tensorflow.org/models/object_detection/{archive}.tar.gz"
_OD_TABLE = "research/object_detection/g3doc/tf1_detection_zoo.md"
# "running time in ms per 600x600 image (including all pre and post-processing)"
_TITAN_X = "Speed (ms), GTX TITAN X, 600x600 image"

_TWO_STAGE_NOTE = (
    "two-stage: the second stage crops a data-dependent number of proposals "
    "(CropAndResize after first-stage NMS), and neither CropAndResize, NMS nor "
    "dynamic shapes are Edge TPU ops (the compiler needs static shapes), so at most the "
    "backbone before the first unsupported op would map"
)
_SSD_NOTE = ("single-shot: backbone and box predictors use Edge TPU ops; "
             "TFLite_Detection_PostProcess runs on the CPU")
_FPN_NOTE = (_SSD_NOTE + "; export the FPN upsampling as ResizeNearestNeighbor "
             "(use_native_resize_op): the default reshape-and-multiply upsampling builds "
             "rank-6 tensors, beyond the Edge TPU's 3 innermost dimensions")
_HSWISH_LOWERED_NOTE = (
    _SSD_NOTE + "; hard-swish (TFLite HARD_SWISH) is not an Edge TPU op, so quantize --method "
    "ptq rewrites it as ADD with ReLU6, MUL, MUL, which map (the archive's tflite_graph.pb "
    "route keeps HARD_SWISH, and the network from the first one, on the CPU)"
)
_PIXEL6_NOTE = (_SSD_NOTE + "; designed and timed for the Pixel 6 (Google Tensor) Edge TPU, "
                "not Coral: Coral compilation is not published")


@dataclasses.dataclass(frozen=True)
class _DetectionTable:
    """One published table: its columns, training data and rows."""

    title: str
    timing: str | None
    metric: str
    coco: bool
    rows: tuple[tuple, ...]


def _fixed(size: int) -> str:
    return f"fixed_shape_resizer {size}x{size}"


def _keep(low: int, high: int) -> str:
    return f"keep_aspect_ratio_resizer min_dimension {low} max_dimension {high}"


# A row: (name, family, archive or URL, timing ms, mAP, outputs, num_classes, input size,
# resizer, extra published cells). input size None: keep-aspect resizer or not published.
_DETECTION_TABLES = (
    _DetectionTable("COCO-trained models", _TITAN_X, "COCO mAP", True, (
        ("ssd_mobilenet_v1_coco", "ssd_mobilenet_v1", "ssd_mobilenet_v1_coco_2018_01_28",
         30, 21, "Boxes", 90, 300, _fixed(300)),
        ("ssd_mobilenet_v1_0.75_depth_coco", "ssd_mobilenet_v1",
         "ssd_mobilenet_v1_0.75_depth_300x300_coco14_sync_2018_07_03",
         26, 18, "Boxes", 90, 300, _fixed(300)),
        ("ssd_mobilenet_v1_quantized_coco", "ssd_mobilenet_v1",
         "ssd_mobilenet_v1_quantized_300x300_coco14_sync_2018_07_18",
         29, 18, "Boxes", 90, 300, _fixed(300)),
        ("ssd_mobilenet_v1_0.75_depth_quantized_coco", "ssd_mobilenet_v1",
         "ssd_mobilenet_v1_0.75_depth_quantized_300x300_coco14_sync_2018_07_18",
         29, 16, "Boxes", 90, 300, _fixed(300)),
        ("ssd_mobilenet_v1_ppn_coco", "ssd_mobilenet_v1_ppn",
         "ssd_mobilenet_v1_ppn_shared_box_predictor_300x300_coco14_sync_2018_07_03",
         26, 20, "Boxes", 90, 300, _fixed(300)),
        ("ssd_mobilenet_v1_fpn_coco", "ssd_mobilenet_v1_fpn",
         "ssd_mobilenet_v1_fpn_shared_box_predictor_640x640_coco14_sync_2018_07_03",
         56, 32, "Boxes", 90, 640, _fixed(640)),
        ("ssd_resnet_50_fpn_coco", "ssd_resnet50_v1_fpn",
         "ssd_resnet50_v1_fpn_shared_box_predictor_640x640_coco14_sync_2018_07_03",
         76, 35, "Boxes", 90, 640, _fixed(640)),
        ("ssd_mobilenet_v2_coco", "ssd_mobilenet_v2", "ssd_mobilenet_v2_coco_2018_03_29",
         31, 22, "Boxes", 90, 300, _fixed(300)),
        ("ssd_mobilenet_v2_quantized_coco", "ssd_mobilenet_v2",
         "ssd_mobilenet_v2_quantized_300x300_coco_2019_01_03",
         29, 22, "Boxes", 90, 300, _fixed(300)),
        ("ssdlite_mobilenet_v2_coco", "ssdlite_mobilenet_v2",
         "ssdlite_mobilenet_v2_coco_2018_05_09", 27, 22, "Boxes", 90, 300, _fixed(300)),
        ("ssd_inception_v2_coco", "ssd_inception_v2", "ssd_inception_v2_coco_2018_01_28",
         42, 24, "Boxes", 90, 300, _fixed(300)),
        ("faster_rcnn_inception_v2_coco", "faster_rcnn",
         "faster_rcnn_inception_v2_coco_2018_01_28", 58, 28, "Boxes", 90, None,
         _keep(600, 1024)),
        ("faster_rcnn_resnet50_coco", "faster_rcnn", "faster_rcnn_resnet50_coco_2018_01_28",
         89, 30, "Boxes", 90, None, _keep(600, 1024)),
        ("faster_rcnn_resnet50_lowproposals_coco", "faster_rcnn",
         "faster_rcnn_resnet50_lowproposals_coco_2018_01_28", 64, None, "Boxes", 90, None,
         _keep(600, 1024)),
        ("rfcn_resnet101_coco", "rfcn", "rfcn_resnet101_coco_2018_01_28", 92, 30, "Boxes",
         90, None, _keep(600, 1024)),
        ("faster_rcnn_resnet101_coco", "faster_rcnn", "faster_rcnn_resnet101_coco_2018_01_28",
         106, 32, "Boxes", 90, None, _keep(600, 1024)),
        ("faster_rcnn_resnet101_lowproposals_coco", "faster_rcnn",
         "faster_rcnn_resnet101_lowproposals_coco_2018_01_28", 82, None, "Boxes", 90, None,
         _keep(600, 1024)),
        ("faster_rcnn_inception_resnet_v2_atrous_coco", "faster_rcnn",
         "faster_rcnn_inception_resnet_v2_atrous_coco_2018_01_28", 620, 37, "Boxes", 90,
         None, _keep(600, 1024)),
        ("faster_rcnn_inception_resnet_v2_atrous_lowproposals_coco", "faster_rcnn",
         "faster_rcnn_inception_resnet_v2_atrous_lowproposals_coco_2018_01_28", 241, None,
         "Boxes", 90, None, _keep(600, 1024)),
        ("faster_rcnn_nas", "faster_rcnn", "faster_rcnn_nas_coco_2018_01_28", 1833, 43,
         "Boxes", 90, 1200, _fixed(1200)),
        ("faster_rcnn_nas_lowproposals_coco", "faster_rcnn",
         "faster_rcnn_nas_lowproposals_coco_2018_01_28", 540, None, "Boxes", 90, 1200,
         _fixed(1200)),
        ("mask_rcnn_inception_resnet_v2_atrous_coco", "mask_rcnn",
         "mask_rcnn_inception_resnet_v2_atrous_coco_2018_01_28", 771, 36, "Masks", 90,
         None, _keep(800, 1365)),
        ("mask_rcnn_inception_v2_coco", "mask_rcnn", "mask_rcnn_inception_v2_coco_2018_01_28",
         79, 25, "Masks", 90, None, _keep(800, 1365)),
        ("mask_rcnn_resnet101_atrous_coco", "mask_rcnn",
         "mask_rcnn_resnet101_atrous_coco_2018_01_28", 470, 33, "Masks", 90, None,
         _keep(800, 1365)),
        ("mask_rcnn_resnet50_atrous_coco", "mask_rcnn",
         "mask_rcnn_resnet50_atrous_coco_2018_01_28", 343, 29, "Masks", 90, None,
         _keep(800, 1365)),
    )),
    _DetectionTable("Mobile models", "Pixel 1 Latency (ms)", "COCO mAP", True, (
        ("ssd_mobiledet_cpu_coco", "ssdlite_mobiledet",
         "ssdlite_mobiledet_cpu_320x320_coco_2020_05_19", 113, 24.0, "Boxes", 90, 320,
         _fixed(320)),
        ("ssd_mobilenet_v2_mnasfpn_coco", "ssd_mobilenet_v2_mnasfpn",
         "ssd_mobilenet_v2_mnasfpn_shared_box_predictor_320x320_coco_sync_2020_05_18", 183,
         26.6, "Boxes", 90, 320, _fixed(320)),
        ("ssd_mobilenet_v3_large_coco", "ssdlite_mobilenet_v3_large",
         "ssd_mobilenet_v3_large_coco_2020_01_14", 119, 22.6, "Boxes", 90, 320, _fixed(320)),
        ("ssd_mobilenet_v3_small_coco", "ssdlite_mobilenet_v3_small",
         "ssd_mobilenet_v3_small_coco_2020_01_14", 43, 15.4, "Boxes", 90, 320, _fixed(320)),
    )),
    _DetectionTable("Pixel4 Edge TPU models", "Pixel 4 Edge TPU Latency (ms)",
                    "COCO mAP (uint8)", True, (
        ("ssd_mobiledet_edgetpu_coco", "ssdlite_mobiledet",
         "ssdlite_mobiledet_edgetpu_320x320_coco_2020_05_19", 6.9, 25.6, "Boxes", 90, 320,
         _fixed(320), (("COCO mAP (fp32/uint8)", "25.9/25.6"),)),
        ("ssd_mobilenet_edgetpu_coco", "ssdlite_mobilenet_edgetpu",
         "https://storage.cloud.google.com/mobilenet_edgetpu/checkpoints/"
         "ssdlite_mobilenet_edgetpu_coco_quant.tar.gz", 6.6, 24.3, "Boxes", 90, 320,
         _fixed(320), (("COCO mAP (fp32/uint8)", "-/24.3"),)),
    )),
    _DetectionTable("Pixel4 DSP models", "Pixel 4 DSP Latency (ms)", "COCO mAP (uint8)", True, (
        ("ssd_mobiledet_dsp_coco", "ssdlite_mobiledet",
         "ssdlite_mobiledet_dsp_320x320_coco_2020_05_19", 12.3, 28.8, "Boxes", 90, 320,
         _fixed(320), (("COCO mAP (fp32/uint8)", "28.9/28.8"),)),
    )),
    _DetectionTable("Kitti-trained models", _TITAN_X, "Pascal mAP@0.5", False, (
        ("faster_rcnn_resnet101_kitti", "faster_rcnn", "faster_rcnn_resnet101_kitti_2018_01_28",
         79, 87, "Boxes", 2, None, _keep(600, 1987)),
    )),
    _DetectionTable("Open Images-trained models", _TITAN_X, "Open Images mAP@0.5", False, (
        ("faster_rcnn_inception_resnet_v2_atrous_oidv2", "faster_rcnn",
         "faster_rcnn_inception_resnet_v2_atrous_oid_2018_01_28", 727, 37, "Boxes", 546,
         None, _keep(600, 1024)),
        ("faster_rcnn_inception_resnet_v2_atrous_lowproposals_oidv2", "faster_rcnn",
         "faster_rcnn_inception_resnet_v2_atrous_lowproposals_oid_2018_01_28", 347, None,
         "Boxes", 546, None, _keep(600, 1024)),
        ("facessd_mobilenet_v2_quantized_open_image_v4", "ssd_mobilenet_v2",
         "facessd_mobilenet_v2_quantized_320x320_open_image_v4", 20, 73, "Boxes", 1, 320,
         _fixed(320), (("Open Images mAP@0.5", "73 (faces)"),)),
    )),
    _DetectionTable("Open Images-trained models (Open Images Challenge metric)", _TITAN_X,
                    "Open Images mAP@0.5 (challenge metric)", False, (
        ("faster_rcnn_inception_resnet_v2_atrous_oidv4", "faster_rcnn",
         "faster_rcnn_inception_resnet_v2_atrous_oid_v4_2018_12_12", 425, 54, "Boxes", 601,
         None, _keep(600, 1024)),
        ("ssd_mobilenetv2_oidv4", "ssd_mobilenet_v2", "ssd_mobilenet_v2_oid_v4_2018_12_12",
         89, 36, "Boxes", 601, 300, _fixed(300)),
        ("ssd_resnet_101_fpn_oidv4", "ssd_resnet101_v1_fpn",
         "ssd_resnet101_v1_fpn_shared_box_predictor_oid_512x512_sync_2019_01_20", 237, 38,
         "Boxes", 601, 512, _fixed(512)),
    )),
    _DetectionTable("iNaturalist Species-trained models", _TITAN_X, "Pascal mAP@0.5", False, (
        ("faster_rcnn_resnet101_fgvc", "faster_rcnn", "faster_rcnn_resnet101_fgvc_2018_07_19",
         395, 58, "Boxes", 2854, None, _keep(600, 1024)),
        ("faster_rcnn_resnet50_fgvc", "faster_rcnn", "faster_rcnn_resnet50_fgvc_2018_07_19",
         366, 55, "Boxes", 2854, None, _keep(600, 1024)),
    )),
    _DetectionTable("AVA v2.1 trained models", _TITAN_X, "Pascal mAP@0.5", False, (
        ("faster_rcnn_resnet101_ava_v2.1", "faster_rcnn",
         "faster_rcnn_resnet101_ava_v2.1_2018_04_30", 93, 11, "Boxes", None, None, None),
    )),
    _DetectionTable("Snapshot Serengeti Camera Trap trained models", None, "COCO mAP@0.5",
                    False, (
        ("faster_rcnn_resnet101_snapshot_serengeti", "faster_rcnn",
         "faster_rcnn_resnet101_snapshot_serengeti_2020_06_10", None, 38, "Boxes", None, None,
         None),
        ("context_rcnn_resnet101_snapshot_serengeti", "context_rcnn",
         "context_rcnn_resnet101_snapshot_serengeti_2020_06_10", None, 56, "Boxes", 48, 640,
         _fixed(640)),
    )),
    # SpaghettiNet: 320x320, the input of the released models (the table lists no size).
    _DetectionTable("Pixel 6 Edge TPU models", "Pixel 6 Edge TPU Speed (ms)",
                    "COCO 2017 mAP (uint8)", True, (
        ("spaghettinet_edgetpu_s", "ssd_spaghettinet",
         "tf1/spaghettinet_edgetpu_s_2021_10_13", 1.3, 26.3, "Boxes", 90, 320, _fixed(320),
         (("Pixel 6 Speed with Post-processing on CPU (ms)", "1.8"),)),
        ("spaghettinet_edgetpu_m", "ssd_spaghettinet",
         "tf1/spaghettinet_edgetpu_m_2021_10_13", 1.4, 27.4, "Boxes", 90, 320, _fixed(320),
         (("Pixel 6 Speed with Post-processing on CPU (ms)", "1.9"),)),
        ("spaghettinet_edgetpu_l", "ssd_spaghettinet",
         "tf1/spaghettinet_edgetpu_l_2021_10_13", 1.7, 28.0, "Boxes", 90, 320, _fixed(320),
         (("Pixel 6 Speed with Post-processing on CPU (ms)", "2.1"),)),
    )),
)

_TWO_STAGE_FAMILIES = ("faster_rcnn", "rfcn", "mask_rcnn", "context_rcnn")
# Feature extractors with hard-swish: MobileNet v3 and MobileDet-CPU (its search space has
# hard-swish; the EdgeTPU, DSP and GPU variants use ReLU6).
_HSWISH_EXTRACTORS = ("ssd_mobilenet_v3_large", "ssd_mobilenet_v3_small", "ssd_mobiledet_cpu")


def _edgetpu(name: str, family: str) -> tuple[bool, str]:
    if family in _TWO_STAGE_FAMILIES:
        return False, _TWO_STAGE_NOTE
    if _feature_extractor(name, family) in _HSWISH_EXTRACTORS:
        return True, _HSWISH_LOWERED_NOTE
    if family.endswith("_fpn"):
        return True, _FPN_NOTE
    if family == "ssd_spaghettinet":
        return True, _PIXEL6_NOTE
    return True, _SSD_NOTE


def _feature_extractor(name: str, family: str) -> str | None:
    """The ``feature_extractor.type`` of a single-shot row's ``pipeline.config``."""
    if family in _TWO_STAGE_FAMILIES:
        return None
    if family == "ssdlite_mobiledet":  # ssd_mobiledet_{cpu,edgetpu,dsp}
        return f"ssd_mobiledet_{name.split('_')[2]}"
    return family.replace("ssdlite_", "ssd_", 1)  # SSDLite: the SSD extractor, depthwise


def _detector(table: _DetectionTable, name: str, family: str, archive: str,
              timing_ms: float | None, published_map: float | None, outputs: str,
              num_classes: int | None, size: int | None, resizer: str | None,
              extra: tuple[tuple[str, str], ...] = ()) -> ModelSpec:
    capable, note = _edgetpu(name, family)
    url = archive if archive.startswith("http") else _OD_URL.format(archive=archive)
    return ModelSpec(
        name=name, task="detect", family=family, url=url, input_size=size,
        depth_multiplier=0.75 if "0.75_depth" in name else None, num_classes=num_classes,
        checkpoint_prefix="model.ckpt",
        preprocess=extractor_preprocess(_feature_extractor(name, family), size)
        if size and family not in _TWO_STAGE_FAMILIES else None,
        source_table=f"{_OD_TABLE} ({table.title})",
        speed_ms=timing_ms, timing=table.timing if timing_ms is not None else None,
        map=published_map, map_metric=table.metric,
        coco_map=published_map if table.coco else None, outputs=outputs, resizer=resizer,
        extra_columns=extra, edgetpu_capable=capable, edgetpu_note=note,
        builder=_feature_extractor(name, family),
    )


def edgetpu_table() -> dict[str, Any]:
    """Return (a copy of) the package data :data:`EDGETPU_TABLE` (see the module docstring).

    Keys: ``builders`` (per task, the builder registry keys), ``refused`` (name -> why a
    registered builder refuses the row), ``models`` (name -> ``builder`` settings and graph
    ``features``), ``graph_features``, ``settings`` and ``tool_version``. Empty sections when
    the file is absent.
    """
    return copy.deepcopy(_table())


@functools.cache
def _table() -> dict[str, Any]:
    empty: dict[str, Any] = {"builders": {}, "refused": {}, "models": {}}
    try:
        text = resources.files("quant").joinpath(EDGETPU_TABLE).read_text()
    except (FileNotFoundError, OSError):
        return empty
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"quant/{EDGETPU_TABLE} is not valid JSON ({exc}); regenerate it "
                            f"with {REGENERATE}") from exc
    return {**empty, **data}


def _buildable(spec: ModelSpec) -> bool:
    table = _table()
    return (spec.builder is not None and spec.builder in table["builders"].get(spec.task, ())
            and spec.name not in table["refused"])


def _register_all() -> None:
    specs = [_classifier("mobilenet_v2", _V2_URL, _V2_TABLE, *row) for row in _V2_ROWS]
    specs += [_classifier("mobilenet_v1", _V1_URL, _V1_TABLE, *row) for row in _V1_ROWS]
    specs += [_detector(table, *row) for table in _DETECTION_TABLES for row in table.rows]
    for spec in specs:
        _register(dataclasses.replace(spec, buildable=_buildable(spec)))


_register_all()
_ORDER = {name: index for index, name in enumerate(_REGISTRY)}


# --- Public API --------------------------------------------------------------------------------
def list_models(pattern: str = "", task: str | None = None) -> list[str]:
    """Return registered model names in table order.

    Args:
        pattern: shell-style wildcard on the name (``"mobilenet_v2_*"``); empty for all.
        task: only models of this task, when given.
    """
    return [name for name, spec in _REGISTRY.items()
            if task in (None, spec.task) and (not pattern or fnmatch.fnmatch(name, pattern))]


def is_model(name: str) -> bool:
    """Return True when ``name`` is a zoo model."""
    return name in _REGISTRY


def suggest(name: str, limit: int = 3) -> list[str]:
    """Return up to ``limit`` zoo names closest to ``name`` (difflib ratio >= 0.6)."""
    return difflib.get_close_matches(name, list(_REGISTRY), n=limit, cutoff=0.6)


def get_model(name: str) -> ModelSpec:
    """Return the (frozen) spec of ``name``.

    Raises:
        BadInputError: unknown name; the one-line message suggests the closest names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        close = suggest(name)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise BadInputError(f"unknown model {name!r}{hint} (see quantize --list)") from None


def edgetpu_features(name: str):
    """Return the stored :class:`edgetpu.cost.GraphFeatures` of a buildable row, or None.

    None for rows that are not buildable or not in the table yet (see :data:`REGENERATE`).

    Raises:
        BadInputError: the stored features do not match the cost model's (regenerate).
    """
    spec = get_model(name)
    entry = _table()["models"].get(name)
    if not spec.buildable or entry is None:
        return None
    from edgetpu.cost import GraphFeatures

    try:
        return GraphFeatures.from_dict(entry["features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"quant/{EDGETPU_TABLE}: the features of {name} do not fit "
                            f"edgetpu.cost.GraphFeatures ({exc!r}); regenerate the table "
                            f"with {REGENERATE} --force") from exc


def edgetpu_cpu_ops(name: str) -> dict[str, int] | None:
    """Return the ops the offline Edge TPU analyzer leaves on the CPU in a buildable row's
    int8 model (our PTQ, random weights; op name -> count), as stored by
    :data:`REGENERATE`; None when the row is not buildable or has no stored verdict."""
    entry = _table()["models"].get(name)
    if not get_model(name).buildable or entry is None or "edgetpu" not in entry:
        return None
    return dict(entry["edgetpu"]["cpu_ops"])


def edgetpu_latency_ms(name: str) -> dict[str, float] | None:
    """Return the estimated Coral Edge TPU milliseconds per inference of a zoo row by device
    (``usb3``, ``usb2``, ``pcie``, ``devboard``), computed now from its stored graph features
    by :func:`edgetpu.cost.latency_ms`; None when the row is not buildable (or not in the
    table yet). An estimate from the graph, not a measurement.
    """
    features = edgetpu_features(name)
    if features is None:
        return None
    from edgetpu.cost import latency_ms

    return latency_ms(features)


def _estimate(spec: ModelSpec, device: str | None) -> float | None:
    latency = edgetpu_latency_ms(spec.name)
    return None if latency is None else latency.get(device or DEFAULT_DEVICE)


def _sort_value(spec: ModelSpec, key: str, device: str | None = None) -> tuple[bool, Any]:
    if key == "table":
        return (False, _ORDER.get(spec.name, len(_ORDER)))
    if key == "coral":
        value = _estimate(spec, device)
        return (True, 0) if value is None else (False, value)
    value = {"name": spec.name, "macs": spec.macs_m, "params": spec.params_m,
             "latency": spec.published_latency_ms, "top1": spec.top1, "map": spec.map,
             "input_size": spec.input_size}[key]
    if value is None:
        return (True, 0)
    return (False, -value if key in _DESCENDING else value)


@dataclasses.dataclass(frozen=True)
class Constraints:
    """Filters for :func:`select_models`; None (or False) means no constraint.

    ``max_latency_ms`` compares with each table's own timing column (``ModelSpec.timing``
    names its device) unless ``device`` is given: then with the estimated Coral Edge TPU
    latency on that device (:func:`edgetpu_latency_ms`). ``device`` alone filters nothing; it
    also picks the device of the ``coral`` sort key and of :func:`recommend`. A model lacking
    the figure a constraint needs fails it.
    """

    task: str | None = None
    max_macs: float | None = None
    max_params: float | None = None
    max_latency_ms: float | None = None
    min_top1: float | None = None
    min_map: float | None = None
    input_size: int | None = None
    edgetpu_only: bool = False
    buildable_only: bool = False
    device: str | None = None

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise BadInputError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.device is not None and self.device not in DEVICES:
            raise BadInputError(f"unknown Edge TPU device {self.device!r}; expected one of "
                                f"{DEVICES}")

    def given(self) -> dict[str, Any]:
        """Return the constraints that are set, by name."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None and v is not False}

    def checks(self) -> dict[str, Callable[[ModelSpec], bool]]:
        """Return one predicate per constraint that is set, by constraint name."""

        def at_most(value: float | None, limit: float) -> bool:
            return value is not None and value <= limit

        def at_least(value: float | None, limit: float) -> bool:
            return value is not None and value >= limit

        def latency(spec: ModelSpec) -> float | None:
            return (spec.published_latency_ms if self.device is None
                    else _estimate(spec, self.device))

        predicates: dict[str, Callable[[ModelSpec], bool]] = {
            "task": lambda s: s.task == self.task,
            "max_macs": lambda s: at_most(s.macs_m, self.max_macs),
            "max_params": lambda s: at_most(s.params_m, self.max_params),
            "max_latency_ms": lambda s: at_most(latency(s), self.max_latency_ms),
            "min_top1": lambda s: at_least(s.top1, self.min_top1),
            "min_map": lambda s: at_least(s.map, self.min_map),
            "input_size": lambda s: s.input_size == self.input_size,
            "edgetpu_only": lambda s: s.edgetpu_capable,
            "buildable_only": lambda s: s.buildable,
        }
        return {name: predicates[name] for name in self.given() if name in predicates}


def select_models(constraints: Constraints | None = None, sort: str = "table",
                  models: Iterable[ModelSpec] | None = None) -> list[ModelSpec]:
    """Return the models meeting every constraint, sorted by ``sort``.

    Args:
        constraints: the filters; None for all models.
        sort: one of :data:`SORT_KEYS` (``table``: published order; size-like keys ascend,
            ``top1`` / ``map`` descend; ``coral``: the estimate on ``constraints.device``,
            default usb3; models lacking the value last, ties by name).
        models: the specs to filter; default the whole zoo.

    Raises:
        BadInputError: unknown sort key.
    """
    if sort not in SORT_KEYS:
        raise BadInputError(f"unknown sort key {sort!r}; expected one of {SORT_KEYS}")
    constraints = constraints or Constraints()
    checks = constraints.checks().values()
    pool = _REGISTRY.values() if models is None else models
    chosen = [spec for spec in pool if all(check(spec) for check in checks)]
    return sorted(chosen, key=lambda spec: (_sort_value(spec, sort, constraints.device),
                                            spec.name))


RANKINGS = ("latency", "size")


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """The outcome of :func:`recommend`.

    Attributes:
        spec: the chosen model, or None when nothing meets the constraints.
        candidates: how many buildable models meet every constraint.
        limiting: the constraint that alone leaves the fewest buildable models (None if none
            given).
        limiting_count: how many buildable models that constraint alone leaves.
        ranked_by: what "best" meant for the candidates.
        device: the Edge TPU device of the latency ranking (None when ranked by size).
    """

    spec: ModelSpec | None
    candidates: int
    limiting: str | None
    limiting_count: int
    ranked_by: str
    device: str | None = None


def _size_key(spec: ModelSpec) -> tuple:
    return (_sort_value(spec, "macs"), _sort_value(spec, "params"),
            _sort_value(spec, "latency"), _sort_value(spec, "top1"), _sort_value(spec, "map"),
            spec.name)


def recommend(constraints: Constraints | None = None, rank: str = "latency") -> Recommendation:
    """Pick the model to try first among the buildable ones meeting ``constraints``.

    The TFLite model guide says to narrow the choice by the most limiting constraint first,
    then prefer the smallest model that still meets the rest. All constraints are applied,
    only rows this tool can build (``ModelSpec.buildable``) are candidates, and the most
    limiting constraint (the one that alone leaves the fewest buildable models) is reported.

    Args:
        constraints: the filters.
        rank: ``latency`` (default): the lowest estimated Coral Edge TPU latency on
            ``constraints.device`` (default usb3), ties going to the smaller, more accurate
            model; ``size``: fewest published MACs, then parameters, then the lowest published
            timing (detectors publish no MACs or parameters, so they rank by timing, which
            the tables measure on different devices), ties going to the more accurate.

    Raises:
        BadInputError: unknown ``rank``.
    """
    if rank not in RANKINGS:
        raise BadInputError(f"unknown ranking {rank!r}; expected one of {RANKINGS}")
    constraints = constraints or Constraints()
    pool = [spec for spec in _REGISTRY.values() if spec.buildable]
    survivors = {name: sum(check(s) for s in pool)
                 for name, check in constraints.checks().items()}
    limiting = min(survivors, key=survivors.get) if survivors else None
    candidates = select_models(constraints, models=pool)
    device = None
    if rank == "latency":
        device = constraints.device or DEFAULT_DEVICE
        spec = min(candidates, key=lambda s: (_sort_value(s, "coral", device), _size_key(s)),
                   default=None)
        ranked_by = f"lowest estimated Coral {DEVICE_LABELS[device]} latency"
    else:
        spec = min(candidates, key=_size_key, default=None)
        if spec is not None and spec.macs_m is not None:
            ranked_by = "fewest MACs, then parameters"
        else:
            ranked_by = "lowest published timing (no MACs or parameters published)"
    return Recommendation(spec, len(candidates), limiting, survivors.get(limiting, len(pool)),
                          ranked_by, device)
