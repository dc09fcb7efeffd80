"""Regenerate ``quant/zoo_edgetpu.json``: the graph features of every buildable zoo row.

A zoo row is buildable when the builder ``quantize --model NAME`` dispatches on is
registered (:func:`quant.models.list_classifier_families`, the feature extractor types of
:func:`quant.detection.ssd.build_ssd`) and accepts the row's settings. Each such row is built
here with random weights (latency depends on the graph, not on the weights), quantized by
the project's PTQ with its fast settings (nearest rounding, min/max ranges, two random
calibration images), analysed offline (:func:`edgetpu.analyze.analyze_model`) and reduced
to :class:`edgetpu.cost.GraphFeatures`. The file stores features, not milliseconds:
``quant.zoo.edgetpu_latency_ms`` turns them into per-device latencies with
:func:`edgetpu.cost.latency_ms` when read, so refitting the cost model needs no rerun.

Detectors are built from the network section of the row's Object Detection API sample
config (``research/object_detection/samples/configs``), parsed by the same
``pipeline.config`` reader ``quantize`` uses; a row whose settings the builder refuses is
recorded under ``refused`` with the builder's message.

The run is restartable: rows already in the file are skipped unless ``--force`` (or unless
their stored features lack or exceed the fields of ``GraphFeatures``: a changed cost model
rebuilds them), and the file is rewritten atomically after each row. Measured on 2 busy
cores: 13 s (MobileNet v1 0.25/128) to 47 s (SSDLite MobileNet v3 large) per row, about
23 minutes for the whole table.

Examples::

    python scripts/zoo_latency.py                       # the rows not in the file yet
    python scripts/zoo_latency.py --only mobilenet_v1_0.25_128 --force
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edgeq.errors import BadInputError
from quant import zoo

TABLE = Path(zoo.__file__).with_name(zoo.EDGETPU_TABLE)
FORMAT = 1
SEED = 0
CALIBRATION_IMAGES = 2
#: The fast PTQ settings (quant.ptq.QuantizeOptions fields); latency depends on the graph only.
QUANTIZE_SETTINGS = {"require_edgetpu": False, "rounding": "nearest", "bias_correction": "off",
                     "ranges": "minmax", "range_images": 2, "stats_images": 2}

# --- Detector configs: the network fields of the OD API sample configs ---------------------
_HYPERPARAMS = "conv_hyperparams { activation: RELU_6 batch_norm { epsilon: 0.001 } }"
_SSD_ANCHORS = """ssd_anchor_generator {
        num_layers: %(num_layers)d min_scale: %(min_scale)s max_scale: 0.95
        aspect_ratios: [1.0, 2.0, 0.5, 3.0, 0.3333]%(anchor_extra)s
      }"""
_CONVOLUTIONAL = """convolutional_box_predictor {
        min_depth: 0 max_depth: 0 num_layers_before_predictor: 0
        kernel_size: %(kernel)d use_depthwise: %(depthwise)s box_code_size: 4
        """ + _HYPERPARAMS + """
      }"""
_MODEL = """model {
  ssd {
    num_classes: %(num_classes)d
    box_coder { faster_rcnn_box_coder { y_scale: 10.0 x_scale: 10.0 height_scale: 5.0
                                        width_scale: 5.0 } }
    anchor_generator { %(anchors)s }
    image_resizer { fixed_shape_resizer { height: %(size)d width: %(size)d } }
    box_predictor { %(predictor)s }
    feature_extractor {
      type: '%(type)s' min_depth: 16 depth_multiplier: %(multiplier)s
      use_depthwise: %(extractor_depthwise)s%(extractor_extra)s
      """ + _HYPERPARAMS + """
    }
    post_processing {
      batch_non_max_suppression { score_threshold: 1e-8 iou_threshold: %(iou)s
                                  max_detections_per_class: 100 max_total_detections: 100 }
      score_converter: SIGMOID
    }
  }
}
"""
# Per zoo family: the fields of its sample configs (ssd_mobilenet_v1_coco,
# ssd_mobilenet_v1{,_0.75_depth}_quantized_300x300_coco14_sync,
# ssd_mobilenet_v2_quantized_300x300_coco, ssd_mobilenet_v2_oid_v4, ssdlite_mobilenet_v2_coco,
# ssdlite_mobilenet_v3_{large,small}_320x320_coco, ssdlite_mobilenet_edgetpu_320x320_coco,
# ssdlite_mobiledet_{cpu,dsp,edgetpu}_320x320_coco_sync_4x4,
# ssd_mobilenet_v1_{ppn,fpn}_shared_box_predictor_*_coco14_sync, ssd_inception_v2_coco).
_SSD = {"anchors": _SSD_ANCHORS, "num_layers": 6, "min_scale": 0.2, "anchor_extra": "",
        "predictor": _CONVOLUTIONAL, "kernel": 1, "depthwise": "false",
        "extractor_depthwise": "false", "extractor_extra": "", "iou": 0.6}
_SSDLITE = {**_SSD, "kernel": 3, "depthwise": "true", "extractor_depthwise": "true"}
_OVERRIDE = "\n      override_base_feature_extractor_hyperparams: true"
_FPN_ANCHORS = """multiscale_anchor_generator {
        min_level: %(min_level)d max_level: 7 anchor_scale: 4.0 aspect_ratios: [1.0, 2.0, 0.5]
        scales_per_octave: 2
      }"""
_FPN_PREDICTOR = """weight_shared_convolutional_box_predictor {
        depth: 256 num_layers_before_predictor: %(tower)d kernel_size: 3
        """ + _HYPERPARAMS + """
      }"""
# ssd_resnet50_v1_fpn_shared_box_predictor_640x640_coco14_sync.config; the OID v4 row
# (ssd_resnet101_v1_fpn_shared_box_predictor_oid_512x512_sync) differs in _ROW_FIELDS.
_RESNET_FPN = {**_SSD, "anchors": _FPN_ANCHORS, "min_level": 3, "predictor": _FPN_PREDICTOR,
               "tower": 4, "extractor_extra": _OVERRIDE}
_FAMILY_FIELDS: dict[str, dict[str, Any]] = {
    "ssd_mobilenet_v1": _SSD,
    "ssd_mobilenet_v2": _SSD,
    "ssdlite_mobilenet_v2": _SSDLITE,
    "ssdlite_mobilenet_v3_large": _SSDLITE,
    "ssdlite_mobilenet_v3_small": _SSDLITE,
    "ssdlite_mobilenet_edgetpu": _SSDLITE,
    "ssdlite_mobiledet": _SSDLITE,
    "ssd_mobilenet_v1_ppn": {
        **_SSD, "min_scale": 0.15, "anchor_extra": "\n        reduce_boxes_in_lowest_layer: false",
        "predictor": """weight_shared_convolutional_box_predictor {
        depth: 512 num_layers_before_predictor: 1 kernel_size: 1 share_prediction_tower: true
        """ + _HYPERPARAMS + """
      }"""},
    "ssd_mobilenet_v1_fpn": {
        **_SSD, "anchors": _FPN_ANCHORS, "min_level": 3, "predictor": _FPN_PREDICTOR,
        "tower": 4, "extractor_extra": "\n      fpn { min_level: 3 max_level: 7 }"},
    "ssd_resnet50_v1_fpn": _RESNET_FPN,
    "ssd_resnet101_v1_fpn": _RESNET_FPN,
    "ssd_inception_v2": {**_SSD, "kernel": 3, "extractor_extra": _OVERRIDE},
    # ssd_mobilenet_v2_mnasfpn_shared_box_predictor_320x320_coco_sync.config
    "ssd_mobilenet_v2_mnasfpn": {
        **_SSD, "anchors": """multiscale_anchor_generator {
        min_level: 3 max_level: 6 anchor_scale: 3.0 aspect_ratios: [1.0, 2.0, 0.5]
        scales_per_octave: 3
      }""",
        "predictor": """weight_shared_convolutional_box_predictor {
        depth: 64 num_layers_before_predictor: 4 share_prediction_tower: true
        use_depthwise: true kernel_size: 3
        """ + _HYPERPARAMS + """
      }""",
        "extractor_extra": "\n      fpn { min_level: 3 max_level: 6 additional_layer_depth: 48 }"
                           + _OVERRIDE},
    # SpaghettiNet (no sample config is published; the archives' layout): five feature
    # maps, SSDLite box predictors; the arch name comes from the row (_ROW_FIELDS).
    "ssd_spaghettinet": {**_SSDLITE, "num_layers": 5, "extractor_depthwise": "false"},
}
# Rows whose sample config differs from their family's in the network fields:
# ssd_mobilenet_v2_coco.config (depthwise extra layers, full 3x3 box predictors),
# facessd_mobilenet_v2_quantized_320x320_open_image_v4.config and the OID v4 ResNet-101 FPN.
_ROW_FIELDS: dict[str, dict[str, Any]] = {
    "ssd_mobilenet_v2_coco": {"kernel": 3, "extractor_depthwise": "true"},
    "facessd_mobilenet_v2_quantized_open_image_v4": {
        "kernel": 3, "iou": 0.5,
        "anchor_extra": "".join(f"\n        height_stride: {s} width_stride: {s}"
                                for s in (16, 32, 64, 128, 256, 512)),
        "extractor_extra": "\n      pad_to_multiple: 32 use_explicit_padding: true"},
    **{f"spaghettinet_edgetpu_{size}": {
        "extractor_extra": f"\n      spaghettinet_arch_name: 'spaghettinet_edgetpu_{size}'"}
       for size in "sml"},
    "ssd_resnet_101_fpn_oidv4": {
        "min_level": 2, "tower": 2,
        "extractor_extra": "\n      fpn { min_level: 2 max_level: 7 }" + _OVERRIDE},
}


def registries() -> dict[str, list[str]]:
    """The builder registry keys ``quantize --model`` dispatches on, per task."""
    from quant.detection.ssd import list_feature_extractors
    from quant.models import list_classifier_families

    return {"classify": list_classifier_families(), "detect": list_feature_extractors()}


def candidates(builders: dict[str, list[str]] | None = None) -> list[zoo.ModelSpec]:
    """The zoo rows whose builder is registered (a builder may still refuse a row's settings)."""
    builders = builders or registries()
    return [spec for spec in map(zoo.get_model, zoo.list_models())
            if spec.builder in builders.get(spec.task, ())]


def pipeline_text(spec: zoo.ModelSpec) -> str:
    """The ``pipeline.config`` network section of a single-shot zoo row."""
    fields = {**_FAMILY_FIELDS[spec.family], **_ROW_FIELDS.get(spec.name, {})}
    text = _MODEL % {**fields, "anchors": fields["anchors"] % fields,
                     "predictor": fields["predictor"] % fields, "type": spec.builder,
                     "size": spec.input_size, "num_classes": spec.num_classes,
                     "multiplier": spec.depth_multiplier or 1.0}
    return f"# {spec.name}: network fields of its Object Detection API sample config\n{text}"


def float_model(spec: zoo.ModelSpec):
    """Build the float model of a zoo row with random weights, as ``quantize`` builds it.

    Returns:
        ``(FloatModel, builder settings)``.

    Raises:
        BadInputError: the builder refuses the row (its message says why).
    """
    from edgeq._tensorflow import keras
    from quant.float_model import FloatModel

    keras.utils.set_random_seed(SEED)
    if spec.task == "classify":
        from quant.models import build_classifier

        model = build_classifier(spec.builder, spec.input_size, spec.depth_multiplier,
                                 spec.num_classes)
        settings = {"builder": "quant.models.build_classifier", "family": spec.builder,
                    "input_size": spec.input_size, "depth_multiplier": spec.depth_multiplier,
                    "num_classes": spec.num_classes}
        return FloatModel(model=model, preprocess=spec.preprocess, name=spec.name,
                          task="classify", source="random weights", spec=spec), settings
    from edgeq.textproto import parse_text_proto
    from quant.detection.pipeline_config import ssd_config_from_message
    from quant.detection.sources import random_ssd

    config = ssd_config_from_message(parse_text_proto(pipeline_text(spec), spec.name),
                                     f"{spec.name} sample config")
    settings = {"builder": "quant.detection.ssd.build_ssd",
                "pipeline": json.loads(json.dumps(dataclasses.asdict(config)))}
    return random_ssd(config, spec.name, spec.preprocess, spec), settings


def measure(spec: zoo.ModelSpec, keep: Path | None = None) -> dict[str, Any]:
    """Build, quantize and analyse one zoo row; return its table entry.

    Args:
        spec: a buildable zoo row.
        keep: folder to keep the int8 ``.tflite`` in (default: a temporary file).

    Returns:
        ``{"builder": settings, "features": GraphFeatures.to_dict(), "edgetpu": the
        analyzer's op count, mapped count and CPU ops, "graph": params, MACs (and anchors),
        "seconds": s}``.

    Raises:
        BadInputError: the builder refuses the row, or the PTQ fails on it.
    """
    from edgetpu.analyze import analyze_model
    from edgetpu.cost import graph_features
    from edgetpu.tflite_model import read_model

    start = time.perf_counter()
    model, settings = float_model(spec)
    try:
        tflite = quantize_random(model, spec.input_size)
    except BadInputError as exc:
        raise BadInputError(f"quantization failed: {exc}") from exc
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(keep or scratch) / f"{spec.name}_int8_random.tflite"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tflite)
        analysis = analyze_model(path)
        features = graph_features(read_model(path), [op.mapped for op in analysis.ops])
    verdict = {key: analysis.summary[key] for key in ("ops", "mapped", "cpu_ops")}
    return {"builder": settings, "features": features.to_dict(), "edgetpu": verdict,
            "graph": _graph(model), "seconds": round(time.perf_counter() - start, 1)}


