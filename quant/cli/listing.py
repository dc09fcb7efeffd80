"""``quantize --list`` / ``--recommend``: browse the model zoo and pick a model (no TensorFlow).

Examples::

    quantize --list --task classify --max-macs 100 --sort top1
    quantize --list --json --edgetpu-only --task detect
    quantize --list --device usb2 --max-latency-ms 10 --sort coral
    quantize --recommend --task classify --min-top1 70 --max-latency-ms 60

The filtering and the choice live in :mod:`quant.zoo`; this module only formats. Published
timings keep the device of their table (``timed on``: a Pixel phone's CPU, a GTX TITAN X...);
the Coral Edge TPU column is an estimate from each buildable row's graph
(:func:`quant.zoo.edgetpu_latency_ms`), never a published figure. ``--recommend`` proposes
only buildable rows, ranked by that estimate, and exits 1 when no model meets the filters.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from edgeq.errors import EXIT_CHECK_FAILED, EXIT_OK, BadInputError
from quant import zoo

_FLAGS = {"task": "--task", "max_macs": "--max-macs", "max_params": "--max-params",
          "max_latency_ms": "--max-latency-ms", "min_top1": "--min-top1",
          "min_map": "--min-map", "input_size": "--input-size",
          "edgetpu_only": "--edgetpu-only", "buildable_only": "--buildable-only",
          "device": "--device"}

_COLUMNS: tuple[tuple[str, Callable[[zoo.ModelSpec], object]], ...] = (
    ("name", lambda s: s.name),
    ("task", lambda s: s.task),
    ("input", lambda s: s.input_size),
    ("MACs(M)", lambda s: s.macs_m),
    ("params(M)", lambda s: s.params_m),
    ("top1", lambda s: s.top1),
    ("top5", lambda s: s.top5),
    ("mAP", lambda s: s.map),
    ("published ms", lambda s: s.published_latency_ms),
    ("timed on", lambda s: s.timing),
    ("EdgeTPU", lambda s: "yes" if s.edgetpu_capable else "no"),
    ("buildable", lambda s: "yes" if s.buildable else "no"),
)


#: Help of the listing's ``--device``.
DEVICE_HELP = ("Coral device of the latency estimate: usb3 (default), usb2, pcie, devboard; "
               "given, --max-latency-ms filters on the estimate")


def estimate_title(device: str) -> str:
    """Header of the estimated Coral latency column (``Coral USB3 est. ms``)."""
    return f"Coral {zoo.DEVICE_LABELS[device].replace(' ', '')} est. ms"


def _estimate(spec: zoo.ModelSpec, device: str) -> str | None:
    latency = zoo.edgetpu_latency_ms(spec.name)
    return None if latency is None else f"{latency[device]:.2f}"


def add_listing_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                          device: bool = True) -> None:
    """Add ``--list``, ``--json``, ``--recommend``, the zoo filters and ``--sort`` to ``parser``.

    Args:
        parser: the parser or argument group.
        device: add ``--device`` too (False where the command defines ``--device`` itself and
            accepts :data:`DEVICE_HELP`'s values, as ``quantize`` does).
    """
    parser.add_argument("--list", action="store_true", help="print the model zoo and exit")
    parser.add_argument("--recommend", action="store_true",
                        help="name the buildable zoo model meeting the filters with the "
                        "lowest estimated Coral latency on --device and exit (exit 1 when "
                        "none does)")
    parser.add_argument("--json", action="store_true", help="print --list/--recommend as JSON")
    parser.add_argument("--task", choices=zoo.TASKS, help="only classify or detect models")
    parser.add_argument("--max-macs", type=float, metavar="M",
                        help="published MACs at most M million")
    parser.add_argument("--max-params", type=float, metavar="M",
                        help="published parameters at most M million")
    parser.add_argument("--max-latency-ms", type=float, metavar="MS",
                        help="with --device: estimated Coral latency on that device at most "
                        "MS ms; without: published timing at most MS ms, on the device of its "
                        "table (classifiers: Pixel 1 CPU)")
    parser.add_argument("--min-top1", type=float, metavar="PCT",
                        help="published ImageNet top-1 at least PCT %%")
    parser.add_argument("--min-map", type=float, metavar="PCT",
                        help="published detection mAP (the table's metric) at least PCT")
    parser.add_argument("--input-size", type=int, metavar="PX", help="square input side PX")
    parser.add_argument("--edgetpu-only", action="store_true",
                        help="only models whose network can map to the Edge TPU")
    parser.add_argument("--buildable-only", action="store_true",
                        help="only models this tool can build and quantize (quantize --model)")
    if device:
        parser.add_argument("--device", choices=zoo.DEVICES, help=DEVICE_HELP)
    parser.add_argument("--sort", choices=zoo.SORT_KEYS, default="table",
                        help="sort key for --list (default: table, the published order; "
                        "latency: published timing; coral: the Coral estimate on --device)")


def constraints_from_args(args: argparse.Namespace) -> zoo.Constraints:
    """Return the zoo constraints given on the command line.

    Raises:
        BadInputError: ``--device`` names no Coral device (``quantize`` shares the flag with
            the QAT training device).
    """
    device = getattr(args, "device", None)
    if device is not None and device not in zoo.DEVICES:
        raise BadInputError(f"--device {device} is a training device; with --list or "
                            f"--recommend give a Coral device: {', '.join(zoo.DEVICES)}")
    return zoo.Constraints(**{key: getattr(args, key, None) for key in _FLAGS})


def format_table(specs: list[zoo.ModelSpec], device: str = zoo.DEFAULT_DEVICE) -> str:
    """Return the specs as an aligned text table, one row per model ("-": not published, or
    no estimate because the row is not buildable)."""
    columns = (*_COLUMNS, (estimate_title(device), lambda s: _estimate(s, device)))
    rows = [[title for title, _ in columns]]
    rows += [["-" if (value := get(spec)) is None else str(value) for _, get in columns]
             for spec in specs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip() for row in rows)


def _describe(constraints: zoo.Constraints) -> str:
    given = constraints.given()
    if not given:
        return "no filters"
    return " ".join(_FLAGS[key] if value is True else f"{_FLAGS[key]} {value:g}"
                    if isinstance(value, float) else f"{_FLAGS[key]} {value}"
                    for key, value in given.items())


def _why(result: zoo.Recommendation, constraints: zoo.Constraints) -> str:
    spec = result.spec
    figures = [text for text, value in (
        (f"{spec.macs_m} M MACs", spec.macs_m), (f"{spec.params_m} M params", spec.params_m),
        (f"top-1 {spec.top1}%", spec.top1), (f"{spec.map_metric} {spec.map}", spec.map),
        (f"{spec.published_latency_ms} ms ({spec.timing})", spec.published_latency_ms),
    ) if value is not None]
    best = "the fastest" if result.device else "the smallest"
    lines = [f"{spec.name}: {best} of {result.candidates} buildable zoo models meeting "
             f"{_describe(constraints)} (ranked by {result.ranked_by})",
             "  published: " + (", ".join(figures) or "no figures")]
    latency = zoo.edgetpu_latency_ms(spec.name)
    if latency is not None:
        lines.append("  Coral Edge TPU estimate (from the graph, not measured): " + ", ".join(
            f"{zoo.DEVICE_LABELS[d]} {latency[d]:.2f} ms" for d in zoo.DEVICES if d in latency))
    if result.limiting:
        lines.append(f"  most limiting filter: {_FLAGS[result.limiting]} "
                     f"(alone it leaves {result.limiting_count} models)")
    lines.append(f"  Edge TPU: {'yes' if spec.edgetpu_capable else 'no'} ({spec.edgetpu_note})")
    lines.append(f"  next: quantize --model {spec.name}")
    return "\n".join(lines)


def run_listing(args: argparse.Namespace) -> int:
    """Print the filtered zoo (``--list``) or the recommended model; return the exit code.

    Returns:
        0, or 1 when ``--recommend`` finds no model meeting the filters.
    """
    constraints = constraints_from_args(args)
    if args.recommend:
        result = zoo.recommend(constraints)
        if result.spec is None:
            print(f"no buildable zoo model meets {_describe(constraints)}")
            others = [s.name for s in zoo.select_models(constraints) if not s.buildable]
            if others:
                print(f"  {len(others)} zoo models meet them that this tool cannot build: "
                      f"{', '.join(others[:5])}{', ...' if len(others) > 5 else ''}")
            return EXIT_CHECK_FAILED
        if args.json:
            print(json.dumps({"recommended": _row(result.spec),
                              "candidates": result.candidates,
                              "most_limiting": result.limiting and _FLAGS[result.limiting],
                              "ranked_by": result.ranked_by, "device": result.device},
                             indent=2))
        else:
            print(_why(result, constraints))
        return EXIT_OK
    specs = zoo.select_models(constraints, sort=args.sort)
    if args.json:
        print(json.dumps([_row(spec) for spec in specs], indent=2))
    else:
        device = constraints.device or zoo.DEFAULT_DEVICE
        print(format_table(specs, device))
        print(f"{len(specs)} of {len(zoo.list_models())} models ({_describe(constraints)}); "
              f"{estimate_title(device)}: estimated from the graph, not measured")
    return EXIT_OK


def _row(spec: zoo.ModelSpec) -> dict:
    """A spec as JSON with ``edgetpu_latency_ms`` (per device) and ``edgetpu_cpu_ops`` (what
    the analyzer leaves on the CPU after our PTQ); null when not buildable."""
    return {**spec.to_dict(), "edgetpu_latency_ms": zoo.edgetpu_latency_ms(spec.name),
            "edgetpu_cpu_ops": zoo.edgetpu_cpu_ops(spec.name)}
