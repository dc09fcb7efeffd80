"""Latency-model benchmark: the Edge TPU cost model against Coral's published latencies.

Every published figure in ``../shared/data/edgetpu_latency/coral_published.csv`` whose model
this project has or can rebuild (``scripts/latency_models.py``: Coral's own files from
``../shared/data/coral``, otherwise the architecture at the published input size with random
weights, built by our builders or ``tf.keras.applications`` and quantized by our PTQ) becomes
one point per device: the median of the figures published for that model and device. The
latency model of :mod:`edgetpu.cost` (linear in the graph's dense and depthwise MACs, Edge TPU
ops, streamed parameter bytes, boundary bytes and CPU post-processing work, non-negative
constants) is fitted per device on those points, minimising the squared relative error.

Reported per device: ``points``, the in-sample errors, and the leave-one-out errors
(``loo_median_rel_error``, ``loo_max_rel_error``: each point predicted by a fit on the
others), beside two baselines: ``peak`` (MACs at the Edge TPU's peak 4 TOPS, i.e.
2e12 MAC/s, plus nothing else) and ``mac_linear`` (a fitted intercept + MACs, also
leave-one-out), so the table shows what the model's structure buys::

    python scripts/bench_edgetpu_cost.py --json out/bench_edgetpu_cost.json [--fit]

``--fit`` prints the fitted constants as the ``CALIBRATION`` literal of ``edgetpu/cost.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_models import (  # noqa: E402
    CPU_HOST,
    MODELS,
    build_models,
    cpu_only_latencies,
    model_path,
    published_latencies,
)

from edgetpu.analyze import analyze_model  # noqa: E402
from edgetpu.cost import CALIBRATION, FEATURES, GraphFeatures, graph_features  # noqa: E402
from edgetpu.tflite_model import read_model  # noqa: E402
from quant.paths import cache_dir  # noqa: E402

#: Devices with published figures (``pcie`` has none: it is derived, see edgetpu.cost).
FITTED_DEVICES = ("usb3", "usb2", "devboard")
#: The Edge TPU's peak: 4 TOPS = 2e12 multiply-accumulates per second (Coral datasheet).
PEAK_MACS_PER_MS = 2e9


def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative constants minimising the squared relative error of ``x @ w`` to ``y``."""
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    weights, _ = nnls((x / scale) / y[:, None], np.ones_like(y))
    return weights / scale


def leave_one_out(x: np.ndarray, y: np.ndarray, extra_x: np.ndarray | None = None,
                  extra_y: np.ndarray | None = None) -> np.ndarray:
    """Each point predicted by a fit on all the others (and on the extra rows, always kept)."""
    predictions = np.empty_like(y)
    for held in range(len(y)):
        keep = np.arange(len(y)) != held
        train_x, train_y = x[keep], y[keep]
        if extra_x is not None and len(extra_x):
            train_x, train_y = np.vstack([train_x, extra_x]), np.concatenate([train_y, extra_y])
        predictions[held] = x[held] @ fit(train_x, train_y)
    return predictions