def _graph(model: Any) -> dict[str, int]:
    """Parameters (BatchNorm statistics included), MACs and, for detectors, anchors."""
    from quant.models.stats import count_macs

    graph = {"params": int(model.model.count_params()), "macs": int(count_macs(model.model))}
    if model.postprocess is not None:
        graph["anchors"] = len(model.postprocess.anchors)
    return graph


def quantize_random(model: Any, size: int) -> bytes:
    """Our PTQ with the fast settings (:data:`QUANTIZE_SETTINGS`) on random uint8 images.

    The weights are random too: what latency and Edge TPU mapping need is the graph.
    """
    from quant.calibration import CalibrationSet
    from quant.ptq import quantize_model

    pixels = np.random.default_rng(SEED).integers(0, 256, (CALIBRATION_IMAGES, size, size, 3),
                                                  dtype=np.uint8)
    return quantize_model(model, CalibrationSet(pixels, (), "random", "-"), _options()).tflite


def _header(builders: dict[str, list[str]]) -> dict[str, Any]:
    import quant
    from edgeq._tensorflow import tf
    from edgetpu.compiler_versions import CURRENT

    return {
        "format": FORMAT,
        "about": "Graph features (edgetpu.cost.GraphFeatures) of every buildable zoo row, "
                 "built with random weights; latencies are computed from them when read "
                 "(quant.zoo.edgetpu_latency_ms). Generated by scripts/zoo_latency.py; do "
                 "not edit.",
        "tool_version": quant.__version__,
        "tensorflow": tf.__version__,
        "settings": {
            "weights": f"random (keras.utils.set_random_seed({SEED}))",
            "calibration": f"{CALIBRATION_IMAGES} random uint8 images "
                           f"(numpy default_rng({SEED})) at the row's input size",
            "quantize": dataclasses.asdict(_options()),
            "analyzer": f"edgetpu.analyze.analyze_model defaults (edgetpu_compiler "
                        f"{CURRENT.version})",
        },
        "builders": builders,
        "graph_features": _feature_fields(),
    }


