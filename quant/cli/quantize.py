"""quantize: a float model (zoo name, checkpoint, Keras file, SavedModel) -> int8 .tflite.

Examples::

    quantize --list --task classify --max-macs 100
    quantize --recommend --task detect --edgetpu-only
    quantize --model mobilenet_v2_1.0_224
    quantize --model mobilenet_v2_1.0_224 --checkpoint mobilenet_v2_1.0_224.tgz \\
        --calib-dir images/ --out out/
    quantize --model my_model.keras --input-range=-1,1 --calib-dir images/ --per-tensor
    quantize --model mobilenet_v2_1.0_224 --method qat --train-records '/data/train-*' \
        --strategy mirrored --epochs 1

Writes ``<out>/<model>_int8.tflite`` with a JSON sidecar and a Markdown summary.
Exit codes: 0 ok, 2 bad input, 3 a download or tool is needed but missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeq.errors import BadInputError, cli_entry
from edgeq.logs import add_verbose_argument
from edgeq.outputs import check_out_dir
from edgeq.paths import DEFAULT_OUT
from quant import zoo
from quant.cli._args import add_preprocess_arguments, preprocess_options
from quant.cli.listing import DEVICE_HELP, add_listing_arguments, run_listing
from quant.modes import IoType, Method, RangeMethod, Strategy, Switch, TrainingDevice, choices
from quant.options import QatOptions, QuantizeOptions

PROG = "quantize"
DEFAULTS = QuantizeOptions()


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``quantize``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_argument_group("model")
    source.add_argument("--model", help="zoo name, URL, .tgz, checkpoint folder or prefix, "
                        ".keras/.h5 file, or SavedModel folder")
    source.add_argument("--checkpoint", help="local checkpoint (.tgz, folder or prefix) for a "
                        "zoo model, instead of downloading it")
    add_preprocess_arguments(parser, "preprocessing (for models that do not carry it)")
    calib = parser.add_argument_group("calibration")
    calib.add_argument("--calib-dir", help="image folder (recursive), manifest (.txt) or "
                       "labels CSV; default: a public set downloaded once into the cache")
    calib.add_argument("--calib-size", type=int, default=300, help="images used (default 300)")
    calib.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    quant = parser.add_argument_group("quantization")
    quant.add_argument("--io", choices=choices(IoType), default=DEFAULTS.io_type,
                       help=f"input/output type (default {DEFAULTS.io_type}, what Coral "
                            "examples feed)")
    quant.add_argument("--per-tensor", action="store_true",
                       help="per-tensor weights (default per-channel)")
    quant.add_argument("--ranges", choices=choices(RangeMethod), default=DEFAULTS.ranges,
                       help="activation ranges: relu6 is min/max with ReLU6 outputs [0, 6], "
                            "minmax plain min/max, mse MSE-optimal clipping (default "
                            f"{DEFAULTS.ranges})")
    quant.add_argument("--equalize", choices=choices(Switch), default=DEFAULTS.equalize,
                       help="cross-layer equalization (auto: with --per-tensor; default "
                            f"{DEFAULTS.equalize})")
    quant.add_argument("--bias-correction", choices=choices(Switch),
                       default=DEFAULTS.bias_correction,
                       help="cancel the mean output shift of weight rounding (auto: on for "
                            "classifiers, off for detectors, as measured; default "
                            f"{DEFAULTS.bias_correction})")
    quant.add_argument("--method", choices=choices(Method), default=Method.PTQ,
                       help="post-training quantization (default) or quantization-aware "
                            "fine-tuning (needs --train-dir or --train-records)")
    quant.add_argument("--drift-images", type=int, default=50,
                       help="held-out images for the quick drift in the sidecar (0 skips)")
    qat = parser.add_argument_group("quantization-aware training (--method qat)")
    qat.add_argument("--train-dir", action="append", metavar="DIR",
                     help="training images (repeatable); no labels needed (distillation)")
    qat.add_argument("--labels", metavar="CSV", help="file,label CSV: adds cross-entropy")
    qat.add_argument("--train-records", metavar="GLOB",
                     help="TFRecord shards in the ImageNet layout (train-*), instead of "
                          "--train-dir; their labels add cross-entropy")
    qat.add_argument("--epochs", type=int, default=3, help="epochs (default 3)")
    qat.add_argument("--steps", type=int, help="optimizer steps instead of epochs")
    qat.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    qat.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (1e-5)")
    qat.add_argument("--device", choices=(*choices(TrainingDevice), *zoo.DEVICES),
                     help="training device: auto (default: a GPU when TensorFlow sees one), "
                     "cpu or gpu; with --list / --recommend: " + DEVICE_HELP)
    qat.add_argument("--strategy", choices=choices(Strategy), default=Strategy.NONE,
                     help="none (one device, default), mirrored (every local GPU) or "
                          "multiworker (the machines of TF_CONFIG)")
    qat.add_argument("--checkpoint-dir", type=Path, metavar="DIR",
                     help="epoch checkpoints (rerunning resumes; default under the cache; "
                          "multiworker: a folder every machine sees)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (./out)")
    add_verbose_argument(parser)
    listing = parser.add_argument_group("choosing a model")
    add_listing_arguments(listing, device=False)  # --device is shared with QAT, above
    return parser


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    """Run ``quantize``; see the module docstring."""
    args = build_parser().parse_args(argv)
    if args.list or args.recommend:
        return run_listing(args)
    if args.device in zoo.DEVICES:
        raise BadInputError(f"--device {args.device} picks the Coral device of --list / "
                            "--recommend; to train with --method qat give --device "
                            f"{', '.join(choices(TrainingDevice))}")
    if not args.model:
        raise BadInputError("--model is required (a zoo name or a path; see quantize --list)")
    check_out_dir(args.out)
    options = _qat_options(args) if args.method == Method.QAT else None
    if options is not None:
        from quant.qat import distribute

        # Before any model: TensorFlow takes a multi-worker strategy only at start-up.
        distribute.strategy(options.strategy, options.device)
    from quant.sources import load_float_model

    float_model = load_float_model(args.model, args.checkpoint, preprocess_options(args))
    print(f"loaded {float_model.name} ({float_model.task}, input "
          f"{float_model.preprocess.height}x{float_model.preprocess.width})", file=sys.stderr)
    if options is not None:
        return _train_qat(args, float_model, options)
    return _quantize(args, float_model)


def _qat_options(args: argparse.Namespace) -> QatOptions:
    """Return the fine-tuning settings of ``args``, its training images checked first."""
    if not args.train_dir and not args.train_records:
        raise BadInputError("--method qat needs --train-dir DIR with training images (or "
                            "--train-records GLOB with TFRecord shards)")
    if args.train_records and (args.train_dir or args.labels):
        raise BadInputError("--train-records replaces --train-dir and --labels (the shards "
                            "carry their labels); give one source")
    return QatOptions(epochs=args.epochs, steps=args.steps, batch_size=args.batch_size,
                      lr=args.lr, io_type=args.io, device=args.device or "auto",
                      strategy=args.strategy, seed=args.seed, checkpoint_dir=args.checkpoint_dir)


def _train_qat(args: argparse.Namespace, float_model, options: QatOptions) -> int:
    from quant import qat
    from quant.qat import distribute

    if args.train_records:
        files = qat.tfrecord_files(args.train_records, float_model.num_classes)
    else:
        files = qat.image_files(args.train_dir, float_model.num_classes, args.labels)
    result = qat.train_qat(float_model, files, options)
    if not distribute.is_chief(distribute.strategy(options.strategy, options.device)):
        print("trained; the chief writes the outputs", file=sys.stderr)
        return 0
    for path in qat.save(result, args.out):
        print(path)
    return 0


def _quantize(args: argparse.Namespace, float_model) -> int:
    from quant import ptq
    from quant.calibration import calibration_set, load_calibration, sample

    calibration = calibration_set(float_model, args.calib_dir, size=args.calib_size,
                                  seed=args.seed)
    options = ptq.QuantizeOptions(io_type=args.io, per_tensor=args.per_tensor,
                                  ranges=args.ranges, equalize=args.equalize,
                                  bias_correction=args.bias_correction)
    result = ptq.quantize_model(float_model, calibration, options)
    held_out = sample(list(calibration.unused), args.drift_images, args.seed + 1) \
        if args.drift_images > 0 and calibration.unused else []
    if held_out and float_model.task == "classify":
        from quant.ptq.drift import quick_drift

        pixels = load_calibration(held_out, float_model.preprocess, "held-out").pixels
        result = result.with_drift(quick_drift(result, pixels))
    paths = ptq.save(result, args.out)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
