"""Analyzer benchmark: the offline prediction against the real edgetpu_compiler.

For every source / compiled pair in ``../shared/data/coral`` (Coral's models and what the
real compiler made of them), compare the multiset of ops the analyzer puts on the CPU with
the ops the compiler left outside ``edgetpu-custom-op``. The other models there (single
source models, and the ``pipeline/`` segments compiled with ``-n 2`` whose source is not
included) have no counterpart to compare with; they are listed with what the analyzer reads
or predicts for them. Prints a table and writes JSON::

    python scripts/bench_analyzer.py --json out/bench_analyzer.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgetpu.analyze import analyze_model
from quant.paths import shared_data_dir


def find_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """Return ``(source, compiled)`` pairs: every ``X_edgetpu.tflite`` with its ``X.tflite``."""
    pairs = []
    for compiled in sorted(folder.glob("*_edgetpu.tflite")):
        source = compiled.with_name(compiled.name.replace("_edgetpu.tflite", ".tflite"))
        if source.is_file():
            pairs.append((source, compiled))
    return pairs


def compare(source: Path, compiled: Path) -> dict:
    """Return the predicted and real CPU ops of one pair and whether they agree."""
    start = time.perf_counter()
    predicted = analyze_model(source)
    elapsed = time.perf_counter() - start
    real = analyze_model(compiled)
    return {
        "model": source.stem,
        "ops": predicted.summary["ops"],
        "predicted_cpu_ops": dict(sorted(predicted.cpu_ops.items())),
        "real_cpu_ops": dict(sorted(real.cpu_ops.items())),
        "exact": predicted.cpu_ops == real.cpu_ops,
        "analyze_seconds": round(elapsed, 4),
    }


def describe_others(folder: Path, pairs: list[tuple[Path, Path]]) -> list[dict]:
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


def main() -> int:
    """Run the benchmark; exit 1 when a pair differs."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=shared_data_dir() / "coral",
                        help="folder with *.tflite / *_edgetpu.tflite pairs")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    pairs = find_pairs(args.data)
    if not pairs:
        parser.error(f"no *_edgetpu.tflite pairs in {args.data}")
    rows = [compare(source, compiled) for source, compiled in pairs]
    print(f"{'model':<50} {'ops':>4} {'exact':>6}  predicted CPU ops / real CPU ops")
    for row in rows:
        print(f"{row['model']:<50} {row['ops']:>4} {str(row['exact']):>6}  "
              f"{row['predicted_cpu_ops'] or '{}'} / {row['real_cpu_ops'] or '{}'}")
    others = describe_others(args.data, pairs)
    print(f"\n{'other model (no counterpart)':<80} {'ops':>4}  CPU ops")
    for row in others:
        kind = "compiled" if row["compiled"] else "predicted"
        print(f"{row['model']:<80} {row['ops']:>4}  {kind}: {row['cpu_ops'] or '{}'}")
    result = {"pairs_total": len(rows), "pairs_exact": sum(r["exact"] for r in rows),
              "pairs": rows, "others": others}
    print(f"exact: {result['pairs_exact']} of {result['pairs_total']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["pairs_exact"] == result["pairs_total"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
