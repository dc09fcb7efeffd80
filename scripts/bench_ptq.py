"""PTQ benchmark: the stock TFLite converter and ours, side by side, on MobileNetV2 1.0/224.

Standard split of ``imagenet_val1300``: rows of ``labels.csv`` sorted by file name, the first
300 calibrate, the other 1000 evaluate. Prints a table and writes JSON::

    python scripts/bench_ptq.py --json out/bench_ptq.json
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from edgeq.images import decode_images, label_offset, list_images
from edgeq.outputs import write_json
from edgeq.paths import shared_data_dir
from quant.calibration import CalibrationSet
from quant.ptq import QuantizeOptions, quantize_model
from quant.sources import load_float_model
from quant.validate.runners import KerasRunner, TfliteRunner


def stock_convert(model, calibration: CalibrationSet, preprocess, per_tensor: bool) -> bytes:
    """Return the stock converter's full-integer model with uint8 I/O."""
    from edgeq._tensorflow import tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in calibration.inputs(preprocess))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    converter._experimental_disable_per_channel = per_tensor
    return bytes(converter.convert())


def score(tflite: bytes, preprocess, pixels, labels, reference) -> dict:
    """Return top-1 and top-1 agreement with the float model of a .tflite."""
    outputs = TfliteRunner(tflite, preprocess).classify(pixels)
    return {"top1": round(float(np.mean(outputs.argmax(1) == labels)), 4),
            "agreement": round(float(np.mean(outputs.argmax(1) == reference.argmax(1))), 4)}


def main() -> None:
    """Run the benchmark."""
    data = shared_data_dir()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(data / "models/mobilenet_v2_1.0_224.tgz"))
    parser.add_argument("--images", default=str(data / "imagenet_val1300"))
    parser.add_argument("--calib", type=int, default=300, help="calibration rows (first N)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    float_model = load_float_model(args.checkpoint)
    preprocess = float_model.preprocess
    images = list_images(args.images, Path(args.images) / "labels.csv")
    order = np.argsort([str(p) for p in images.paths])
    paths = [images.paths[i] for i in order]
    labels = np.asarray([images.labels[i] for i in order])
    labels = labels + label_offset(float_model.num_classes, labels.tolist())
    calib_paths, eval_paths = paths[:args.calib], paths[args.calib:]
    calibration = CalibrationSet(decode_images(calib_paths, preprocess), tuple(calib_paths),
                                 f"{args.images} (first {args.calib} sorted rows)", "-")
    pixels, eval_labels = decode_images(eval_paths, preprocess), labels[args.calib:]
    reference = KerasRunner(float_model.model, preprocess).classify(pixels)

    start = time.perf_counter()
    ours = quantize_model(float_model, calibration)
    ours_seconds = time.perf_counter() - start
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    ours_pt = quantize_model(float_model, calibration, QuantizeOptions(per_tensor=True))
    ours_pt_seconds = time.perf_counter() - start
    start = time.perf_counter()
    stock = stock_convert(float_model.model, calibration, preprocess, per_tensor=False)
    stock_seconds = time.perf_counter() - start
    stock_pt = stock_convert(float_model.model, calibration, preprocess, per_tensor=True)

    result = {
        "model": float_model.name, "calibration_images": len(calib_paths),
        "eval_images": len(eval_paths),
        "float": {"top1": round(float(np.mean(reference.argmax(1) == eval_labels)), 4)},
        "stock": {**score(stock, preprocess, pixels, eval_labels, reference),
                  "quantize_seconds": round(stock_seconds, 1)},
        "stock_per_tensor": score(stock_pt, preprocess, pixels, eval_labels, reference),
        "ours": {**score(ours.tflite, preprocess, pixels, eval_labels, reference),
                 "quantize_seconds": round(ours_seconds, 1), "peak_rss_mb": round(peak_rss_mb),
                 "options": ours.options.__dict__},
        "ours_per_tensor": {**score(ours_pt.tflite, preprocess, pixels, eval_labels, reference),
                            "quantize_seconds": round(ours_pt_seconds, 1),
                            "options": ours_pt.options.__dict__},
    }
    print(f"{'variant':<18}{'top1':>8}{'agreement':>11}")
    for key in ("float", "stock", "stock_per_tensor", "ours", "ours_per_tensor"):
        row = result[key]
        print(f"{key:<18}{row['top1']:>8.4f}{row.get('agreement', 1.0):>11.4f}")
    print(f"ours: {ours_seconds:.1f} s, peak RSS {peak_rss_mb:.0f} MB")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
