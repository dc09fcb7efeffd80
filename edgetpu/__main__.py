"""``python -m edgetpu check|compile|detect ...``: the edgetpu package's commands."""

import sys

_COMMANDS = {
    "check": "edgetpu.cli.check",
    "compile": "edgetpu.cli.compile",
    "detect": "edgetpu.cli.detect",
}


def main() -> int:
    """Dispatch ``python -m edgetpu COMMAND ARGS`` to the command's ``main``."""
    argv = sys.argv[1:]
    if not argv or argv[0] not in _COMMANDS:
        print(f"usage: python -m edgetpu {{{','.join(_COMMANDS)}}} ...", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    import importlib

    module = importlib.import_module(_COMMANDS[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
