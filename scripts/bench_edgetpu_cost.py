"""Cost-model benchmark: estimated vs Coral's published USB 3 latency of the Edge TPU.

Published (coral.ai, USB Accelerator on USB 3.0, ms per inference): MobileNet v1 1.0/224 2.4,
MobileNet v2 1.0/224 2.6, SSD MobileNet v1 (300x300) 6.5, SSD MobileNet v2 (300x300) 7.2.
The cost model only needs the graph (MACs, parameter bytes, op count, tensors at the Edge TPU
boundary, the CPU post-processing), not the weights, so each row is a model of exactly the
published architecture:

- MobileNet v2 1.0/224: Coral's own ``coral/mobilenet_v2_1.0_224_quant.tflite`` (the
  published model itself);
- MobileNet v1 1.0/224, SSD MobileNet v1 and SSD MobileNet v2 (300x300, 90 COCO classes):
  built here with random weights by the project's builders (``quant.models``) and quantized
  by the project's PTQ engine (``quant.ptq``, 8 random calibration images, uint8 I/O, the
  SSDs with ``TFLite_Detection_PostProcess``), cached under the download cache. The SSD
  settings are the shared archive's ``pipeline.config`` with depth multiplier 1.0.

The latency constants of :mod:`edgetpu.cost` are fitted (``--fit``) to minimise the largest
relative error over these four rows; with as many rows as the model has free constants
that error says little on its own, so the leave-one-out error (fit on three rows, predict the
fourth) is reported too. Prints a table and writes JSON::

    python scripts/bench_edgetpu_cost.py --json out/bench_edgetpu_cost.json [--fit]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np

from edgetpu.cost import CALIBRATION, LINK_BYTES_PER_SECOND, Calibration, estimate, features
from quant.paths import cache_dir, shared_data_dir

#: (name, published USB 3 ms, where the model comes from)
MODELS = [
    ("mobilenet_v1_1.0_224", 2.4, "built: quant.models mobilenet_v1 1.0/224, random weights"),
    ("mobilenet_v2_1.0_224", 2.6, "coral/mobilenet_v2_1.0_224_quant.tflite (the published model)"),
    ("ssd_mobilenet_v1_300", 6.5, "built: quant.models SSD MobileNet v1 1.0, random weights"),
    ("ssd_mobilenet_v2_300", 7.2, "built: quant.models SSD MobileNet v2 1.0, random weights"),
]
_ARCHIVE = "models/ssd_mobilenet_v1_0.75_depth_300x300_coco_float.tar.gz"


def model_path(name: str, folder: Path) -> Path:
    """Return the ``.tflite`` of a benchmark row (built ones live in ``folder``)."""
    if name == "mobilenet_v2_1.0_224":
        return shared_data_dir() / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
    return folder / f"{name}_int8_random.tflite"


def build_models(folder: Path, force: bool = False) -> dict[str, float]:
    """Build the random-weight int8 models that are not in ``folder`` yet; return seconds each."""
    from quant.calibration import CalibrationSet
    from quant.ptq import QuantizeOptions, quantize_model

    folder.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for name, _, _ in MODELS:
        path = model_path(name, folder)
        if name == "mobilenet_v2_1.0_224" or (path.is_file() and not force):
            continue
        start = time.perf_counter()
        float_model = _float_model(name)
        size = float_model.preprocess.height
        pixels = np.random.default_rng(0).integers(0, 256, (8, size, size, 3), dtype=np.uint8)
        result = quantize_model(float_model, CalibrationSet(pixels, (), "random", "-"),
                                QuantizeOptions(require_edgetpu=False, range_images=4))
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(result.tflite)
        tmp.replace(path)
        seconds[name] = round(time.perf_counter() - start, 1)
    return seconds


def _float_model(name: str):
    from quant.models import build_classifier
    from quant.preprocess import inception_preprocess
    from quant.sources import FloatModel

    if name == "mobilenet_v1_1.0_224":
        return FloatModel(model=build_classifier("mobilenet_v1", 224, 1.0), name=name,
                          preprocess=inception_preprocess(224), task="classify",
                          source="random weights")
    from quant.anchors import ssd_anchors
    from quant.detection_sources import feature_map_sizes
    from quant.models.ssd import build_ssd
    from quant.pipeline_config import parse_text_proto, ssd_config_from_message
    from quant.postprocess import DetectionHead

    with tarfile.open(shared_data_dir() / _ARCHIVE) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("pipeline.config"))
        text = io.TextIOWrapper(archive.extractfile(member)).read()
    config = ssd_config_from_message(parse_text_proto(text), _ARCHIVE)
    kind = "ssd_mobilenet_v2" if "v2" in name else "ssd_mobilenet_v1"
    config = dataclasses.replace(config, feature_extractor=dataclasses.replace(
        config.feature_extractor, type=kind, depth_multiplier=1.0))
    model = build_ssd(config, name=name)
    anchors = ssd_anchors(config.anchors, feature_map_sizes(model), config.image_size)
    return FloatModel(model=model, preprocess=inception_preprocess(config.image_size[0]),
                      name=name, task="detect", source="random weights",
                      postprocess=DetectionHead.from_config(config, anchors))


def fit(x: np.ndarray, published: np.ndarray) -> Calibration:
    """Grid-search the fitted constants minimising the largest relative error.

    ``x`` holds per model the :func:`edgetpu.cost.features` row (MACs, Edge TPU ops,
    link-bound ms, CPU post-processing work).
    """
    rates = np.geomspace(5e7, 5e9, 121)[:, None, None]      # MACs per ms
    op_ms = np.linspace(0.0, 0.06, 61)[None, :, None]
    cpu = np.linspace(0.0, 3e-5, 61)[None, None, :]          # ms per post-processing element
    worst = np.zeros(np.broadcast_shapes(rates.shape, op_ms.shape, cpu.shape))
    for (macs, ops, link, work), target in zip(x, published, strict=True):
        predicted = CALIBRATION.invoke_ms + macs / rates + ops * op_ms + link + work * cpu
        worst = np.maximum(worst, np.abs(predicted - target) / target)
    i, j, k = np.unravel_index(np.argmin(worst), worst.shape)
    return dataclasses.replace(CALIBRATION, macs_per_ms=float(rates[i, 0, 0]),
                               op_ms=float(op_ms[0, j, 0]), cpu_ms_per_element=float(cpu[0, 0, k]))


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--fit", action="store_true",
                        help="refit the constants on these rows and print them")
    parser.add_argument("--models", type=Path, default=cache_dir() / "bench_edgetpu_cost",
                        help="folder for the built random-weight models (cache)")
    parser.add_argument("--rebuild", action="store_true", help="build the models again")
    args = parser.parse_args()
    built = build_models(args.models, force=args.rebuild)
    paths = [model_path(name, args.models) for name, _, _ in MODELS]
    published = np.array([ms for _, ms, _ in MODELS])
    x = np.array([features(path) for path in paths], dtype=float)
    calibration = fit(x, published) if args.fit else CALIBRATION
    rows = []
    for (name, ms, source), path in zip(MODELS, paths, strict=True):
        est = estimate(path, calibration)
        rows.append({"model": name, "source": source, "file": str(path), "macs": est.macs,
                     "parameter_bytes": est.parameter_bytes, "cached_bytes": est.cached_bytes,
                     "streamed_bytes": est.streamed_bytes, "edgetpu_ops": est.edgetpu_ops,
                     "input_bytes": est.input_bytes, "output_bytes": est.output_bytes,
                     "cpu_elements": est.cpu_elements,
                     "published_usb3_ms": ms, "predicted_ms": est.latency_ms,
                     "rel_error": round(abs(est.latency_ms["usb3"] - ms) / ms, 4)})
    for held, row in enumerate(rows):
        keep = [i for i in range(len(rows)) if i != held]
        cal = fit(x[keep], published[keep])
        macs, ops, link, work = x[held]
        predicted = (cal.invoke_ms + macs / cal.macs_per_ms + ops * cal.op_ms + link
                     + work * cal.cpu_ms_per_element)
        row["leave_one_out_ms"] = round(float(predicted), 3)
        row["leave_one_out_rel_error"] = round(abs(predicted - published[held])
                                               / published[held], 4)
    print(f"{'model':<22} {'GMACs':>6} {'params MB':>9} {'ops':>4} {'published':>9} "
          f"{'usb3':>6} {'usb2':>6} {'pcie':>6} {'err':>6} {'LOO err':>7}")
    for row in rows:
        p = row["predicted_ms"]
        print(f"{row['model']:<22} {row['macs'] / 1e9:>6.3f} {row['parameter_bytes'] / 1e6:>9.2f} "
              f"{row['edgetpu_ops']:>4} {row['published_usb3_ms']:>9.1f} {p['usb3']:>6.2f} "
              f"{p['usb2']:>6.2f} {p['pcie']:>6.2f} {row['rel_error']:>6.1%} "
              f"{row['leave_one_out_rel_error']:>7.1%}")
    result = {"calibration": dataclasses.asdict(calibration),
              "links_bytes_per_second": LINK_BYTES_PER_SECOND, "models": rows,
              "built_seconds": built,
              "max_rel_error": max(r["rel_error"] for r in rows),
              "max_leave_one_out_rel_error": max(r["leave_one_out_rel_error"] for r in rows)}
    print(f"calibration: {result['calibration']}")
    print(f"max_rel_error {result['max_rel_error']:.1%}, "
          f"leave-one-out {result['max_leave_one_out_rel_error']:.1%}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
