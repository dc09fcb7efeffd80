"""Calibration sets: representative images for post-training quantization.

Sources: an image folder (recursive), a manifest (``.txt``, one path per line, relative to
the manifest; named sets live under ``calib_data/``), or a labels CSV (``file,label``).
With no source, a public calibration set is downloaded once into the cache (Imagenette
validation images for classifiers, COCO-like images for detectors). Sampling is
deterministic (``size`` images drawn with ``seed``), pixels are decoded with the model's own
:class:`~edgeq.images.Preprocess`, and unreadable files are skipped and counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgeq.errors import BadInputError, MissingToolError
from edgeq.images import IMAGE_SUFFIXES, Preprocess, is_image, list_images
from quant.fetch import download, extract

# Public sets for users who are online: (URL, folder inside the archive, what it is).
DEFAULT_SETS = {
    "classify": ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
                 "imagenette2-320/val", "Imagenette validation images (about 330 MB, once)"),
    "detect": ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
               "imagenette2-320/val", "Imagenette validation images (about 330 MB, once)"),
}


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    """Decoded calibration images and where they came from.

    Attributes:
        pixels: uint8 RGB pixels [N, H, W, 3] at the model's input size.
        paths: the files used, in order.
        source: the folder / manifest / CSV / URL they were drawn from.
        sha256: hash of the file list and sampling, recorded in the sidecar.
        skipped: unreadable files and why.
        unused: files of the source that were not drawn (for held-out checks).
    """

    pixels: np.ndarray
    paths: tuple[Path, ...]
    source: str
    sha256: str
    skipped: tuple[str, ...] = ()
    unused: tuple[Path, ...] = ()

    def __len__(self) -> int:
        return len(self.paths)

    def inputs(self, preprocess: Preprocess):
        """Yield float model inputs [1, H, W, 3] one by one (a representative dataset)."""
        for pixels in self.pixels:
            yield preprocess.normalize(pixels)[None]


def list_calibration_files(source: str | Path) -> list[Path]:
    """Return the image files named by a folder, a manifest ``.txt`` or a labels ``.csv``.

    Raises:
        BadInputError: the source is missing, empty, or lists missing files.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise BadInputError(f"{path}: no such calibration folder or file (--calib-dir)")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        images = [p for p in files if is_image(p)]
        if not images:
            raise BadInputError(
                f"{path}: no calibration images ({len(files)} files, none with an image "
                f"suffix {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return images
    if path.suffix.lower() == ".csv":
        return list(list_images(path.parent, path).paths)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read the manifest ({exc})") from exc
    entries = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    files = [(path.parent / entry) if not Path(entry).is_absolute() else Path(entry)
             for entry in entries]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise BadInputError(f"{path}: {len(missing)} listed files are missing, e.g. {missing[0]}")
    if not files:
        raise BadInputError(f"{path}: the manifest lists no files")
    return files


def sample(files: list[Path], size: int, seed: int) -> list[Path]:
    """Return ``size`` files drawn deterministically (all of them, sorted, when fewer)."""
    if size <= 0:
        raise BadInputError(f"--calib-size must be positive, got {size}")
    if len(files) <= size:
        return sorted(files)
    chosen = np.random.default_rng(seed).choice(len(files), size=size, replace=False)
    return [files[i] for i in sorted(chosen)]


def load_calibration(files: list[Path], preprocess: Preprocess, source: str,
                     seed: int = 0, progress: bool = True) -> CalibrationSet:
    """Decode ``files`` with ``preprocess``; unreadable files are skipped and counted.

    Raises:
        BadInputError: no file could be read (the message gives the count and a reason).
    """
    pixels, used, skipped = [], [], []
    for path in tqdm(files, desc="calibration images", unit="img", disable=not progress,
                     leave=False):
        try:
            pixels.append(preprocess.load_pixels(path))
            used.append(path)
        except BadInputError as exc:
            skipped.append(str(exc))
    if not used:
        raise BadInputError(
            f"{source}: none of the {len(files)} calibration files could be read, e.g. "
            f"{skipped[0] if skipped else '?'}"
        )
    digest = hashlib.sha256()
    for path in used:
        digest.update(str(path).encode() + b"\0")
    digest.update(f"{preprocess.to_dict()}|seed={seed}".encode())
    return CalibrationSet(np.stack(pixels), tuple(used), source, digest.hexdigest(),
                          tuple(skipped))


def default_calibration_folder(task: str) -> tuple[Path, str]:
    """Download (once) the public calibration set for ``task``; return its folder and URL.

    Raises:
        MissingToolError: offline; the message names ``--calib-dir``.
    """
    url, inner, what = DEFAULT_SETS[task]
    print(f"no --calib-dir: using {what} from {url}", file=sys.stderr, flush=True)
    try:
        archive = download(url, option_hint="--calib-dir")
    except MissingToolError as exc:
        raise MissingToolError(
            f"no --calib-dir given and the default calibration set cannot be downloaded "
            f"({exc}); pass --calib-dir DIR with a few hundred representative images"
        ) from exc
    return extract(archive) / inner, url


def calibration_set(float_model, source: str | None, size: int = 300, seed: int = 0,
                    progress: bool = True) -> CalibrationSet:
    """Return the calibration set for ``float_model`` from ``source`` (or the default set)."""
    if source is None:
        folder, label = default_calibration_folder(float_model.task)
    else:
        folder, label = Path(source), str(source)
    pool = list_calibration_files(folder)
    files = sample(pool, size, seed)
    result = load_calibration(files, float_model.preprocess, label, seed, progress)
    drawn = set(files)
    result = dataclasses.replace(result, unused=tuple(p for p in pool if p not in drawn))
    if result.skipped:
        print(f"calibration: skipped {len(result.skipped)} unreadable files, e.g. "
              f"{result.skipped[0]}", file=sys.stderr, flush=True)
    return result
