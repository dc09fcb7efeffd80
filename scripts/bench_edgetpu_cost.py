"""Cost-model benchmark: estimated vs Coral's published USB 3 latency of the Edge TPU.

Published (coral.ai, USB Accelerator on USB 3.0, ms per inference): MobileNet v1 224 2.4,
MobileNet v2 224 2.6, SSD MobileNet v1 6.5, SSD MobileNet v2 7.2. The models measured here
are the closest ones in ``../shared/data`` and differ from the published ones where said:

- MobileNet v1 1.0/224: Coral's embedding extractor, i.e. v1 1.0/224 minus its 1001-class
  classifier (about 1 M MACs and 1 MB of parameters less);
- MobileNet v2 1.0/224: ``mobilenet_v2_1.0_224_quant.tflite`` (the published model);
- SSD MobileNet v1: ``ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite``, the 0.75 depth
  multiplier variant (the published 6.5 ms is for depth 1.0), with its CPU post-processing.

SSD MobileNet v2 is published but only its compiled segments are here (no source graph), so
it is not estimated. The three constants of :mod:`edgetpu.cost` are fitted to minimise the
largest relative error over these rows (``--fit`` prints them); leave-one-out errors show how
well the model predicts a row it was not fitted on. Prints a table and writes JSON::

    python scripts/bench_edgetpu_cost.py --json out/bench_edgetpu_cost.json [--fit]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgetpu.cost import CALIBRATION, LINK_BYTES_PER_SECOND, Calibration, estimate
from quant.paths import shared_data_dir

#: (name, path under the shared data, published USB 3 ms, note)
MODELS = [
    ("mobilenet_v1_1.0_224", "coral/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", 2.4,
     "embedding extractor: v1 1.0/224 minus its classifier"),
    ("mobilenet_v2_1.0_224", "coral/mobilenet_v2_1.0_224_quant.tflite", 2.6,
     "the published model"),
    ("ssd_mobilenet_v1", "models/ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite", 6.5,
     "0.75 depth variant; published number is for depth 1.0"),
]


def features(paths: list[Path]) -> np.ndarray:
    """Per model: (MACs, Edge TPU ops, link-bound ms on USB 3)."""
    rows = []
    for path in paths:
        est = estimate(path, Calibration(invoke_ms=0.0, macs_per_ms=float("inf"), op_ms=0.0))
        rows.append((est.macs, est.edgetpu_ops, est.latency_ms["usb3"]))
    return np.array(rows, dtype=float)


def fit(x: np.ndarray, published: np.ndarray) -> Calibration:
    """Grid-search the constants minimising the largest relative error."""
    rates = np.geomspace(2e7, 2e9, 160)[:, None, None]        # MACs per ms
    op_ms = np.linspace(0.0, 0.08, 81)[None, :, None]
    invoke = np.linspace(0.0, 2.0, 101)[None, None, :]
    worst = np.zeros(np.broadcast_shapes(rates.shape, op_ms.shape, invoke.shape))
    for (macs, ops, link), target in zip(x, published, strict=True):
        predicted = invoke + macs / rates + ops * op_ms + link
        worst = np.maximum(worst, np.abs(predicted - target) / target)
    i, j, k = np.unravel_index(np.argmin(worst), worst.shape)
    return Calibration(invoke_ms=float(invoke[0, 0, k]), macs_per_ms=float(rates[i, 0, 0]),
                       op_ms=float(op_ms[0, j, 0]))


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--fit", action="store_true",
                        help="refit the constants on these rows and print them")
    args = parser.parse_args()
    data = shared_data_dir()
    paths = [data / rel for _, rel, _, _ in MODELS]
    published = np.array([ms for _, _, ms, _ in MODELS])
    x = features(paths)
    calibration = fit(x, published) if args.fit else CALIBRATION
    rows = []
    for (name, rel, ms, note), path in zip(MODELS, paths, strict=True):
        est = estimate(path, calibration)
        rows.append({"model": name, "file": rel, "note": note, "macs": est.macs,
                     "parameter_bytes": est.parameter_bytes, "cached_bytes": est.cached_bytes,
                     "streamed_bytes": est.streamed_bytes, "edgetpu_ops": est.edgetpu_ops,
                     "published_usb3_ms": ms, "predicted_ms": est.latency_ms,
                     "rel_error": round(abs(est.latency_ms["usb3"] - ms) / ms, 4)})
    loo = []
    for held in range(len(MODELS)):
        keep = [i for i in range(len(MODELS)) if i != held]
        cal = fit(x[keep], published[keep])
        macs, ops, link = x[held]
        predicted = cal.invoke_ms + macs / cal.macs_per_ms + ops * cal.op_ms + link
        loo.append(round(abs(predicted - published[held]) / published[held], 4))
    for row, err in zip(rows, loo, strict=True):
        row["leave_one_out_rel_error"] = err
    print(f"{'model':<22} {'GMACs':>6} {'params MB':>9} {'ops':>4} {'published':>9} "
          f"{'usb3':>6} {'usb2':>6} {'pcie':>6} {'err':>6} {'LOO err':>7}")
    for row in rows:
        p = row["predicted_ms"]
        print(f"{row['model']:<22} {row['macs'] / 1e9:>6.3f} {row['parameter_bytes'] / 1e6:>9.2f} "
              f"{row['edgetpu_ops']:>4} {row['published_usb3_ms']:>9.1f} {p['usb3']:>6.2f} "
              f"{p['usb2']:>6.2f} {p['pcie']:>6.2f} {row['rel_error']:>6.1%} "
              f"{row['leave_one_out_rel_error']:>7.1%}")
    result = {"calibration": asdict(calibration),
              "links_bytes_per_second": LINK_BYTES_PER_SECOND, "models": rows,
              "max_rel_error": max(r["rel_error"] for r in rows),
              "max_leave_one_out_rel_error": max(loo)}
    print(f"calibration: {result['calibration']}")
    print(f"max_rel_error {result['max_rel_error']:.1%}, "
          f"leave-one-out {result['max_leave_one_out_rel_error']:.1%}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
