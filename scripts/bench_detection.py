"""Detection benchmark: COCO mAP of the shared int8 SSD, of our float load and our int8 PTQ.

Over the annotated ``coco_mini/val2017`` images (pycocotools), with one post-processing for
every model (``TFLite_Detection_PostProcess``, 100 detections, NMS IoU 0.6):

- ``coco_mini_map`` / ``coco_mini_map50``: the shared quantization-aware int8 model;
- ``float_map``: the float OD API archive loaded by our loader and builder, run in float;
- ``ours_int8_map``: our post-training int8 of that float model (stock converter, min/max),
  calibrated on the unannotated ``val2017`` images; ``map_drop = float_map - ours_int8_map``;
  variants: ``_exact_anchors`` (float anchors behind a DEQUANTIZE instead of uint8 anchors)
  and ``relu6`` (ReLU6 output ranges set to [0, 6] before quantizing);
- ``anchor_max_abs_diff``: our anchors against the shared model's ``anchors`` tensor;
- per builder: parameter count; ``mapped_share`` (ops the Edge TPU would map after our
  quantization) stays null until the offline analyzer (``edgetpu-check``) exists.

Prints a table and writes JSON::

    python scripts/bench_detection.py --json out/bench_detection.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from quant.detection_sources import load_ssd_checkpoint
from quant.paths import shared_data_dir
from quant.pipeline_config import FeatureExtractorConfig, SsdConfig
from quant.postprocess import DetectionHead, append_postprocess, replace_postprocess_settings
from quant.preprocess import inception_preprocess
from quant.validate.data import decode_images, image_sizes, list_images
from quant.validate.detection import coco_images, coco_map, load_coco, to_coco_results
from quant.validate.reference import converted_tflite
from quant.validate.runners import TfliteRunner

MAX_DETECTIONS = 100
NMS_IOU = 0.6
# (name, feature extractor type, SSDLite, input size) of the builders without real weights.
BUILDERS = (
    ("ssd_mobilenet_v2", "ssd_mobilenet_v2", False, 300),
    ("ssdlite_mobilenet_v2", "ssd_mobilenet_v2", True, 300),
    ("ssdlite_mobilenet_v3_large", "ssd_mobilenet_v3_large", True, 320),
    ("ssdlite_mobilenet_v3_small", "ssd_mobilenet_v3_small", True, 320),
    ("ssdlite_mobilenet_edgetpu", "ssd_mobilenet_edgetpu", True, 320),
)


def main() -> None:
    """Run the benchmark."""
    data = shared_data_dir()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=data / "models" /
                        "ssd_mobilenet_v1_0.75_depth_300x300_coco_float.tar.gz")
    parser.add_argument("--int8-model", type=Path, default=data / "models" /
                        "ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite")
    parser.add_argument("--coco", type=Path, default=data / "coco_mini")
    parser.add_argument("--out", type=Path, default=Path("out/bench_detection"))
    parser.add_argument("--skip-builders", action="store_true",
                        help="skip the per-builder parameter counts")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    images = coco_images(args.coco / "val2017", args.coco / "annotations/instances_val2017.json")
    calibration = [p for p in list_images(args.coco / "val2017").paths
                   if p not in set(images.paths)]
    preprocess = inception_preprocess(300)
    pixels = decode_images(images.paths, preprocess)
    sizes = image_sizes(images.paths)
    ground_truth = load_coco(images.annotations)

    def score(path: Path) -> dict[str, float]:
        detections = TfliteRunner(path, preprocess).detect(pixels, sizes)
        return coco_map(ground_truth, to_coco_results(images.ids, detections), images.ids)

    shared = args.out / "shared_int8_100det.tflite"
    shared.write_bytes(replace_postprocess_settings(
        args.int8_model.read_bytes(), max_detections=MAX_DETECTIONS, nms_iou_threshold=NMS_IOU))
    shared_map = score(shared)

    loaded = load_ssd_checkpoint(args.archive)
    head = _head(loaded.head)
    float_path = converted_tflite(loaded.model, head)
    float_map = score(float_path)

    calib_pixels = decode_images(calibration, preprocess)
    calib_inputs = preprocess.normalize(calib_pixels)
    variants = {}
    for ranges, int8_bytes in (("stock", quantize(loaded.model, calib_inputs)),
                               ("relu6", quantize_relu6_ranges(loaded.model, calib_inputs))):
        for exact in (False, True):
            ours = args.out / f"ssd_mobilenet_v1_0.75_depth_int8_{ranges}_{int(exact)}.tflite"
            ours.write_bytes(append_postprocess(int8_bytes, head, exact_anchors=exact))
            variants[ranges, exact] = score(ours)
    ours_map = variants["stock", False]
    best = variants["relu6", True]

    oracle = _oracle_anchors(args.int8_model)
    anchors = head.anchors
    builders = {} if args.skip_builders else _builders(loaded.config)

    result = {
        "images": len(images.ids),
        "calibration_images": len(calibration),
        "post_processing": {"max_detections": MAX_DETECTIONS, "nms_iou_threshold": NMS_IOU},
        "coco_mini_map": round(shared_map["map"], 4),
        "coco_mini_map50": round(shared_map["map50"], 4),
        "float_map": round(float_map["map"], 4),
        "float_map50": round(float_map["map50"], 4),
        "ours_int8_map": round(ours_map["map"], 4),
        "ours_int8_map50": round(ours_map["map50"], 4),
        "map_drop": round(float_map["map"] - ours_map["map"], 4),
        "quantizer": "TFLiteConverter full integer, per-channel, uint8 in/out, min/max "
                     "calibration (the project's PTQ engine quant.ptq was not available)",
        "ours_int8_map_exact_anchors": round(variants["stock", True]["map"], 4),
        "ours_int8_relu6_map": round(variants["relu6", False]["map"], 4),
        "ours_int8_relu6_map_exact_anchors": round(best["map"], 4),
        "ours_int8_relu6_map50_exact_anchors": round(best["map50"], 4),
        "map_drop_relu6_exact_anchors": round(float_map["map"] - best["map"], 4),
        "anchor_max_abs_diff": float(np.abs(anchors - oracle[0]).max()),
        "anchor_oracle_half_step": oracle[1] / 2,
        "builders": builders,
        "seconds": round(time.perf_counter() - start, 1),
    }
    _print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def _converter(model, calibration: np.ndarray):
    from quant._tensorflow import tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter


def quantize(model, calibration: np.ndarray) -> bytes:
    """Return the stock converter's full-integer model (per-channel, uint8 in/out)."""
    return _converter(model, calibration).convert()


