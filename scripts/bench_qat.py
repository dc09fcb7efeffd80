"""QAT benchmark: float, our PTQ and quantization-aware fine-tuning of MobileNetV2 1.0/224.

Standard split of ``imagenet_val1300``: rows of ``labels.csv`` sorted by file name, the first
300 are the calibration split, the other 1000 the evaluation split. PTQ calibrates on the
300; QAT trains on the same 300 plus the unannotated ``coco_mini/val2017`` images, without
labels (distillation from the float model). All three are scored on the evaluation split.
Prints a table and writes JSON (keys ``float.top1``, ``ptq.top1``, ``qat.top1``,
``qat.agreement``, ``qat.train_seconds``)::

    python scripts/bench_qat.py --json out/bench_qat.json
    python scripts/bench_qat.py --steps 20 --eval 200 --json out/bench_qat_quick.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_ptq import score

from edgeq.images import decode_images, label_offset, list_images
from edgeq.outputs import write_json
from edgeq.paths import shared_data_dir
from quant.calibration import CalibrationSet
from quant.ptq import quantize_model
from quant.qat import QatOptions, train_qat
from quant.qat.dataset import listed_files
from quant.sources import load_float_model
from quant.validate.runners import KerasRunner


def main() -> None:
    """Run the benchmark."""
    data = shared_data_dir()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(data / "models/mobilenet_v2_1.0_224.tgz"))
    parser.add_argument("--images", default=str(data / "imagenet_val1300"))
    parser.add_argument("--extra", default=str(data / "coco_mini/val2017"),
                        help="unlabelled training images added to the calibration split")
    parser.add_argument("--calib", type=int, default=300, help="calibration rows (first N)")
    parser.add_argument("--eval", type=int, default=None,
                        help="score on the first N evaluation images only (default all)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="total steps instead of epochs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="QAT checkpoints (default: a fresh temporary folder)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    float_model = load_float_model(args.checkpoint)
    preprocess = float_model.preprocess
    images = list_images(args.images, Path(args.images) / "labels.csv")
    order = np.argsort([str(p) for p in images.paths])
    paths = [images.paths[i] for i in order]
    labels = np.asarray([images.labels[i] for i in order])
    labels = labels + label_offset(float_model.num_classes, labels.tolist())
    calib_paths, eval_paths = paths[:args.calib], paths[args.calib:][:args.eval]
    calibration = CalibrationSet(decode_images(calib_paths, preprocess), tuple(calib_paths),
                                 f"{args.images} (first {args.calib} sorted rows)", "-")
    train = listed_files([*calib_paths, *list_images(args.extra).paths],
                         f"{args.images} (first {args.calib} sorted rows) + {args.extra}")
    pixels = decode_images(eval_paths, preprocess)
    eval_labels = labels[args.calib:][:len(eval_paths)]
    reference = KerasRunner(float_model.model, preprocess).classify(pixels)

    start = time.perf_counter()
    ptq = quantize_model(float_model, calibration)
    ptq_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as scratch:
        options = QatOptions(epochs=args.epochs, steps=args.steps, batch_size=args.batch_size,
                             lr=args.lr, checkpoint_dir=args.checkpoint_dir or Path(scratch))
        start = time.perf_counter()
        qat = train_qat(float_model, train, options)
        qat_seconds = time.perf_counter() - start

    result = {
        "model": float_model.name, "calibration_images": len(calib_paths),
        "train_images": len(train), "eval_images": len(eval_paths),
        "cpu_count": os.cpu_count(),
        "float": {"top1": round(float(np.mean(reference.argmax(1) == eval_labels)), 4)},
        "ptq": {**score(ptq.tflite, preprocess, pixels, eval_labels, reference),
                "quantize_seconds": round(ptq_seconds, 1)},
        "qat": {**score(qat.tflite, preprocess, pixels, eval_labels, reference),
                "train_seconds": round(qat.timings["train_s"], 1),
                "total_seconds": round(qat_seconds, 1),
                "steps": sum(h["steps"] for h in qat.history),
                "history": list(qat.history),
                "options": {k: v for k, v in qat.options.fingerprint().items()}
                | {"epochs": args.epochs, "steps": args.steps}},
    }
    print(f"{'variant':<8}{'top1':>8}{'agreement':>11}")
    for key in ("float", "ptq", "qat"):
        row = result[key]
        print(f"{key:<8}{row['top1']:>8.4f}{row.get('agreement', 1.0):>11.4f}")
    print(f"qat: {result['qat']['steps']} steps, train {qat.timings['train_s']:.0f} s, "
          f"total {qat_seconds:.0f} s; ptq {ptq_seconds:.0f} s")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
