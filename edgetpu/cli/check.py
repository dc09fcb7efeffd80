"""edgetpu-check: predict, offline, what edgetpu_compiler maps to the Edge TPU, and why.

Examples::

    edgetpu-check out/mobilenet_v2_1.0_224_int8.tflite
    edgetpu-check model.tflite --json > mapping.json
    edgetpu-check model.tflite -a            # as with edgetpu_compiler -a
    edgetpu-check model_edgetpu.tflite       # a compiled model: Edge TPU ops, CPU leftovers
    edgetpu-check model.tflite --compiler-version 15 -m 13   # an older compiler / runtime
    edgetpu-check yolo.tflite -i NAME1,NAME2 # end the Edge TPU part at these tensors

The model is read as a flatbuffer (no interpreter, no compiler needed). The table uses the
compiler's own format and status texts; a summary and the fix for each problem follow, then
the cost model's estimate for a source model (MACs, parameter cache use, latency on USB 3,
USB 2 and PCIe: an estimate calibrated on Coral's published latencies, not a measurement).
Each op's verdict says which rule decided it and whether that rule was seen in a real
compile or is inferred (``*`` in the table). When ops stay on the CPU after the Edge TPU part,
the report ends with the ``-i`` cut that keeps the Edge TPU part whole and the
``compile-edgetpu`` command with it; when the compilation would fail, with the change that
fixes it. ``--json`` prints ``{"ops": [{"index", "opcode", "mapped", "status", "reason",
"rule", "confidence", ...}], "summary": {...}, "cost": {...}}``.

Exit codes: 0 every op maps (a trailing TFLite_Detection_PostProcess is expected on the CPU),
or the model is already compiled; 1 some ops would run on the CPU or the compilation would
fail; 2 the file is missing or not a TFLite model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeq.errors import EXIT_CHECK_FAILED, cli_entry

PROG = "edgetpu-check"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``edgetpu-check``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", type=Path, help="a .tflite model (source or *_edgetpu.tflite)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the report")
    parser.add_argument("-a", "--enable-multiple-subgraphs", action="store_true",
                        help="predict for edgetpu_compiler -a (several Edge TPU subgraphs)")
    add_prediction_options(parser)
    return parser


def add_prediction_options(parser: argparse.ArgumentParser, with_cut: bool = True) -> None:
    """Add ``--compiler-version`` and ``-m`` (and ``-i`` with ``with_cut``) to a parser."""
    from edgetpu.compiler_versions import CURRENT, RELEASES

    parser.add_argument("--compiler-version", default=CURRENT.version, metavar="VERSION",
                        help="edgetpu_compiler release to predict for: "
                        + ", ".join(r.version for r in RELEASES)
                        + f" (default {CURRENT.version}); op support grew between them")
    parser.add_argument("-m", "--min-runtime-version", type=int, metavar="N",
                        help="lowest Edge TPU runtime to support, as edgetpu_compiler -m "
                        "(default: the compiler's newest; 14 for 16.0); ops a runtime lacks "
                        "stay on the CPU")
    if with_cut:
        parser.add_argument("-i", "--intermediate-tensors", metavar="NAMES",
                            help="comma-separated tensor names where the Edge TPU part ends, "
                            "as edgetpu_compiler -i")


def split_names(text: str | None) -> tuple[str, ...]:
    """Split a comma-separated ``-i`` value into tensor names."""
    return tuple(name for name in (text or "").split(",") if name)


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    """Run ``edgetpu-check``; see the module docstring."""
    args = build_parser().parse_args(argv)
    from edgetpu.analyze import analyze_model, format_report

    analysis = analyze_model(args.model, args.enable_multiple_subgraphs,
                             compiler_version=args.compiler_version,
                             min_runtime_version=args.min_runtime_version,
                             intermediate_tensors=split_names(args.intermediate_tensors))
    estimate = None
    if not analysis.compiled:
        from edgetpu.cost import estimate_model
        from edgetpu.tflite_model import read_model

        estimate = estimate_model(read_model(args.model), None,
                                  [op.mapped for op in analysis.ops])
    if args.json:
        data = analysis.to_json()
        data["cost"] = estimate.to_dict() if estimate else None
        print(json.dumps(data, indent=2))
    else:
        print(format_report(analysis))
        if estimate:
            print(_format_estimate(estimate))
    if analysis.compiled or analysis.fully_mapped:
        return 0
    if not args.json:
        print(f"{args.model}: not every op maps to the Edge TPU (see above)", file=sys.stderr)
    return EXIT_CHECK_FAILED


def _format_estimate(estimate) -> str:
    ms = estimate.latency_ms
    features = estimate.features
    return (f"Estimate (cost model, not a measurement): {estimate.macs / 1e6:,.0f} M MACs on "
            f"the Edge TPU; parameters {features.cached_bytes:,} bytes cached on chip, "
            f"{features.streamed_bytes:,} streamed; about {ms['usb3']:.1f} ms on USB 3, "
            f"{ms['usb2']:.1f} ms on USB 2, {ms['pcie']:.1f} ms on PCIe, {ms['devboard']:.1f} ms "
            "on the Dev Board")


if __name__ == "__main__":
    sys.exit(main())
