"""Detection benchmark: COCO mAP of the shared int8 SSD, of our float load and our int8 PTQ.

Over the annotated ``coco_mini/val2017`` images (pycocotools), with one post-processing for
every model (``TFLite_Detection_PostProcess``, 100 detections, NMS IoU 0.6):

- ``coco_mini_map`` / ``coco_mini_map50``: the shared quantization-aware int8 model;
- ``float_map``: the float OD API archive loaded by our loader and builder, run in float;
- ``ours_int8_map``: our post-training int8 of that float model (``quant.ptq`` defaults),
  calibrated on the unannotated ``val2017`` images; ``map_drop = float_map - ours_int8_map``;
  variants: ``_exact_anchors`` (float anchors behind a DEQUANTIZE instead of uint8 anchors)
  ``minmax`` (plain min / max ranges instead of ReLU6 outputs at [0, 6]) and ``io_int8``
  (int8 instead of uint8 input and output), ``bias_corrected`` (bias correction on, which
  the detector default leaves off);
- ``anchor_max_abs_diff``: our anchors against the shared model's ``anchors`` tensor;
- per builder (random weights): parameter count, MACs, anchors and ``mapped_share``, the
  share of ops the offline Edge TPU analyzer maps after our quantization (the post-processing
  op included).

Prints a table and writes JSON::

    python scripts/bench_detection.py --json out/bench_detection.json
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from edgeq.images import decode_images, image_sizes, inception_preprocess, list_images
from edgeq.outputs import write_json
from edgeq.paths import shared_data_dir
from edgetpu.analyze import analyze_model
from quant.calibration import CalibrationSet
from quant.detection.anchors import AnchorConfig, MultiscaleAnchorConfig
from quant.detection.pipeline_config import BoxPredictorConfig, FeatureExtractorConfig, SsdConfig
from quant.detection.postprocess import DetectionHead, replace_postprocess_settings
from quant.detection.sources import load_ssd_checkpoint
from quant.float_model import FloatModel
from quant.ptq import QuantizeOptions, quantize_model
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
    # samples/configs/ssdlite_mobiledet_{cpu,dsp,edgetpu,gpu}_320x320_coco_sync_4x4.config
    *((f"ssdlite_mobiledet_{kind}", f"ssd_mobiledet_{kind}", True, 320)
      for kind in ("cpu", "dsp", "edgetpu", "gpu")),
)
# (name = feature extractor type, input size, box predictor, anchors) of the weight-shared
# zoo configs (samples/configs/ssd_mobilenet_v1_{ppn,fpn}_shared_box_predictor_*.config).
WEIGHT_SHARED_BUILDERS = (
    ("ssd_mobilenet_v1_ppn", 300,
     BoxPredictorConfig(kernel_size=1, num_layers_before_predictor=1, weight_shared=True,
                        depth=512, share_prediction_tower=True),
     AnchorConfig(min_scale=0.15, reduce_boxes_in_lowest_layer=False)),
    ("ssd_mobilenet_v1_fpn", 640,
     BoxPredictorConfig(kernel_size=3, num_layers_before_predictor=4, weight_shared=True,
                        depth=256),
     MultiscaleAnchorConfig()),
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

    calibration_set = CalibrationSet(decode_images(calibration, preprocess),
                                     tuple(calibration), str(args.coco / "val2017"), "-")
    float_model = FloatModel(model=loaded.model, preprocess=preprocess,
                             name="ssd_mobilenet_v1_0.75_depth", task="detect",
                             source=str(args.archive), postprocess=head)
    variants = {}
    for ranges in ("minmax", "relu6"):
        for exact in (False, True):
            options = QuantizeOptions(ranges=ranges, exact_anchors=exact)
            ours = args.out / f"ssd_mobilenet_v1_0.75_depth_int8_{ranges}_{int(exact)}.tflite"
            ours.write_bytes(quantize_model(float_model, calibration_set, options).tflite)
            variants[ranges, exact] = score(ours)
    ours_map = variants["relu6", False]
    best = variants["relu6", True]
    int8_io = args.out / "ssd_mobilenet_v1_0.75_depth_int8_io_int8.tflite"
    int8_io.write_bytes(quantize_model(float_model, calibration_set, QuantizeOptions(
        io_type="int8", exact_anchors=True)).tflite)
    int8_io_map = score(int8_io)
    corrected = args.out / "ssd_mobilenet_v1_0.75_depth_int8_bias_corrected.tflite"
    corrected.write_bytes(quantize_model(float_model, calibration_set, QuantizeOptions(
        bias_correction="on")).tflite)
    corrected_map = score(corrected)

    oracle = _oracle_anchors(args.int8_model)
    anchors = head.anchors
    builders = {} if args.skip_builders else _builders(loaded.config, head,
                                                       calibration_set.pixels[:8])

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
        "quantizer": ("quant.ptq defaults: per-channel, uint8 I/O, ReLU6 ranges, no bias "
                      "correction (auto for detectors), uint8 anchors + box offsets"),
        "ours_int8_map_bias_corrected": round(corrected_map["map"], 4),
        "map_drop_bias_corrected": round(float_map["map"] - corrected_map["map"], 4),
        "ours_int8_minmax_map": round(variants["minmax", False]["map"], 4),
        "ours_int8_minmax_map_exact_anchors": round(variants["minmax", True]["map"], 4),
        "ours_int8_map_exact_anchors": round(best["map"], 4),
        "ours_int8_map50_exact_anchors": round(best["map50"], 4),
        "map_drop_exact_anchors": round(float_map["map"] - best["map"], 4),
        "ours_int8_io_int8_map_exact_anchors": round(int8_io_map["map"], 4),
        "map_drop_io_int8_exact_anchors": round(float_map["map"] - int8_io_map["map"], 4),
        "anchor_max_abs_diff": float(np.abs(anchors - oracle[0]).max()),
        "anchor_oracle_half_step": oracle[1] / 2,
        "builders": builders,
        "seconds": round(time.perf_counter() - start, 1),
    }
    _print_table(result)
    if args.json:
        write_json(args.json, result)


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


def _builders(v1_config: SsdConfig, head: DetectionHead,
              calibration: np.ndarray) -> dict[str, dict]:
    """Return, per builder (random weights, 90 classes), its parameters and the share of its
    ops the offline Edge TPU analyzer maps after our PTQ (post-processing included), with
    its parameters (BatchNorm moving statistics included), MACs and anchors."""
    from quant.detection.anchors import ssd_anchors
    from quant.detection.sources import feature_map_sizes
    from quant.detection.ssd import build_ssd
    from quant.models.stats import count_macs

    variants = {"ssd_mobilenet_v1_0.75_depth": v1_config}
    for name, kind, lite, size in BUILDERS:
        variants[name] = dataclasses.replace(
            v1_config, image_size=(size, size),
            feature_extractor=FeatureExtractorConfig(kind, 1.0, 16, use_depthwise=lite),
            box_predictor=dataclasses.replace(v1_config.box_predictor,
                                              kernel_size=3 if lite else 1,
                                              use_depthwise=lite))
    for name, size, predictor, anchors in WEIGHT_SHARED_BUILDERS:
        variants[name] = dataclasses.replace(
            v1_config, image_size=(size, size), feature_extractor=FeatureExtractorConfig(name),
            box_predictor=predictor, anchors=anchors)
    rows = {}
    for name, config in variants.items():
        model = build_ssd(config, name=name)
        size = config.image_size[0]
        anchors = ssd_anchors(config.anchors, feature_map_sizes(model), config.image_size)
        float_model = FloatModel(
            model=model, preprocess=inception_preprocess(size), name=name, task="detect",
            source="random weights", postprocess=DetectionHead(head.settings, anchors))
        pixels = np.stack([np.asarray(Image.fromarray(p).resize((size, size)))
                           for p in calibration])
        result = quantize_model(float_model, CalibrationSet(pixels, (), "coco", "-"),
                                QuantizeOptions(require_edgetpu=False))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.tflite"
            path.write_bytes(result.tflite)
            analysis = analyze_model(path)
        rows[name] = {"params": int(model.count_params()), "macs": count_macs(model),
                      "anchors": len(anchors), "input_size": size,
                      "ops": analysis.summary["ops"], "mapped": analysis.summary["mapped"],
                      "mapped_share": round(analysis.summary["mapped"] /
                                            analysis.summary["ops"], 3),
                      "cpu_ops": analysis.summary["cpu_ops"]}
    return rows


def _print_table(result: dict) -> None:
    rows = [(k, v) for k, v in result.items() if not isinstance(v, dict)]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for name, row in result["builders"].items():
        print(f"{name:<{width}}  params {row['params']:,}  MACs {row['macs'] / 1e9:.2f} B  "
              f"anchors {row['anchors']}  mapped {row['mapped_share']}")


if __name__ == "__main__":
    main()
