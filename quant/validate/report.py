"""Write a validation report: ``report.json``, ``report.md`` and PNG plots.

The plots are drawn in a temporary folder; then every file is written to ``out_dir`` as one
group (:func:`edgeq.outputs.atomic_write_all`), so an interrupted run leaves no half-written
report and two runs never mix their files.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from edgeq.errors import printable
from edgeq.outputs import atomic_write_all, write_error

WORST_LAYERS = 15


def write_report(report: dict[str, Any], out_dir: Path,
                 json_copy: Path | None = None) -> list[Path]:
    """Write the report files into ``out_dir`` (created) and return their paths.

    Args:
        report: the dict from :func:`quant.validate.pipeline.run_validation`.
        out_dir: destination folder.
        json_copy: also write ``report.json`` to this path (``--json``).

    Raises:
        BadInputError: a file cannot be written (full disk, no permission); nothing
            half-written is left under a final name.
    """
    with tempfile.TemporaryDirectory(prefix="edgeq-report-") as tmp:
        staging = Path(tmp)
        try:
            plots = write_plots(report, staging)
        except OSError as exc:
            raise write_error(staging, exc) from exc
        files = [(out_dir / p.name, p.read_bytes()) for p in plots]
    report_json = to_json(report).encode()
    # file names that are not UTF-8 appear as \xNN escapes
    markdown = printable(to_markdown(report, [p.name for p, _ in files])).encode()
    files += [(out_dir / "report.json", report_json), (out_dir / "report.md", markdown)]
    if json_copy is not None:
        files.append((json_copy, report_json))
    atomic_write_all(files)
    return [path for path, _ in files]


def to_json(report: dict[str, Any]) -> str:
    """Return the report as JSON (infinite SQNR becomes null)."""
    return json.dumps(_finite(report), indent=2) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_markdown(report: dict[str, Any], plots: list[str]) -> str:
    """Return the human-readable report."""
    lines = ["# Quantization validation", ""]
    ref = report.get("float_model") or {}
    lines += [f"- int8 model: `{report['int8_model']}`",
              f"- float reference: `{ref.get('source')}` ({ref.get('runtime')})" if ref else
              "- float reference: none",
              f"- data: `{report['data']}` ({report.get('images')} images, task "
              f"{report.get('task')})",
              f"- time: {report.get('seconds')} s", ""]
    lines += _verdict(report)
    lines += _accuracy_table(report)
    lines += _agreement(report)
    lines += _layers_table(report)
    lines += _latency_table(report)
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    return "\n".join(lines)


def _verdict(report: dict[str, Any]) -> list[str]:
    drift = report.get("drift_pts")
    if drift is None:
        return ["No drift measured (no float reference).", ""]
    limit = report.get("max_drift_pts")
    status = ""
    if limit is not None:
        status = " - **FAILED**" if report["drift_exceeded"] else " - ok"
        status += f" (limit {limit:.2f})"
    return [f"**Drift: {drift:.2f} points**{status}", ""]


def _accuracy_table(report: dict[str, Any]) -> list[str]:
    keys = ["top1", "top5"] if report.get("task") == "classify" else ["map", "map50"]
    rows = [(name, report[name]) for name in ("float", "int8")
            if isinstance(report.get(name), dict) and report[name]]
    if "map" in report.get("int8_vs_float", {}):
        rows.append(("int8 vs float detections", report["int8_vs_float"]))
    if not rows:
        return []
    lines = ["## Accuracy", "", "| model | " + " | ".join(keys) + " |",
             "|---|" + "---|" * len(keys)]
    for name, values in rows:
        lines.append(f"| {name} | " + " | ".join(f"{values[k]:.4f}" for k in keys) + " |")
    return lines + [""]


def _agreement(report: dict[str, Any]) -> list[str]:
    if "agreement" not in report:
        return []
    sqnr = report["output_sqnr_db"]
    lines = ["## Float vs int8 outputs", "",
             f"- top-1 agreement: {report['agreement']:.4f}",
             f"- top-5 overlap: {report['top5_overlap']:.4f}",
             f"- mean KL(float || int8): {report['kl_mean']:.5f} nats (a uint8 softmax "
             "rounds small probabilities to 0, which inflates it)",
             f"- output SQNR (probabilities): {sqnr:.2f} dB", ""]
    if report.get("disagreements"):
        lines += ["Most frequent disagreements (float class -> int8 class):", ""]
        lines += [f"- {d['float']} -> {d['int8']}: {d['count']}"
                  for d in report["disagreements"][:10]]
        lines.append("")
    return lines


def _layers_table(report: dict[str, Any]) -> list[str]:
    info = report.get("layers")
    if not info:
        return []
    if "skipped" in info:
        return ["## Per-layer error", "", f"Skipped: {info['skipped']}.", ""]
    lines = ["## Per-layer error (worst first)", "",
             f"{len(info['tensors'])} quantized tensors matched, {info['images']} images. "
             "RMSE is in quantization steps (rounding alone gives about 0.29).", "",
             "| # | op | shape | SQNR dB | RMSE/step | tensor |", "|---|---|---|---|---|---|"]
    for e in info["tensors"][:WORST_LAYERS]:
        name = e["name"].split(";")[0]
        lines.append(f"| {e['index']} | {e['op']} | {'x'.join(map(str, e['shape']))} | "
                     f"{e['sqnr_db']:.2f} | {e['rmse_over_scale']:.2f} | `{name}` |")
    return lines + [""]


def _latency_table(report: dict[str, Any]) -> list[str]:
    latency = report.get("latency") or {}
    if "cpu" not in latency:
        return []
    estimated = (latency.get("edgetpu_estimated") or {}).get("ms")
    lines = ["## Latency (CPU, LiteRT XNNPACK)", "",
             "| model | threads | p50 ms | p90 ms | p99 ms | Edge TPU USB 3 (estimated) ms |",
             "|---|---|---|---|---|---|"]
    for threads, models in latency["cpu"]["by_threads"].items():
        for name, s in models.items():
            tpu_ms = f"{estimated['usb3']:.2f} (est.)" if estimated and name == "int8" else "-"
            lines.append(f"| {name} | {threads} | {s['p50']:.2f} | {s['p90']:.2f} | "
                         f"{s['p99']:.2f} | {tpu_ms} |")
    if estimated:
        devices = ", ".join(f"{device} {ms:.2f} ms" for device, ms in estimated.items())
        lines += ["", f"Edge TPU latency of the int8 model, estimated by the cost model from "
                  f"its graph (not measured): {devices}."]
    sizes = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in latency["model_bytes"].items())
    edgetpu = latency.get("edgetpu", {})
    tpu = (f"Edge TPU: skipped ({edgetpu['skipped']})" if "skipped" in edgetpu
           else f"Edge TPU ({edgetpu.get('device')}): p50 {edgetpu.get('p50', 0):.2f} ms")
    return lines + ["", f"Model sizes: {sizes}.", "", tpu + ".", ""]


def write_plots(report: dict[str, Any], folder: Path) -> list[Path]:
    """Draw the per-layer error, latency and disagreement plots; return the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    info = report.get("layers") or {}
    if info.get("tensors"):
        tensors = sorted(info["tensors"], key=lambda e: e["index"])
        fig, ax = plt.subplots(figsize=(10, 4))
        ax.plot([e["index"] for e in tensors],
                [min(e["sqnr_db"], 80.0) for e in tensors], marker="o", markersize=3)
        ax.set(xlabel="op index in the int8 model", ylabel="SQNR (dB)",
               title="Per-layer SQNR of int8 activations vs float")
        ax.grid(alpha=0.3)
        written.append(_save(fig, folder / "layer_sqnr.png"))
    cpu = (report.get("latency") or {}).get("cpu")
    if cpu:
        fig, ax = plt.subplots(figsize=(6, 4))
        labels, values = [], []
        for threads, models in cpu["by_threads"].items():
            for name, stats in models.items():
                labels.append(f"{name}\n{threads} thr")
                values.append(stats["p50"])
        ax.bar(labels, values, color="tab:blue")
        ax.set(ylabel="p50 latency (ms)", title="CPU latency (LiteRT)")
        written.append(_save(fig, folder / "latency.png"))
    if report.get("disagreements"):
        pairs = report["disagreements"][:15]
        fig, ax = plt.subplots(figsize=(7, 5))
        ax.barh([f"{d['float']} -> {d['int8']}" for d in pairs][::-1],
                [d["count"] for d in pairs][::-1], color="tab:orange")
        ax.set(xlabel="images", title="Top-1 disagreements (float -> int8 class)")
        written.append(_save(fig, folder / "disagreements.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
