"""Output folders and files: checked before the work starts, written atomically.

:func:`check_out_dir` refuses an ``--out`` that can never hold the results (an existing
file, a folder below a file) before minutes of work are spent; :func:`atomic_write`
writes a file under a temporary name and renames it, so a full disk or Ctrl-C never
leaves a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from quant.errors import BadInputError


def check_out_dir(path: Path, option: str = "--out") -> None:
    """Check that ``path`` is a folder or can be created as one (nothing is created).

    Raises:
        BadInputError: ``path`` is an existing file, or its nearest existing parent is a
            file or not writable.
    """
    if path.exists():
        if not path.is_dir():
            raise BadInputError(f"{option} {path}: this is a file, not a folder; pass a folder "
                                "(it is created when missing)")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise BadInputError(f"{option} {path}: cannot create this folder because {parent} is a "
                            "file; pass another folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"{option} {path}: cannot create this folder, {parent} is not "
                            "writable; pass another folder")


def write_error(path: Path, exc: OSError) -> BadInputError:
    """Return the one-line error for a failed write of ``path``, with what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BadInputError(f"{path}: cannot write, the disk is full ({exc.strerror}); free "
                             "some space or pass --out on another disk")
    return BadInputError(f"{path}: cannot write ({exc.strerror or exc}); check the folder "
                         "and its permissions, or pass another --out")


def atomic_write(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file in the same folder.

    Raises:
        BadInputError: the file cannot be written (the temporary file is removed).
    """
    atomic_write_all([(path, payload)])


def atomic_write_all(files: list[tuple[Path, bytes]]) -> None:
    """Write several files as one: every payload goes to a temporary file, then all are renamed.

    A model and its sidecar thus appear together: a full disk or Ctrl-C while writing leaves
    none of them (and any earlier versions untouched).

    Raises:
        BadInputError: a file cannot be written (every temporary file is removed).
    """
    temps: list[str] = []
    path = files[0][0] if files else Path()
    try:
        for path, payload in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            temps.append(temp)
            with os.fdopen(handle, "wb") as stream:
                stream.write(payload)
        for (path, _), temp in zip(files, temps, strict=True):
            os.replace(temp, path)
    except BaseException as exc:
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise
