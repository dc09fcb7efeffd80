"""Download and cache model archives; accept URLs, archives, folders and checkpoint prefixes.

Downloads go to ``<cache>/downloads/<name>`` through a ``.part`` file that is resumed with
an HTTP Range request after an interruption and renamed into place only when complete.
The sha256 of every finished file is recorded beside it (``<name>.sha256``) and checked on
reuse; a mismatch (or a mismatch with a published checksum) deletes the file and downloads
it again; a download that ends short of its announced length is kept as ``.part`` and resumed
on the next run. A lock file beside it lets one process at a time download a given file (the
others wait, then use its result). Archives hold only regular files and folders: every
member is checked before anything is written (no absolute path, no ``..``, no symbolic or
hard link of any kind, no device file or FIFO, at most :data:`MAX_MEMBER_BYTES` per file and
:data:`MAX_EXTRACTED_BYTES` in all), then extracted with tarfile's ``data`` filter into a
temporary folder that is renamed into place (one process at a time per archive).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath, PureWindowsPath

from tqdm import tqdm

from edgeq.errors import BadInputError, MissingToolError
from edgeq.outputs import file_lock, remove_stale_temps, temp_prefix
from edgeq.paths import cache_dir

ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar")
MAX_EXTRACTED_BYTES = 4 * 1024**3
MAX_MEMBER_BYTES = 2 * 1024**3
_CHUNK = 1 << 20


def is_url(source: str) -> bool:
    """Return True for http(s) and ftp URLs."""
    return source.startswith(("http://", "https://", "ftp://"))


def is_archive(path: str | Path) -> bool:
    """Return True when the file name ends like a tar archive."""
    return str(path).endswith(ARCHIVE_SUFFIXES)


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, sha256: str | None = None, progress: bool = True,
             option_hint: str = "--checkpoint") -> Path:
    """Return the cached copy of ``url``, downloading (or resuming) it first if needed.

    Args:
        url: the file to fetch.
        sha256: the published checksum, checked when given.
        progress: show a progress bar on stderr.
        option_hint: the command-line option that takes a local copy instead.

    Raises:
        MissingToolError: the network is unreachable (exit 3), naming the URL and the option.
        BadInputError: the server answered with an error, or the checksum does not match.
    """
    folder = cache_dir() / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(urllib.request.url2pathname(url.split("?")[0])).name
    with file_lock(folder / f".{target.name}.lock"):  # one process per .part at a time
        return _download_locked(url, target, sha256, progress, option_hint)


def _download_locked(url: str, target: Path, sha256: str | None, progress: bool,
                     option_hint: str) -> Path:
    record = target.with_name(target.name + ".sha256")
    if target.exists():
        recorded = record.read_text().strip() if record.exists() else None
        actual = sha256_of(target)
        if actual == (sha256 or recorded):
            return target
        target.unlink()  # corrupted or unverifiable: never used
    partial = target.with_name(target.name + ".part")
    _fetch(url, partial, progress, option_hint)
    actual = sha256_of(partial)
    if sha256 and actual != sha256:
        partial.unlink()
        raise BadInputError(f"{url}: checksum {actual} does not match the published {sha256}")
    os.replace(partial, target)
    record.write_text(actual + "\n")
    return target


def _fetch(url: str, partial: Path, progress: bool, option_hint: str) -> None:
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file is already complete or bogus
            partial.unlink()
            return _fetch(url, partial, progress, option_hint)
        raise BadInputError(f"{url}: download failed (HTTP {exc.code} {exc.reason})") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise MissingToolError(
            f"cannot download {url} ({getattr(exc, 'reason', exc)}); offline? download it "
            f"elsewhere and pass the local file with {option_hint} PATH"
        ) from exc
    with response:
        resumed = response.status == 206 and offset > 0
        if resumed and not response.headers.get("Content-Range", "").startswith(
                f"bytes {offset}-"):  # not the rest of the partial file: start over
            partial.unlink()
            return _fetch(url, partial, progress, option_hint)
        start = offset if resumed else 0
        length = response.headers.get("Content-Length")
        total = int(length) + start if length and length.isdigit() else None
        with open(partial, "ab" if resumed else "wb") as handle, tqdm(
            total=total, initial=start, unit="B", unit_scale=True,
            desc=f"download {partial.name[:-5]}", disable=not progress, leave=False,
        ) as bar:
            try:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    handle.write(block)
                    bar.update(len(block))
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                raise _interrupted(url, str(exc), option_hint) from exc
            received = handle.tell()
        if total is not None and received < total:
            raise _interrupted(url, f"{received} of {total} bytes", option_hint)
    return None


def _interrupted(url: str, why: str, option_hint: str) -> MissingToolError:
    return MissingToolError(f"download of {url} was interrupted ({why}); run again to resume, "
                            f"or pass a local copy with {option_hint} PATH")


def extract(archive: Path) -> Path:
    """Extract a tar archive once into the cache and return the folder.

    The folder is keyed by the archive's sha256, so a changed archive is extracted anew.

    Raises:
        BadInputError: the archive is truncated, not a tar file, too large, or holds
            unsafe members (absolute paths, ``..``, links leaving the folder, devices).
    """
    key = sha256_of(archive)[:16]
    name = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        name = name.removesuffix(suffix)
    target = cache_dir() / "extracted" / f"{name}-{key}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):  # one extraction at a time
        remove_stale_temps(target.parent)
        if not target.is_dir():  # else another process extracted it while we waited
            _extract_to(archive, target)
    return target


def _extract_to(archive: Path, target: Path) -> None:
    """Check every member of ``archive``, extract it to a temporary folder, rename to ``target``.

    Raises:
        BadInputError: as :func:`extract`.
    """
    staging = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name), dir=target.parent))
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            _check_members(archive, members)
            tar.extractall(staging, members=members, filter="data")
        os.replace(staging, target)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise BadInputError(
            f"{archive}: cannot extract ({type(exc).__name__}: {exc}); the archive is "
            "truncated, corrupted or unsafe: download it again"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_members(archive: Path, members: list[tarfile.TarInfo]) -> None:
    """Refuse an archive with an unsafe or oversized member, naming the archive and member.

    Raises:
        BadInputError: a member is not a regular file or folder, has an absolute path or a
            ``..`` component, or the sizes exceed :data:`MAX_MEMBER_BYTES` /
            :data:`MAX_EXTRACTED_BYTES`.
    """
    total = 0
    for member in members:
        name = member.name
        why = None
        if member.issym() or member.islnk():
            why = f"it is a {'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}"
        elif not (member.isreg() or member.isdir()):
            why = "it is a device file or FIFO"
        elif PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute():
            why = "its path is absolute"
        elif ".." in PurePosixPath(name.replace("\\", "/")).parts:
            why = "its path leaves the archive's folder ('..')"
        elif member.size > MAX_MEMBER_BYTES:
            why = (f"it is {member.size / 1e9:.1f} GB, over the {MAX_MEMBER_BYTES / 1e9:.1f} GB "
                   "limit per file")
        if why:
            raise BadInputError(f"{archive}: unsafe archive, refusing member {name!r}: {why}; "
                                "archives may hold only regular files and folders inside "
                                "their own folder")
        total += member.size
    if total > MAX_EXTRACTED_BYTES:
        raise BadInputError(
            f"{archive}: would extract {total / 1e9:.1f} GB, over the "
            f"{MAX_EXTRACTED_BYTES / 1e9:.1f} GB limit; is this the right file?"
        )


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    """A checkpoint found in a source, with what its folder bundles.

    Attributes:
        prefix: the checkpoint prefix (``.../model.ckpt``).
        folder: the folder holding it.
        tflite_files: ``.tflite`` files bundled beside it (official archives have one).
        pipeline_config: the Object Detection API ``pipeline.config``, when present.
    """

    prefix: Path
    folder: Path
    tflite_files: tuple[Path, ...]
    pipeline_config: Path | None


def locate_checkpoint(source: str | Path, expected_prefix: str | None = None,
                      sha256: str | None = None) -> CheckpointFiles:
    """Find the checkpoint in a URL, archive, folder or checkpoint prefix.

    Args:
        source: a URL, a ``.tgz`` / ``.tar.gz``, a folder, or a checkpoint prefix.
        expected_prefix: the checkpoint file name to choose when a folder holds several.
        sha256: the published checksum of a URL's file.

    Raises:
        BadInputError: nothing usable is there, named with what was found.
        MissingToolError: a URL cannot be downloaded.
    """
    source = str(source)
    path = download(source, sha256) if is_url(source) else Path(source).expanduser()
    if is_archive(path):
        if not path.is_file():
            raise BadInputError(f"{path}: no such archive")
        path = extract(path)
    if path.is_dir():
        return _from_folder(path, expected_prefix)
    if Path(str(path) + ".index").is_file():
        return _bundle(path)
    if path.suffix == ".index" and path.is_file():
        return _bundle(path.with_suffix(""))
    if not path.exists():
        raise BadInputError(f"{path}: no such file, folder or checkpoint prefix")
    raise BadInputError(
        f"{path}: not a checkpoint; expected a .tgz/.tar.gz archive, a folder, or the prefix "
        "of .index/.data files"
    )


def _from_folder(folder: Path, expected_prefix: str | None) -> CheckpointFiles:
    if not os.access(folder, os.R_OK | os.X_OK):
        raise BadInputError(f"{folder}: folder is not readable (check its permissions)")
    indexes = sorted(folder.rglob("*.index"))
    if expected_prefix:
        chosen = [p for p in indexes if p.name == f"{expected_prefix}.index"]
        indexes = chosen or indexes
    if not indexes:
        raise BadInputError(f"{folder}: holds no checkpoint (.index file)")
    if len(indexes) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in indexes[:5])
        raise BadInputError(f"{folder}: holds several checkpoints ({names}); pass one prefix")
    return _bundle(indexes[0].with_suffix(""))


def _bundle(prefix: Path) -> CheckpointFiles:
    folder = prefix.parent
    config = folder / "pipeline.config"
    return CheckpointFiles(
        prefix=prefix,
        folder=folder,
        tflite_files=tuple(sorted(folder.glob("*.tflite"))),
        pipeline_config=config if config.is_file() else None,
    )