def quantize_relu6_ranges(model, calibration: np.ndarray) -> bytes:
    """Return the full-integer model with every ReLU6 output range set to [0, 6].

    Two-step conversion (DESIGN.md): calibrate only, replace the calibrated min/max of the
    ReLU6 outputs by the activation's true range, then quantize. An experiment for the PTQ
    engine: min/max calibration on 80 images clips ReLU6 outputs that other images reach.
    """
    from tensorflow.lite.python import convert
    from tensorflow.lite.tools import flatbuffer_utils

    from quant._tensorflow import tf

    converter = _converter(model, calibration)
    converter._experimental_calibrate_only = True
    calibrated = flatbuffer_utils.read_model_from_bytearray(bytearray(converter.convert()))
    for tensor in calibrated.subgraphs[0].tensors:
        stats = tensor.quantization
        if (stats is not None and stats.min is not None and len(stats.min)
                and tensor.name.decode().split(";")[0].endswith("/Relu6")):
            stats.min, stats.max = np.zeros(1, np.float32), np.full(1, 6.0, np.float32)
    return convert.mlir_quantize(
        bytes(flatbuffer_utils.convert_object_to_bytearray(calibrated)), fully_quantize=True,
        input_data_type=tf.uint8, output_data_type=tf.uint8)


def _head(head: DetectionHead) -> DetectionHead:
    settings = dataclasses.replace(head.settings, max_detections=MAX_DETECTIONS,
                                   nms_iou_threshold=NMS_IOU)
    return DetectionHead(settings, head.anchors)


def _oracle_anchors(path: Path) -> tuple[np.ndarray, float]:
    from edgetpu.runtime import make_interpreter

    interpreter = make_interpreter(path)
    interpreter.allocate_tensors()
    (details,) = [d for d in interpreter.get_tensor_details() if d["name"] == "anchors"]
    scale, zero_point = details["quantization"]
    values = interpreter.get_tensor(details["index"]).astype(np.float32)
    return (values - zero_point) * np.float32(scale), float(scale)


def _builders(v1_config: SsdConfig) -> dict[str, dict]:
    """Return the parameter count of every builder (random weights, 90 classes)."""
    from quant.models.ssd import build_ssd

    variants = {"ssd_mobilenet_v1_0.75_depth": v1_config}
    for name, kind, lite, size in BUILDERS:
        variants[name] = dataclasses.replace(
            v1_config, image_size=(size, size),
            feature_extractor=FeatureExtractorConfig(kind, 1.0, 16, use_depthwise=lite),
            box_predictor=dataclasses.replace(v1_config.box_predictor,
                                              kernel_size=3 if lite else 1,
                                              use_depthwise=lite))
    return {
        name: {"params": int(build_ssd(config, name=name).count_params()),
               "input_size": config.image_size[0],
               # The offline Edge TPU analyzer (edgetpu-check) is not in this checkout yet.
               "mapped_share": None}
        for name, config in variants.items()
    }


def _print_table(result: dict) -> None:
    rows = [(k, v) for k, v in result.items() if not isinstance(v, dict)]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for name, row in result["builders"].items():
        print(f"{name:<{width}}  params {row['params']:,}  mapped {row['mapped_share']}")


if __name__ == "__main__":
    main()
