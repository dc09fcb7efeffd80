"""Output folders and files: checked before the work starts, written atomically.

:func:`check_out_dir` refuses an ``--out`` that can never hold the results (an existing
file, a folder below a file) before minutes of work are spent; :func:`atomic_write`
writes a file under a temporary name and renames it, so a full disk or Ctrl-C never
leaves a partial file under the final name. :func:`atomic_write_all` renames a group of
files together, under :func:`folder_lock`, so two runs writing the same ``--out`` never
leave a model of one run beside the sidecar of the other. Temporary names carry the
writer's process ID (:func:`temp_prefix`), so the next writer removes what a killed one
left behind (:func:`remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from edgeq.errors import BadInputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, writers are not serialized
    fcntl = None

LOCK_NAME = ".edgeq-write.lock"
_TEMP_NAME = re.compile(r"\..+\.edgeq-(\d+)-\w+")


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


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON (one trailing newline) to ``path``, atomically.

    Raises:
        BadInputError: the file cannot be written.
    """
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())


def atomic_write_all(files: list[tuple[Path, bytes]]) -> None:
    """Write several files as one: every payload goes to a temporary file, then all are renamed.

    A model and its sidecar thus appear together: a full disk or Ctrl-C while writing leaves
    none of them (and any earlier versions untouched); Ctrl-C during the renames takes
    effect once they are all done. The renames hold :func:`folder_lock` on every target
    folder, so concurrent runs replace the whole group one after the other. Files get the
    usual permissions (``0o666`` less the umask), not the private ones of a temporary file.

    Raises:
        BadInputError: a file cannot be written (every temporary file is removed).
    """
    temps: list[str] = []
    path = files[0][0] if files else Path()
    mode = 0o666 & ~_umask()
    try:
        for path, payload in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
            temps.append(temp)
            with os.fdopen(handle, "wb") as stream:
                stream.write(payload)
            os.chmod(temp, mode)
        with contextlib.ExitStack() as locks:
            for folder in sorted({p.parent.resolve() for p, _ in files}):
                path = folder / LOCK_NAME  # named in the error if the lock cannot be made
                locks.enter_context(folder_lock(folder))
                remove_stale_temps(folder)
            with _interrupt_deferred():
                for (path, _), temp in zip(files, temps, strict=True):
                    os.replace(temp, path)
    except BaseException as exc:
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise


def temp_prefix(name: str) -> str:
    """Return the prefix for a temporary file or folder standing in for ``name``.

    The name is hidden and carries this process's ID (``.NAME.edgeq-PID-``), so that
    :func:`remove_stale_temps` can tell the leftovers of a killed writer.
    """
    return f".{name}.edgeq-{os.getpid()}-"


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temporary files and folders in ``folder`` whose writer is no longer running.

    Call it holding the folder's lock (:func:`folder_lock`). Only names made by
    :func:`temp_prefix` are considered; on systems without POSIX process IDs nothing is
    removed.

    Returns:
        The paths removed.
    """
    if os.name != "posix":
        return []
    removed = []
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMP_NAME.fullmatch(entry.name)
            if not match or _running(int(match.group(1))):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def folder_lock(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the exclusive write lock of ``folder`` (``fcntl.flock`` on :data:`LOCK_NAME`).

    See :func:`file_lock`.

    Raises:
        OSError: the lock file cannot be created in ``folder``.
    """
    return file_lock(folder / LOCK_NAME)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on the lock file ``path`` (created, then removed).

    The lock file is removed on release, so no trace is left; a process that waited on a
    lock file removed meanwhile locks the new one instead. Without ``fcntl`` (Windows)
    this does nothing.

    Raises:
        OSError: the lock file cannot be created.
    """
    if fcntl is None:
        yield
        return
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(handle).st_ino:
                    break  # still the file in the folder: the lock is ours
        except BaseException:
            os.close(handle)
            raise
        os.close(handle)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(handle)


@contextlib.contextmanager
def _interrupt_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block is done, then deliver it.

    Only the main thread can set signal handlers; elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        signal.raise_signal(signal.SIGINT)


def _running(pid: int) -> bool:
    """Return True when a process with this ID exists (one of another user counts too)."""
    if pid <= 0:
        return True  # not a process ID: 0 and below name process groups, leave such names
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    """Return the process umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
