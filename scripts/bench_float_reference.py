"""Float reference: load the shared MobileNetV2 checkpoint through the public loader, score it.

Loads ``mobilenet_v2_1.0_224.tgz`` with :func:`quant.sources.load_float_model`, compares it
with the float ``.tflite`` the archive bundles, and measures top-1 on the labelled ImageNet
images. Prints a table and writes JSON::

    python scripts/bench_float_reference.py --json out/float_reference.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from edgeq.images import decode_images, label_offset, list_images
from edgeq.outputs import write_json
from edgeq.paths import shared_data_dir
from quant.sources import load_float_model, max_abs_diff_with_tflite
from quant.validate.runners import KerasRunner


def main() -> None:
    """Run the benchmark."""
    data = shared_data_dir()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(data / "models/mobilenet_v2_1.0_224.tgz"))
    parser.add_argument("--images", default=str(data / "imagenet_val1300"))
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    start = time.perf_counter()
    float_model = load_float_model(args.checkpoint)
    diff = (max_abs_diff_with_tflite(float_model, float_model.bundled_tflite)
            if float_model.bundled_tflite else None)
    images = list_images(args.images, Path(args.images) / "labels.csv")
    pixels = decode_images(images.paths, float_model.preprocess)
    logits = KerasRunner(float_model.model, float_model.preprocess).classify(pixels)
    offset = label_offset(logits.shape[1], images.labels)
    top1 = float(np.mean(logits.argmax(1) == np.asarray(images.labels) + offset))
    result = {
        "model": float_model.name,
        "checkpoint": args.checkpoint,
        "top1": round(top1, 4),
        "n_images": len(images),
        "bundled_tflite_max_abs_diff": diff,
        "seconds": round(time.perf_counter() - start, 1),
    }
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
