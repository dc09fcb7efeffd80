"""Evaluation images: listing, labels, and decoding once into a shared pixel array.

Labels come from a CSV (``file,label``; paths relative to the data folder, or bare file
names inside it) or from a folder per class (sorted folder names give class
indices). Both models read the same decoded uint8 pixels, so decoding and resizing happen
once per run.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetpu.runtime import cpu_count
from quant.errors import BadInputError
from quant.preprocess import Preprocess, open_image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class ImageList:
    """Image files in a fixed order, with integer labels when known."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def head(self, limit: int | None) -> ImageList:
        """Return the first ``limit`` images (all when None)."""
        if limit is None:
            return self
        labels = self.labels[:limit] if self.labels is not None else None
        return ImageList(self.paths[:limit], labels, self.class_names)


def is_image(path: Path) -> bool:
    """Return True for a file with a known image suffix."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(data_dir: str | Path, labels_csv: str | Path | None = None) -> ImageList:
    """List the evaluation images of ``data_dir`` with their labels.

    Args:
        data_dir: a folder of images (searched recursively), or a folder per class.
        labels_csv: CSV with ``file,label`` columns; when None and ``data_dir`` holds only
            sub-folders of images, each sub-folder is a class.

    Returns:
        The images sorted by path (CSV order when a CSV is given).

    Raises:
        BadInputError: the folder is missing or holds no images, or a labelled file is absent.
    """
    root = Path(data_dir)
    if root.is_file():
        raise BadInputError(f"{root}: this is a file; --data takes the folder of images")
    if not root.is_dir():
        raise BadInputError(f"{root}: no such data folder")
    if labels_csv is not None:
        return _from_csv(root, Path(labels_csv))
    paths = sorted(p for p in root.rglob("*") if is_image(p))
    if not paths:
        raise BadInputError(
            f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if classes and all(p.parent.parent == root for p in paths):
        labels = tuple(classes.index(p.parent.name) for p in paths)
        return ImageList(tuple(paths), labels, tuple(classes))
    return ImageList(tuple(paths))


def _from_csv(root: Path, labels_csv: Path) -> ImageList:
    if not labels_csv.is_file():
        raise BadInputError(f"{labels_csv}: no such labels file (expected a CSV 'file,label')")
    with labels_csv.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if rows and not _is_int(rows[0][-1] if rows[0] else ""):
        rows = rows[1:]  # header
    paths: list[Path] = []
    labels: list[int] = []
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) < 2 or not _is_int(row[1]):
            raise BadInputError(f"{labels_csv}:{line}: expected 'file,label' with an integer label")
        paths.append(_resolve(row[0], root, labels_csv, line))
        labels.append(int(row[1]))
    if not paths:
        raise BadInputError(f"{labels_csv}: no labelled images")
    return ImageList(tuple(paths), tuple(labels))


def _resolve(name: str, root: Path, labels_csv: Path, line: int) -> Path:
    for candidate in (root / name, root / Path(name).name):
        if candidate.is_file():
            return candidate
    raise BadInputError(f"{labels_csv}:{line}: image {name!r} not found under {root}")


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def label_offset(num_outputs: int, labels: Sequence[int]) -> int:
    """Return what to add to dataset labels to get the model's output index.

    A 1001-output model (TF-slim convention, index 0 = background) scored with 0-based
    1000-class labels needs +1; labels that already use 1..1000 need 0.

    Raises:
        BadInputError: a label does not fit the model's outputs.
    """
    top = max(labels)
    offset = 1 if num_outputs == 1001 and top < 1000 else 0
    if top + offset >= num_outputs or min(labels) < 0:
        raise BadInputError(
            f"labels go up to {top} but the model has {num_outputs} outputs; check --labels"
        )
    return offset


def decode_images(
    paths: Sequence[Path], preprocess: Preprocess, workers: int | None = None
) -> np.ndarray:
    """Decode and resize every image once; return uint8 pixels [N, H, W, 3].

    Pillow releases the GIL while decoding and resizing, so threads scale on the cores.
    """
    out = np.empty((len(paths), preprocess.height, preprocess.width, 3), np.uint8)

    def load(i: int) -> None:
        out[i] = preprocess.load_pixels(paths[i])

    with ThreadPoolExecutor(max_workers=workers or cpu_count()) as pool:
        list(pool.map(load, range(len(paths))))
    return out


def image_sizes(paths: Sequence[Path]) -> list[tuple[int, int]]:
    """Return the original (width, height) of each image (header read only).

    Raises:
        BadInputError: an image is missing, unreadable or too large (see ``open_image``).
    """
    sizes = []
    for path in paths:
        with open_image(path) as image:
            sizes.append(image.size)
    return sizes
