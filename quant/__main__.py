"""`python -m quant` runs quantize; `python -m quant validate ...` runs validate-quant."""

import sys


def main() -> int:
    """Dispatch to the quant package's commands."""
    argv = sys.argv[1:]
    if argv[:1] == ["validate"]:
        from quant.cli.validate import main as validate

        return validate(argv[1:])
    from quant.cli.quantize import main as quantize

    return quantize(argv)


if __name__ == "__main__":
    sys.exit(main())
