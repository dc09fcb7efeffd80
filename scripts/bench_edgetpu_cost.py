"""Latency-model benchmark: the Edge TPU cost model against Coral's published latencies.

Every published figure in ``../shared/data/edgetpu_latency/coral_published.csv`` whose model
this project has or can rebuild (``scripts/latency_models.py``: Coral's own files from
``../shared/data/coral``, otherwise the architecture at the published input size with random
weights, built by our builders or ``tf.keras.applications`` and quantized by our PTQ) becomes
one point per device: the median of the figures published for that model and device. The
latency model of :mod:`edgetpu.cost` (linear in the graph's dense and per-channel MACs, Edge
TPU ops, copied concatenation inputs, streamed parameter bytes, boundary bytes and CPU
post-processing work, non-negative constants) is fitted on all devices' points at once: the
Edge TPU's own constants (MACs, ops, copies) are shared, the link and host CPU constants are
per device, and the same hosts' published CPU-only timings pin the CPU constants. The fit
minimises the summed absolute relative error.

A figure faster than the device's link allows is left out of the fit and of the errors, and
listed apart (``below_link_bound``): the parameters that do not fit even the whole 8 MiB SRAM
must cross the link on every inference, and USB 3 and PCIe 2.0 x1 carry at most 500 MB/s
(5 Gb/s, 8b/10b coded), USB 2 at most 60 MB/s (480 Mb/s). Such a figure cannot come from the
architecture as built here: it was measured on a smaller graph, or it is wrong.

Reported per device: ``points``, the in-sample errors, and the leave-one-out errors
(``loo_median_rel_error``, ``loo_max_rel_error``: each point predicted by a fit without any
figure of its model, on any device), beside two baselines: ``peak`` (MACs at the Edge TPU's
peak 4 TOPS, i.e. 2e12 MAC/s, plus nothing else) and ``mac_linear`` (a fitted intercept + MACs, also
leave-one-out), so the table shows what the model's structure buys::

    python scripts/bench_edgetpu_cost.py --models out/latency_models \
        --json out/bench_edgetpu_cost.json [--fit]

``--fit`` prints the fitted constants as the ``CALIBRATION`` literal of ``edgetpu/cost.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linprog

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_models import (  # noqa: E402
    CPU_HOST,
    MODELS,
    build_models,
    cpu_only_latencies,
    model_path,
    published_latencies,
)

from edgeq.outputs import write_json
from edgeq.paths import cache_dir  # noqa: E402
from edgetpu.analyze import analyze_model  # noqa: E402
from edgetpu.cost import (  # noqa: E402
    CALIBRATION,
    FEATURES,
    SRAM_BYTES,
    GraphFeatures,
    graph_features,
)
from edgetpu.tflite_model import read_model  # noqa: E402

#: Devices with published figures (``pcie`` has none: it is derived, see edgetpu.cost).
FITTED_DEVICES = ("usb3", "usb2", "devboard")
#: The Edge TPU's peak: 4 TOPS = 2e12 multiply-accumulates per second (Coral datasheet).
PEAK_MACS_PER_MS = 2e9
#: The most bytes per millisecond each device's link carries: USB 3.0 (5 Gb/s) and the Dev
#: Board's PCIe 2.0 x1 (5 GT/s) with 8b/10b coding, 500 MB/s; USB 2.0 (480 Mb/s), 60 MB/s.
LINK_PEAK_BYTES_PER_MS = {"usb3": 500e3, "usb2": 60e3, "devboard": 500e3}


def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative constants minimising the summed absolute relative error of ``x @ w``.

    A linear program (``|x_i w - y_i| / y_i <= t_i``, minimise the sum of ``t``): robust to
    the published figures that disagree with each other (one model is 6.5 ms on one Coral
    page and 18.5 ms in another Coral source).
    """
    points, count = x.shape
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    a = (x / scale) / y[:, None]
    objective = np.concatenate([np.zeros(count), np.ones(points)])
    bounds = np.block([[a, -np.eye(points)], [-a, -np.eye(points)]])
    limits = np.concatenate([np.ones(points), -np.ones(points)])
    solution = linprog(objective, A_ub=bounds, b_ub=limits,
                       bounds=[(0, None)] * (count + points), method="highs")
    return solution.x[:count] / scale


#: Constants of the Edge TPU itself, the same chip behind every device, fitted on the points
#: of all devices together; the others belong to a device's link and host CPU.
SHARED = ("array_macs", "channel_macs", "edgetpu_ops", "concat_copy_elements")
PER_DEVICE = tuple(name for name in FEATURES if name not in SHARED)


@dataclass(frozen=True)
class Point:
    """One published figure: a model on a device (``cpu_only``: the host CPU alone)."""

    model: str
    device: str
    ms: float
    features: GraphFeatures
    cpu_only: bool = False


def design(points: list[Point]) -> np.ndarray:
    """Rows of the joint fit: the shared columns, then one block of columns per device."""
    rows = []
    for point in points:
        values = dict(zip(FEATURES, point.features.vector(), strict=True))
        row = [values[name] for name in SHARED]
        for device in FITTED_DEVICES:
            row += [values[name] if device == point.device else 0.0 for name in PER_DEVICE]
        rows.append(row)
    return np.array(rows)


