"""Command-line arguments shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from quant.preprocess import PreprocessOptions


def floats(text: str) -> tuple[float, ...]:
    """Parse ``1,2,3`` into floats (an argparse type)."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        message = f"expected comma-separated numbers, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def float_range(text: str) -> tuple[float, float]:
    """Parse ``LOW,HIGH`` (an argparse type)."""
    values = floats(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}")
    return values  # type: ignore[return-value]


def add_preprocess_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    """Add ``--input-range``, ``--mean``, ``--std`` and ``--preprocess`` in a group."""
    group = parser.add_argument_group(title)
    group.add_argument("--input-range", type=float_range, metavar="LOW,HIGH",
                       help="float range that pixels 0 and 255 map to, e.g. --input-range=-1,1")
    group.add_argument("--mean", type=floats, metavar="M[,M,M]", help="per-channel mean (0..255)")
    group.add_argument("--std", type=floats, metavar="S[,S,S]", help="per-channel std")
    group.add_argument("--preprocess", type=Path, metavar="FILE",
                       help="JSON/YAML file with height, width, mean, std, resize")


def preprocess_options(args: argparse.Namespace) -> PreprocessOptions | None:
    """Return the preprocessing options given on the command line, or None when none were."""
    options = PreprocessOptions(mean=args.mean, std=args.std, input_range=args.input_range,
                                file=args.preprocess)
    return options if options.given() else None
