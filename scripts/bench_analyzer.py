"""Analyzer benchmark: the offline prediction against the real edgetpu_compiler.

For every source / compiled pair (``X.tflite`` beside ``X_edgetpu.tflite``) in
``../shared/data/coral`` (Coral's models) and ``../shared/data/coral_wild`` (models people
compiled themselves, compilers 2.0 to 16.0), compare the multiset of ops the analyzer puts on
the CPU with the ops the compiler left outside ``edgetpu-custom-op``. Where the compiler's own
log ``X.log`` exists, also compare the analyzer's per-op table, as (operator, count, status)
rows, with the log's table, predicting for the compiler version the log names. A compiled
model holding several Edge TPU segments was compiled with ``-a`` and is predicted with it.
Models without a counterpart (single models, pipeline segments) are listed with what the
analyzer reads or predicts. Prints a table and writes JSON::

    python scripts/bench_analyzer.py --json out/bench_analyzer.json
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

from edgeq.outputs import write_json
from edgeq.paths import shared_data_dir
from edgetpu.analyze import analyze_model, compiler_table
from edgetpu.compiler import parse_log


def find_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """Return ``(source, compiled)`` pairs: every ``X_edgetpu.tflite`` with its ``X.tflite``."""
    pairs = []
    for compiled in sorted(folder.glob("*_edgetpu.tflite")):
        source = compiled.with_name(compiled.name.replace("_edgetpu.tflite", ".tflite"))
        if source.is_file():
            pairs.append((source, compiled))
    return pairs


def compare(source: Path, compiled: Path) -> dict[str, Any]:
    """Return the predicted and real CPU ops (and log tables) of one pair."""
    real = analyze_model(compiled)
    segments = real.summary["edgetpu_custom_ops"]
    log_path = source.with_suffix(".log")
    log = parse_log(log_path.read_text(errors="replace")) if log_path.is_file() else None
    version = log.version if log and log.version else None
    start = time.perf_counter()
    predicted = analyze_model(source, enable_multiple_subgraphs=segments > 1,
                              compiler_version=version)
    elapsed = time.perf_counter() - start
    row: dict[str, Any] = {
        "model": source.stem,
        "folder": source.parent.name,
        "compiler_version": version or "unknown (predicted for "
                                       f"{predicted.summary['compiler_version']})",
        "flag_a": segments > 1,
        "ops": predicted.summary["ops"],
        "inferred_ops": predicted.summary["inferred_ops"],
        "predicted_cpu_ops": dict(sorted(predicted.cpu_ops.items())),
        "real_cpu_ops": dict(sorted(real.cpu_ops.items())),
        "exact": predicted.cpu_ops == real.cpu_ops,
        "log": log is not None,
        "analyze_seconds": round(elapsed, 4),
    }
    if log is not None:
        ours = Counter({(name, status): count
                        for name, count, status in compiler_table(predicted.ops)})
        theirs: Counter[tuple[str, str]] = Counter()
        for op in log.operators:
            theirs[(op.operator, op.status)] += op.count
        row["log_exact"] = ours == theirs
        row["log_differences"] = [
            {"operator": name, "status": status, "predicted": ours[(name, status)],
             "log": theirs[(name, status)]}
            for name, status in sorted(set(ours) | set(theirs))
            if ours[(name, status)] != theirs[(name, status)]]
    return row


def describe_others(folder: Path, pairs: list[tuple[Path, Path]]) -> list[dict[str, Any]]:
    """Return the analyzer's view of every model in ``folder`` (and below) not in a pair."""
    paired = {p for pair in pairs for p in pair}
    rows = []
    for path in sorted(folder.rglob("*.tflite")):
        if path in paired:
            continue
        analysis = analyze_model(path)
        summary = analysis.summary
        rows.append({"model": str(path.relative_to(folder)), "compiled": analysis.compiled,
                     "ops": summary["ops"], "cpu_ops": dict(sorted(analysis.cpu_ops.items())),
                     "fully_mapped": analysis.fully_mapped,
                     "segment": summary.get("segment"),
                     "edgetpu_payload_bytes": summary.get("edgetpu_payload_bytes")})
    return rows


def _cell(ops: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in ops.items()) or "-"


def main() -> int:
    """Run the benchmark; exit 1 when a pair or a log table differs."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = shared_data_dir()
    parser.add_argument("--data", type=Path, action="append",
                        help="folder with *.tflite / *_edgetpu.tflite pairs (repeatable; "
                             f"default {shared / 'coral'} and {shared / 'coral_wild'})")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    folders = args.data or [shared / "coral", shared / "coral_wild"]
    rows, others = [], []
    for folder in folders:
        pairs = find_pairs(folder)
        if not pairs:
            parser.error(f"no *_edgetpu.tflite pairs in {folder}")
        rows += [compare(source, compiled) for source, compiled in pairs]
        others += [dict(row, folder=folder.name) for row in describe_others(folder, pairs)]
    print(f"{'model':<48} {'compiler':<15} {'ops':>4} {'-a':>3} {'exact':>6} {'log':>5}  "
          "real CPU ops (predicted when different)")
    for row in rows:
        log = {True: "yes", False: "NO"}.get(row.get("log_exact"), "-")
        version = row["compiler_version"].split(" ")[0]
        cell = _cell(row["real_cpu_ops"])
        if not row["exact"]:
            cell += f"  (predicted: {_cell(row['predicted_cpu_ops'])})"
        print(f"{row['model']:<48} {version:<15} {row['ops']:>4} "
              f"{'yes' if row['flag_a'] else '':>3} {str(row['exact']):>6} {log:>5}  {cell}")
    print(f"\n{'other model (no counterpart)':<80} {'ops':>4}  CPU ops")
    for row in others:
        kind = "compiled" if row["compiled"] else "predicted"
        print(f"{row['folder'] + '/' + row['model']:<80} {row['ops']:>4}  {kind}: "
              f"{_cell(row['cpu_ops'])}")
    logged = [row for row in rows if row["log"]]
    result = {"pairs_total": len(rows), "pairs_exact": sum(r["exact"] for r in rows),
              "log_pairs": len(logged), "log_status_exact": sum(r["log_exact"] for r in logged),
              "pairs": rows, "others": others}
    print(f"\nCPU ops exact: {result['pairs_exact']} of {result['pairs_total']} pairs; "
          f"log tables exact: {result['log_status_exact']} of {result['log_pairs']}")
    if args.json:
        write_json(args.json, result)
    exact = (result["pairs_exact"] == result["pairs_total"]
             and result["log_status_exact"] == result["log_pairs"])
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
