"""Error types that carry the command-line exit code, and the CLI wrapper that uses them.

Exit codes (shared by every command): 0 ok, 1 the check asked for failed, 2 bad input or
usage, 3 a required external tool, device or network resource is missing.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING_TOOL = 3


class EdgeqError(Exception):
    """Base class: a problem the user can fix, reported as one line without a traceback."""

    exit_code = EXIT_BAD_INPUT


class BadInputError(EdgeqError):
    """A file, option or value given by the user is wrong (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class CheckFailedError(EdgeqError):
    """The check the user asked for failed, e.g. drift over the limit (exit 1)."""

    exit_code = EXIT_CHECK_FAILED


class MissingToolError(EdgeqError):
    """A required external tool, device or network resource is absent (exit 3)."""

    exit_code = EXIT_MISSING_TOOL


#: Modules of the optional extras (pyproject.toml) and the extra that installs each: the base
#: install runs the Edge TPU commands only.
EXTRAS = {"tensorflow": "quant", "tf_keras": "quant", "tqdm": "quant", "matplotlib": "quant",
          "yaml": "quant", "tensorflow_model_optimization": "qat", "pycocotools": "coco",
          "ray": "ray"}


def cli_entry(prog: str, interrupted: str = "no partial output was kept"
              ) -> Callable[[Callable[[list[str] | None], int | None]], Callable[..., int]]:
    """Decorate a ``main(argv)`` so user errors print one line on stderr and set the exit code.

    Args:
        prog: the command's name, used in the line printed after Ctrl-C.
        interrupted: what that line says was kept (``PROG: interrupted; INTERRUPTED``).

    Returns:
        A decorator; the wrapped function has the same signature, never raises for an
        ``EdgeqError`` or Ctrl-C, and returns the exit code (the function returns an exit
        code or None for 0).
    """

    def decorate(func: Callable[[list[str] | None], int | None]) -> Callable[..., int]:
        @functools.wraps(func)
        def wrapper(argv: list[str] | None = None) -> int:
            _print_any_file_name()
            try:
                code = func(argv)
            except EdgeqError as exc:
                print(f"error: {printable(str(exc))}", file=sys.stderr)
                return exc.exit_code
            except ModuleNotFoundError as exc:
                extra = EXTRAS.get((exc.name or "").split(".")[0])
                if extra is None:
                    raise
                print(f"error: {prog} needs {exc.name}, which the base install leaves out; "
                      f"install it with: pip install 'edgetpu-quant[{extra}]'", file=sys.stderr)
                return EXIT_MISSING_TOOL
            except KeyboardInterrupt:
                _ignore_further_interrupts()
                print(f"{prog}: interrupted; {interrupted}", file=sys.stderr)
                return 130
            return 0 if code is None else int(code)

        return wrapper

    return decorate


def _ignore_further_interrupts() -> None:
    """Ignore SIGINT from now on, so a repeated Ctrl-C cannot break the exit with a traceback.

    The command is already stopping: its one line must stay the last and its exit status 130.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def first_of(items: list[str], limit: int, separator: str = ", ") -> str:
    """Join the first ``limit`` items for a message, saying how many more there are."""
    more = len(items) - limit
    return separator.join(items[:limit]) + (f"{separator}and {more} more" if more > 0 else "")


def printable(text: str) -> str:
    """Return ``text`` with undecodable file-name bytes shown as ``\\xNN`` escapes.

    File names that are not valid UTF-8 reach Python as lone surrogates (``os.fsdecode``);
    they cannot be encoded for a terminal, so an error message naming such a file would
    itself fail.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name decodes to
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def _print_any_file_name() -> None:
    """Let stdout print file names that are not valid UTF-8 (their raw bytes go out).

    With a strict stdout (a UTF-8 locale other than C.UTF-8) printing such a name raises
    ``UnicodeEncodeError`` after the work is done.
    """
    stream = sys.stdout
    if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
        stream.reconfigure(errors="surrogateescape")