def _feature_fields() -> list[str]:
    from edgetpu.cost import GraphFeatures

    return list(GraphFeatures.__dataclass_fields__)


def _options():
    from quant.ptq import QuantizeOptions

    return QuantizeOptions(**QUANTIZE_SETTINGS)


def load(path: Path = TABLE) -> dict[str, Any]:
    """Return the table at ``path`` (empty sections when absent)."""
    data: dict[str, Any] = {"refused": {}, "models": {}}
    if path.is_file():
        data.update(json.loads(path.read_text()))
    return data


def save(data: dict[str, Any], path: Path = TABLE) -> None:
    """Write ``data`` atomically (temporary file in the same folder, then rename)."""
    order = {name: index for index, name in enumerate(zoo.list_models())}
    for key in ("refused", "models"):
        data[key] = dict(sorted(data[key].items(), key=lambda item: order.get(item[0], 1e9)))
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1)
            handle.write("\n")
        os.chmod(tmp, 0o644)  # package data: readable by all, like the other files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """Build the missing rows (or ``--only`` / ``--force`` ones) and update the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these zoo rows")
    parser.add_argument("--force", action="store_true", help="rebuild rows already stored")
    parser.add_argument("--table", type=Path, default=TABLE, help=f"output (default {TABLE})")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the int8 .tflite files")
    args = parser.parse_args(argv)

    builders = registries()
    rows = candidates(builders)
    if args.only:
        unknown = [name for name in args.only if not zoo.is_model(name)]
        if unknown:
            raise SystemExit(f"unknown zoo rows: {', '.join(unknown)}")
        rows = [spec for spec in rows if spec.name in args.only]
        skipped = sorted(set(args.only) - {spec.name for spec in rows})
        if skipped:
            print(f"no registered builder for {', '.join(skipped)}", file=sys.stderr)
    data = load(args.table)
    data.update(_header(builders))
    names = {spec.name for spec in candidates(builders)}
    for key in ("models", "refused"):  # rows whose builder is no longer registered
        data[key] = {name: value for name, value in data[key].items() if name in names}
    fields = set(_feature_fields())
    todo = [spec for spec in rows if args.force or spec.name not in data["refused"] and (
        set(data["models"].get(spec.name, {}).get("features", ())) != fields)]
    save(data, args.table)
    start = time.perf_counter()
    with tqdm(todo, desc="zoo latency", unit="model") as bar:
        for spec in bar:
            bar.set_postfix_str(spec.name)
            try:
                entry = measure(spec, args.keep)
            except BadInputError as exc:
                data["models"].pop(spec.name, None)
                data["refused"][spec.name] = str(exc)
                tqdm.write(f"{spec.name}: refused by its builder: {exc}")
            else:
                data["refused"].pop(spec.name, None)
                data["models"][spec.name] = entry
                tqdm.write(f"{spec.name}: {entry['features']['dense_macs'] / 1e6:.0f} M dense "
                           f"+ {entry['features']['depthwise_macs'] / 1e6:.0f} M depthwise "
                           f"MACs, {entry['features']['edgetpu_ops']} Edge TPU ops, "
                           f"{entry['seconds']} s")
            save(data, args.table)
    print(f"{len(todo)} rows in {time.perf_counter() - start:.0f} s; {len(data['models'])} "
          f"rows stored, {len(data['refused'])} refused, in {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
