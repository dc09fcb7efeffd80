"""validate-quant: accuracy drift, per-layer error and latency of an int8 model vs its float one.

Examples::

    validate-quant --int8 out/mobilenet_v2_1.0_224_int8.tflite --data images/ \\
        --labels labels.csv --max-drift 1.5       # the float model from the sidecar
    validate-quant --float mobilenet_v2_1.0_224 --int8 out/mobilenet_v2_1.0_224_int8.tflite \\
        --data images/ --labels labels.csv --max-drift 1.5
    validate-quant --float float.tflite --int8 int8.tflite --data images/   # agreement only
    validate-quant --int8 ssd_int8.tflite --data val2017/ \\
        --annotations instances_val2017.json --json report.json

Without --float, the float reference and its preprocessing are those recorded in the int8
model's sidecar (``NAME.json`` beside ``NAME.tflite``, written by quantize and carried by
compile-edgetpu); without either, the int8 model is scored alone against the labels or
annotations. Images are decoded once and fed to both models. Labels: a CSV ``file,label``,
or a folder per class; 1001-output models (TF-slim, 0 = background) get +1 on 0-based labels.
Drift (points): top-1 drop with labels, else 100 x (1 - top-1 agreement); detection: mAP
drop with annotations, else 100 x (1 - mAP of int8 against float detections).

Writes ``report.md``, ``report.json`` and PNG plots to ``<out>/validate-<int8 name>/``.
Exit codes: 0 ok, 1 drift above --max-drift, 2 bad input, 3 Edge TPU runtime missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeq.errors import BadInputError, CheckFailedError, cli_entry
from edgeq.images import cpu_count
from edgeq.logs import add_verbose_argument
from edgeq.outputs import check_out_dir
from edgeq.paths import DEFAULT_OUT
from quant.cli._args import add_preprocess_arguments, preprocess_options
from quant.modes import Engine, choices

PROG = "validate-quant"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``validate-quant``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models = parser.add_argument_group("models")
    models.add_argument("--int8", type=Path, required=True, help="quantized .tflite to check")
    models.add_argument("--float", dest="float_ref", metavar="REF",
                        help="float reference: .tflite, zoo name, checkpoint .tgz, "
                             ".keras/.h5 file or SavedModel folder (default: the one in the "
                             "int8 model's sidecar, NAME.json beside NAME.tflite)")
    models.add_argument("--device", help="Edge TPU device for a compiled int8 model "
                        "(':0', 'usb', 'usb:N', 'pci', 'pci:N')")
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, required=True, help="image folder")
    data.add_argument("--labels", type=Path, help="CSV file,label (classification)")
    data.add_argument("--label-offset", type=int,
                      help="added to labels to get output indices (default: +1 for 1001 "
                           "outputs and 0-based labels, else 0)")
    data.add_argument("--annotations", type=Path, help="COCO instances JSON (detection)")
    data.add_argument("--limit", type=int, help="use only the first N images")
    add_preprocess_arguments(parser, "preprocessing (default: the model's, else [-1, 1] RGB)")
    run = parser.add_argument_group("run")
    run.add_argument("--max-drift", type=float, metavar="PTS",
                     help="exit 1 when the drift exceeds PTS percentage points")
    run.add_argument("--threads", type=int, help="CPU threads in all (default: all cores), "
                     "shared by the workers")
    run.add_argument("--workers", type=int, default=cpu_count(),
                     help="parallel interpreters, each in its own process (default: the "
                          f"cores, {cpu_count()})")
    run.add_argument("--engine", choices=choices(Engine), default=Engine.LOCAL,
                     help="local worker processes (default) or Ray actors (pip install "
                          "'edgetpu-quant[ray]')")
    run.add_argument("--ray-address", metavar="ADDR",
                     help="a running Ray cluster for --engine ray (default: start a local "
                          "one); model and images must be readable on every node")
    run.add_argument("--layer-images", type=int, default=8,
                     help="images for the per-layer error (default 8; 0 skips it)")
    run.add_argument("--latency-runs", type=int, default=50,
                     help="timed runs per model and thread count (default 50; 0 skips)")
    run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (./out)")
    run.add_argument("--json", type=Path, metavar="FILE", help="also write report.json here")
    add_verbose_argument(parser)
    return parser


@cli_entry(PROG, "the finished batches are kept under --out: the same command resumes "
               "from them")
def main(argv: list[str] | None = None) -> int:
    """Run ``validate-quant``; see the module docstring."""
    args = build_parser().parse_args(argv)
    import matplotlib  # noqa: F401  (the report's plots; before any work, not after it)

    for name in ("limit", "threads", "workers"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise BadInputError(f"--{name} must be positive, got {value}")
    check_out_dir(args.out)
    if args.json is not None:
        if args.json.is_dir():
            raise BadInputError(f"--json {args.json}: this is a folder; pass a file name such "
                                "as report.json")
        check_out_dir(args.json.parent, "--json")
    if args.ray_address and args.engine != Engine.RAY:
        raise BadInputError("--ray-address is for --engine ray")
    from quant.validate.pipeline import ValidateConfig, run_validation
    from quant.validate.report import write_report
    from quant.validate.stream import Engine as Workers

    out_dir = args.out / f"validate-{args.int8.stem}"
    config = ValidateConfig(
        int8=args.int8, data=args.data, float_ref=args.float_ref, labels=args.labels,
        annotations=args.annotations, max_drift=args.max_drift, limit=args.limit,
        layer_images=args.layer_images, latency_runs=args.latency_runs,
        num_threads=args.threads, device=args.device,
        preprocess_options=preprocess_options(args), label_offset=args.label_offset,
        engine=Workers(args.workers, args.engine == Engine.RAY, args.ray_address),
        work_dir=out_dir / "batches",
    )
    report = run_validation(config)
    for path in write_report(report, out_dir, args.json):
        print(path)
    print(_summary(report), file=sys.stderr)
    if report["drift_exceeded"]:
        raise CheckFailedError(
            f"drift {report['drift_pts']:.2f} points exceeds --max-drift {args.max_drift}; "
            f"see {out_dir / 'report.md'}"
        )
    return 0


def _summary(report: dict) -> str:
    parts = []
    for name in ("float", "int8"):
        values = report.get(name) or {}
        parts += [f"{name} {k} {v:.4f}" for k, v in values.items()]
    if "agreement" in report:
        parts.append(f"agreement {report['agreement']:.4f}")
    if report.get("drift_pts") is not None:
        parts.append(f"drift {report['drift_pts']:.2f} pts")
    parts.append(f"{report['seconds']} s")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
