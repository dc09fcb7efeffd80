"""``quantize --list`` / ``--recommend``: browse the zoo and pick a model (no TensorFlow)."""

from __future__ import annotations

import argparse
import json

from quant import zoo
from quant.errors import EXIT_CHECK_FAILED

_COLUMNS = (
    ("name", lambda s: s.name),
    ("task", lambda s: s.task),
    ("input", lambda s: s.input_size or "-"),
    ("MACs(M)", lambda s: s.macs_m),
    ("params(M)", lambda s: s.params_m),
    ("top1/mAP", lambda s: s.top1 if s.task == "classify" else s.map),
    ("top5", lambda s: s.top5),
    ("latency(ms)", lambda s: s.latency_ms),
    ("latency on", lambda s: s.latency_device),
    ("EdgeTPU", lambda s: "yes" if s.edgetpu_capable else "no"),
)


def add_listing_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--list``, ``--recommend``, ``--json`` and the zoo filters to ``parser``."""
    parser.add_argument("--list", action="store_true", help="print the model zoo and exit")
    parser.add_argument("--recommend", action="store_true",
                        help="name the smallest zoo model meeting the filters and exit")
    parser.add_argument("--json", action="store_true", help="print --list/--recommend as JSON")
    parser.add_argument("--task", choices=zoo.TASKS, help="classify or detect")
    parser.add_argument("--max-macs", type=float, metavar="M", help="at most M million MACs")
    parser.add_argument("--max-params", type=float, metavar="M",
                        help="at most M million parameters")
    parser.add_argument("--max-latency-ms", type=float, metavar="MS",
                        help="published latency at most MS (on the table's device)")
    parser.add_argument("--min-top1", type=float, metavar="PCT",
                        help="published top-1 (classifiers) or mAP (detectors) at least PCT")
    parser.add_argument("--input-size", type=int, metavar="PX", help="input side PX pixels")
    parser.add_argument("--edgetpu-only", action="store_true",
                        help="only models that can run on the Edge TPU")
    parser.add_argument("--sort", choices=zoo.SORT_KEYS, default="name", help="sort key")


def _constraints(args: argparse.Namespace) -> dict:
    return {"task": args.task, "max_macs": args.max_macs, "max_params": args.max_params,
            "max_latency_ms": args.max_latency_ms, "min_top1": args.min_top1,
            "input_size": args.input_size, "edgetpu_only": args.edgetpu_only}


def format_table(specs: list[zoo.ModelSpec]) -> str:
    """Return the specs as an aligned text table."""
    rows = [[title for title, _ in _COLUMNS]]
    rows += [["-" if (v := get(spec)) is None else str(v) for _, get in _COLUMNS]
             for spec in specs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in rows)


def run_listing(args: argparse.Namespace) -> int:
    """Print the filtered zoo (``--list``) or the recommended model; return the exit code."""
    constraints = _constraints(args)
    if args.recommend:
        spec = zoo.recommend(**constraints)
        if spec is None:
            given = ", ".join(f"{k}={v}" for k, v in constraints.items() if v not in (None, False))
            print(f"no zoo model meets {given or 'the filters'}")
            return EXIT_CHECK_FAILED
        if args.json:
            print(json.dumps(spec.to_dict(), indent=2))
        else:
            count = len(zoo.select_models(**constraints))
            print(f"{spec.name}: the smallest of the {count} models meeting the filters "
                  f"({spec.macs_m or '?'} M MACs, {spec.params_m or '?'} M params, "
                  f"{'top-1' if spec.task == 'classify' else 'mAP'} "
                  f"{spec.top1 if spec.task == 'classify' else spec.map})")
            print(f"  quantize --model {spec.name}")
        return 0
    specs = zoo.select_models(sort=args.sort, **constraints)
    if args.json:
        print(json.dumps([spec.to_dict() for spec in specs], indent=2))
    else:
        print(format_table(specs))
        print(f"{len(specs)} models")
    return 0
