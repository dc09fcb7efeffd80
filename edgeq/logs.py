"""Native libraries' start-up lines on stderr: hidden unless the user asks for them.

TensorFlow, absl and LiteRT write lines such as "Could not find cuda drivers on your
machine", "failed call to cuInit" or "Created TensorFlow Lite XNNPACK delegate" straight to
file descriptor 2, where no Python setting reaches them. The commands hide them by pointing
that descriptor at ``/dev/null`` for the few calls that print them; ``--verbose`` (or
``EDGEQ_VERBOSE=1``) shows them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

VERBOSE_ENV = "EDGEQ_VERBOSE"


def verbose() -> bool:
    """Return True when native libraries' log lines should be shown."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose(on: bool) -> None:
    """Show (or hide) native log lines from now on, in this process and its children."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"


@contextlib.contextmanager
def native_stderr_hidden() -> Iterator[None]:
    """Send what native code writes to stderr during the block to ``/dev/null``.

    Python's own ``sys.stderr`` is flushed first and restored after, so nothing of ours is
    lost; in verbose mode the block runs unchanged.
    """
    if verbose():
        yield
        return
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _ShowNativeLogs(argparse.Action):
    """``--verbose``: takes effect while parsing, before TensorFlow or LiteRT is loaded."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        set_verbose(True)
        setattr(namespace, self.dest, True)


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--verbose``: show TensorFlow's, absl's and LiteRT's own log lines."""
    parser.add_argument("--verbose", action=_ShowNativeLogs, nargs=0, default=False,
                        help="show the log lines of TensorFlow, absl, CUDA and LiteRT "
                             "(hidden by default)")