def errors(predicted: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Median and largest relative error."""
    rel = np.abs(predicted - y) / y
    return {"median_rel_error": round(float(np.median(rel)), 4),
            "max_rel_error": round(float(rel.max()), 4)}


def device_report(keys: list[str], features: list[GraphFeatures], y: np.ndarray,
                  cpu_features: list[GraphFeatures], cpu_y: np.ndarray
                  ) -> tuple[dict[str, Any], np.ndarray]:
    """Fit one device; return its metrics (model and baselines) and the constants.

    ``cpu_features`` / ``cpu_y``: the same host's CPU-only figures (every op on the CPU),
    which pin the CPU constants; they are always in the fit and never scored.
    """
    x = np.array([f.vector() for f in features])
    cpu_x = np.array([f.vector() for f in cpu_features]).reshape(-1, x.shape[1])
    weights = fit(np.vstack([x, cpu_x]), np.concatenate([y, cpu_y]))
    fitted = x @ weights
    loo = leave_one_out(x, y, cpu_x, cpu_y)
    macs = np.array([[1.0, float(f.macs)] for f in features])
    linear_loo = leave_one_out(macs, y)
    peak = np.array([f.macs / PEAK_MACS_PER_MS for f in features])
    in_sample, held_out = errors(fitted, y), errors(loo, y)
    report = {
        "points": len(y),
        "cpu_only_points": len(cpu_y),
        "median_rel_error": in_sample["median_rel_error"],
        "max_rel_error": in_sample["max_rel_error"],
        "loo_median_rel_error": held_out["median_rel_error"],
        "loo_max_rel_error": held_out["max_rel_error"],
        "baseline_peak": errors(peak, y),
        "baseline_mac_linear_loo": errors(linear_loo, y),
        "rows": [{"model": key, "published_ms": float(ms), "estimated_ms": round(float(f), 3),
                  "loo_ms": round(float(h), 3), "mac_linear_loo_ms": round(float(m), 3),
                  "peak_ms": round(float(p), 3)}
                 for key, ms, f, h, m, p in zip(keys, y, fitted, loo, linear_loo, peak,
                                                strict=True)],
    }
    return report, weights


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--fit", action="store_true",
                        help="print the fitted constants as edgetpu.cost.CALIBRATION")
    parser.add_argument("--models", type=Path, default=cache_dir() / "latency_models",
                        help="folder for the built random-weight models (cache)")
    parser.add_argument("--rebuild", action="store_true", help="build the models again")
    args = parser.parse_args()
    built = build_models(args.models, force=args.rebuild)
    published = published_latencies()
    cpu_only = cpu_only_latencies()
    features: dict[str, GraphFeatures] = {}
    cpu_features: dict[str, GraphFeatures] = {}
    for model in MODELS:
        path = model_path(model, args.models)
        # as Coral converted it: with op versions its compiler reads (TF 2.21 raises some)
        mapped = [op.mapped for op in analyze_model(path, any_op_version=True).ops]
        features[model.key] = graph_features(read_model(path), mapped)
        cpu_features[model.key] = graph_features(read_model(path), [False] * len(mapped))
    result: dict[str, Any] = {"devices": {}, "built_seconds": built,
                              "features": {k: f.to_dict() for k, f in features.items()},
                              "published": published}
    calibration: dict[str, dict[str, float]] = {}
    for device in FITTED_DEVICES:
        keys = [m.key for m in MODELS if device in published.get(m.key, {})]
        y = np.array([published[k][device]["ms"] for k in keys])
        host = CPU_HOST[device]
        cpu_keys = [m.key for m in MODELS if m.key in cpu_only]
        cpu_y = np.array([cpu_only[k][host] for k in cpu_keys])
        report, weights = device_report(keys, [features[k] for k in keys], y,
                                        [cpu_features[k] for k in cpu_keys], cpu_y)
        result["devices"][device] = report
        calibration[device] = {name: float(f"{w:.4g}") for name, w in zip(FEATURES, weights,
                                                                          strict=True)}
    desktop_cpu = {name: calibration["usb3"][name] for name in FEATURES if name.startswith(
        ("cpu_", "postprocess_"))}
    calibration["pcie"] = dict(calibration["devboard"], **desktop_cpu)
    result["cpu_only"] = cpu_only
    result["fitted_calibration"] = calibration
    result["current_calibration"] = CALIBRATION
    _print(result)
    if args.fit:
        print("CALIBRATION = " + json.dumps(
            {d: calibration[d] for d in ("usb3", "usb2", "pcie", "devboard")}, indent=4))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _print(result: dict[str, Any]) -> None:
    for device, report in result["devices"].items():
        print(f"\n{device}: {report['points']} points")
        print(f"  {'model':<30} {'published':>9} {'estimate':>9} {'LOO':>8} {'err':>6} "
              f"{'MAC-lin LOO':>11} {'peak':>8}")
        for row in report["rows"]:
            err = abs(row["loo_ms"] - row["published_ms"]) / row["published_ms"]
            print(f"  {row['model']:<30} {row['published_ms']:>9.2f} {row['estimated_ms']:>9.2f} "
                  f"{row['loo_ms']:>8.2f} {err:>6.1%} {row['mac_linear_loo_ms']:>11.2f} "
                  f"{row['peak_ms']:>8.2f}")
        print(f"  model: LOO median {report['loo_median_rel_error']:.1%}, max "
              f"{report['loo_max_rel_error']:.1%} (in sample {report['median_rel_error']:.1%}"
              f" / {report['max_rel_error']:.1%}); MAC-linear LOO "
              f"{report['baseline_mac_linear_loo']['median_rel_error']:.1%} / "
              f"{report['baseline_mac_linear_loo']['max_rel_error']:.1%}; peak "
              f"{report['baseline_peak']['median_rel_error']:.1%} / "
              f"{report['baseline_peak']['max_rel_error']:.1%}")


if __name__ == "__main__":
    raise SystemExit(main())