def calibration_from(weights: np.ndarray) -> dict[str, dict[str, float]]:
    """The per-device constants of a joint fit (``pcie``: see :mod:`edgetpu.cost`)."""
    shared = dict(zip(SHARED, weights[: len(SHARED)], strict=True))
    table = {}
    for i, device in enumerate(FITTED_DEVICES):
        block = weights[len(SHARED) + i * len(PER_DEVICE):][: len(PER_DEVICE)]
        constants = {**shared, **dict(zip(PER_DEVICE, block, strict=True))}
        table[device] = {name: float(f"{constants[name]:.4g}") for name in FEATURES}
    pcie_link = {name: table["devboard"][name] for name in ("streamed_bytes", "boundary_bytes")}
    table["pcie"] = dict(table["usb3"], **pcie_link)
    return {device: table[device] for device in ("usb3", "usb2", "pcie", "devboard")}


def leave_model_out(points: list[Point]) -> np.ndarray:
    """Each Edge TPU point predicted by a fit without any point of its model."""
    x, y = design(points), np.array([p.ms for p in points])
    predictions = np.full(len(points), np.nan)
    for model in sorted({p.model for p in points}):
        held = np.array([p.model == model for p in points])
        weights = fit(x[~held], y[~held])
        predictions[held] = x[held] @ weights
    return predictions


def leave_one_out(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each point predicted by a fit on all the others (for the MAC-linear baseline)."""
    predictions = np.empty_like(y)
    for held in range(len(y)):
        keep = np.arange(len(y)) != held
        predictions[held] = x[held] @ fit(x[keep], y[keep])
    return predictions


def errors(predicted: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Median and largest relative error."""
    rel = np.abs(predicted - y) / y
    return {"median_rel_error": round(float(np.median(rel)), 4),
            "max_rel_error": round(float(rel.max()), 4)}


def link_bound_ms(point: Point) -> float:
    """The least time per inference the device's link allows ``point``'s graph: the parameter
    bytes that do not fit even the whole SRAM, moved at the link's peak rate."""
    excess = max(point.features.parameter_bytes - SRAM_BYTES, 0)
    return excess / LINK_PEAK_BYTES_PER_MS[point.device]


def report(points: list[Point]) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Fit all devices jointly on the figures the links allow; return the per-device metrics
    (the figures below their link's bound listed apart) and the constants."""
    kept = [p for p in points if p.ms >= link_bound_ms(p)]
    x, y = design(kept), np.array([p.ms for p in kept])
    weights = fit(x, y)
    fitted = x @ weights
    held_out = leave_model_out(kept)
    devices = {}
    for device in FITTED_DEVICES:
        mine = [i for i, p in enumerate(kept) if p.device == device and not p.cpu_only]
        ys = y[mine]
        macs = np.array([[1.0, float(kept[i].features.macs)] for i in mine])
        linear = leave_one_out(macs, ys)
        peak = np.array([kept[i].features.macs / PEAK_MACS_PER_MS for i in mine])
        in_sample, loo = errors(fitted[mine], ys), errors(held_out[mine], ys)
        devices[device] = {
            "points": len(mine),
            "cpu_only_points": sum(p.device == device and p.cpu_only for p in kept),
            "median_rel_error": in_sample["median_rel_error"],
            "max_rel_error": in_sample["max_rel_error"],
            "loo_median_rel_error": loo["median_rel_error"],
            "loo_max_rel_error": loo["max_rel_error"],
            "baseline_peak": errors(peak, ys),
            "baseline_mac_linear_loo": errors(linear, ys),
            "rows": [{"model": kept[i].model, "published_ms": float(y[i]),
                      "estimated_ms": round(float(fitted[i]), 3),
                      "loo_ms": round(float(held_out[i]), 3),
                      "mac_linear_loo_ms": round(float(m), 3), "peak_ms": round(float(k), 3)}
                     for i, m, k in zip(mine, linear, peak, strict=True)],
            "below_link_bound": [
                {"model": p.model, "published_ms": p.ms,
                 "link_bound_ms": round(link_bound_ms(p), 3),
                 "estimated_ms": round(float(design([p])[0] @ weights), 3)}
                for p in points if p.device == device and p.ms < link_bound_ms(p)],
        }
    return devices, calibration_from(weights)


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
    points: list[Point] = []
    features: dict[str, GraphFeatures] = {}
    for model in MODELS:
        path = model_path(model, args.models)
        # as Coral converted it: with op versions its compiler reads (TF 2.21 raises some)
        mapped = [op.mapped for op in analyze_model(path, any_op_version=True).ops]
        graph = read_model(path)
        features[model.key] = graph_features(graph, mapped)
        on_cpu = graph_features(graph, [False] * len(mapped))
        for device in FITTED_DEVICES:
            if device in published.get(model.key, {}):
                points.append(Point(model.key, device, published[model.key][device]["ms"],
                                    features[model.key]))
            if model.key in cpu_only:
                points.append(Point(model.key, device, cpu_only[model.key][CPU_HOST[device]],
                                    on_cpu, cpu_only=True))
    devices, calibration = report(points)
    result: dict[str, Any] = {
        "devices": devices, "built_seconds": built, "published": published,
        "cpu_only": cpu_only, "features": {k: f.to_dict() for k, f in features.items()},
        "fitted_calibration": calibration, "current_calibration": CALIBRATION,
        "method": "joint fit, Edge TPU constants shared by all devices; minimum summed "
                  "absolute relative error; leave-one-out holds out every figure of a model"}
    _print(result)
    if args.json:
        write_json(args.json, result)
    if args.fit:
        print("CALIBRATION = " + json.dumps(calibration, indent=4))
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
        for row in report["below_link_bound"]:
            err = abs(row["estimated_ms"] - row["published_ms"]) / row["published_ms"]
            print(f"  left out: {row['model']} published {row['published_ms']:.2f} ms, below "
                  f"the {row['link_bound_ms']:.2f} ms its link needs at least (estimate "
                  f"{row['estimated_ms']:.2f}, {err:.1%} off)")


if __name__ == "__main__":
    raise SystemExit(main())
