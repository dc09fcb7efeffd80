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
- ``builders``: every detection builder on the network of each buildable zoo row (random
  weights, the sample config's settings, quantized and analysed as ``scripts/zoo_latency.py``
  does): parameter count, MACs, anchors, ``mapped_share`` (the share of ops the offline
  Edge TPU analyzer maps, the post-processing op included) and the ops left on the CPU.

Prints a table and writes JSON::

    python scripts/bench_detection.py --json out/bench_detection.json
    python scripts/bench_detection.py --builders-only --builders 'resnet|inception' \
        --json out/bench_detection_builders.json
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgeq.errors import BadInputError
from edgeq.images import decode_images, image_sizes, inception_preprocess, list_images
from edgeq.outputs import write_json
from edgeq.paths import shared_data_dir
from quant.calibration import CalibrationSet
from quant.detection.postprocess import DetectionHead, replace_postprocess_settings
from quant.detection.sources import load_ssd_checkpoint
from quant.float_model import FloatModel
from quant.ptq import QuantizeOptions, quantize_model
from quant.validate.detection import coco_images, coco_map, load_coco, to_coco_results
from quant.validate.reference import converted_tflite
from quant.validate.runners import TfliteRunner

MAX_DETECTIONS = 100
NMS_IOU = 0.6
#: A builder with no row in the zoo: measured with the settings of the EdgeTPU row.
EXTRA_BUILDERS = {"ssdlite_mobiledet_gpu": ("ssd_mobiledet_edgetpu_coco", "ssd_mobiledet_gpu")}


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
    parser.add_argument("--builders", default="", metavar="REGEX",
                        help="measure only the builders whose zoo row name matches")
    parser.add_argument("--builders-only", action="store_true",
                        help="measure the builders only (no COCO scoring)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.builders_only:
        result = {"builders": _builders(args.builders),
                  "seconds": round(time.perf_counter() - start, 1)}
        _print_table(result)
        if args.json:
            write_json(args.json, result)
        return

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
    builders = {} if args.skip_builders else _builders(args.builders)

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


def _builders(pattern: str = "") -> dict[str, dict]:
    """Measure every detection builder on the network of its zoo rows (random weights).

    One entry per detection row of the zoo with a registered builder whose name matches
    ``pattern`` (and per :data:`EXTRA_BUILDERS`; a row the builder refuses is listed with
    the reason), built from its sample config and quantized and analysed as
    ``scripts/zoo_latency.py`` does: parameters (BatchNorm moving statistics included),
    MACs, anchors, and the share of ops the offline Edge TPU analyzer maps (the
    post-processing op included) with the ops it leaves on the CPU.
    """
    import zoo_latency

    from quant import zoo

    specs = {spec.name: spec for spec in zoo_latency.candidates() if spec.task == "detect"}
    for name, (row, builder) in EXTRA_BUILDERS.items():
        specs[name] = dataclasses.replace(zoo.get_model(row), name=name, builder=builder)
    rows = {}
    chosen = {name: spec for name, spec in specs.items() if re.search(pattern, name)}
    for name, spec in tqdm(chosen.items(), desc="builders", unit="model"):
        try:
            entry = zoo_latency.measure(spec)
        except BadInputError as exc:
            rows[name] = {"builder": spec.builder, "refused": str(exc)}
            continue
        verdict = entry["edgetpu"]
        rows[name] = {"builder": spec.builder, "input_size": spec.input_size, **entry["graph"],
                      "ops": verdict["ops"], "mapped": verdict["mapped"],
                      "mapped_share": round(verdict["mapped"] / verdict["ops"], 3),
                      "cpu_ops": verdict["cpu_ops"], "seconds": entry["seconds"]}
    return rows


def _print_table(result: dict) -> None:
    rows = [(k, v) for k, v in result.items() if not isinstance(v, dict)]
    width = max(len(k) for k in [*(k for k, _ in rows), *result["builders"]])
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for name, row in result["builders"].items():
        if "refused" in row:
            print(f"{name:<{width}}  {row['builder']:<24} refused: {row['refused']}")
            continue
        cpu = ", ".join(f"{op} x{count}" for op, count in row["cpu_ops"].items()) or "-"
        print(f"{name:<{width}}  {row['builder']:<24} {row['input_size']:>4}  "
              f"params {row['params'] / 1e6:6.2f} M  MACs {row['macs'] / 1e9:6.2f} B  "
              f"anchors {row['anchors']:>6}  mapped {row['mapped_share']:.3f}  CPU: {cpu}")


if __name__ == "__main__":
    main()
