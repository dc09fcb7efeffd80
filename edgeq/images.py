"""Images: listing image sets, reading image files, and the preprocessing that feeds a model.

A :class:`Preprocess` (size, colour order, scaling, resize policy) turns an image file into the
float32 HxWx3 array a float model expects, and is stored in every JSON sidecar so that
calibration, validation, fine-tuning and the runtime feed the model the same way.
:func:`list_images` lists an image set: a folder (searched recursively, or a folder per class)
or a labels CSV (``file,label``; paths relative to the folder, or bare file names inside it);
:func:`decode_images` decodes and resizes a set once into one uint8 array.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from edgeq.errors import BadInputError

RESIZE_POLICIES = ("resize", "center_crop")
#: Pillow modes with more than 8 bits per sample: scaled to 0..255 before use.
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How to feed a model: ``(pixel - mean) / std`` on RGB 0..255 after resizing.

    Attributes:
        height: model input height in pixels.
        width: model input width in pixels.
        mean: per-channel value subtracted from 0..255 RGB pixels.
        std: per-channel divisor applied after the mean.
        resize: ``"resize"`` (bilinear to the input size) or ``"center_crop"`` (keep the
            central ``crop_fraction`` of the image, then resize).
        crop_fraction: fraction of the shorter side kept by ``center_crop``.
        antialias: smooth when shrinking (PIL's bilinear); False (default) is TensorFlow's
            ``tf.image.resize`` bilinear with half-pixel centres, which TF-slim and the
            Object Detection API models were trained and evaluated with.
    """

    height: int
    width: int
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    resize: str = "resize"
    crop_fraction: float = 0.875
    antialias: bool = False

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_POLICIES:
            raise BadInputError(
                f"unknown resize policy {self.resize!r}; expected one of {RESIZE_POLICIES}"
            )
        if self.height <= 0 or self.width <= 0:
            raise BadInputError(f"input size must be positive, got {self.height}x{self.width}")
        if any(s == 0 for s in self.std):
            raise BadInputError("std must not contain 0")

    @property
    def input_range(self) -> tuple[float, float]:
        """Return the (low, high) float range that pixels 0 and 255 map to (first channel)."""
        return ((0 - self.mean[0]) / self.std[0], (255 - self.mean[0]) / self.std[0])

    @classmethod
    def from_input_range(cls, height: int, width: int, low: float, high: float,
                         **kwargs: Any) -> Preprocess:
        """Build the spec that maps pixel 0 to ``low`` and 255 to ``high``."""
        std = 255.0 / (high - low)
        mean = -low * std
        return cls(height, width, (mean,) * 3, (std,) * 3, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (for sidecars)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise BadInputError(
                f"unknown preprocessing keys {sorted(unknown)}; expected some of {sorted(fields)}"
            )
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = _three(values[key], key)
        return cls(**values)

    def resize_image(self, image: Image.Image) -> np.ndarray:
        """Return the RGB uint8 array of ``image`` cropped / resized to the input size."""
        image = image.convert("RGB")
        if self.resize == "center_crop":
            w, h = image.size
            side = min(w, h) * self.crop_fraction
            left, top = (w - side) / 2, (h - side) / 2
            image = image.crop((round(left), round(top), round(left + side), round(top + side)))
        return self.resize_pixels(np.asarray(image, dtype=np.uint8))

    def resize_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Resize uint8 RGB pixels (HxWx3) to the input size with this spec's interpolation."""
        if pixels.shape[:2] == (self.height, self.width):
            return pixels
        size = (self.width, self.height)
        if self.antialias:
            return np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR))
        return cv2.resize(pixels, size, interpolation=cv2.INTER_LINEAR)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """Map uint8 RGB pixels (HxWx3, or a batch) to the float32 model input."""
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        return (pixels.astype(np.float32) - mean) / std

    def load_pixels(self, path: str | Path) -> np.ndarray:
        """Read an image file and return resized uint8 RGB pixels (HxWx3).

        Raises:
            BadInputError: the file is missing or not a readable image.
        """
        return self.resize_image(read_rgb(path))

    def load(self, path: str | Path) -> np.ndarray:
        """Read an image file and return the float32 model input (HxWx3)."""
        return self.normalize(self.load_pixels(path))


@contextlib.contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """Open an image file; any failure, inside the ``with`` block too, names the file.

    Raises:
        BadInputError: the file is missing, not a readable image, or too large to decode
            safely (more pixels than Pillow's decompression-bomb limit).
    """
    try:
        with Image.open(path) as image:
            yield image
    except FileNotFoundError as exc:
        raise BadInputError(f"{path}: no such image file") from exc
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"{path}: image too large to decode safely ({exc}); resize "
                            "it first") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadInputError(f"{path}: not a readable image ({exc}); pass a JPEG, PNG or BMP "
                            "file") from exc


def read_rgb(path: str | Path) -> Image.Image:
    """Read an image file as 8-bit RGB.

    Grayscale, palette, CMYK and alpha images are converted; 16-bit, 32-bit integer and
    float images are scaled so that their largest value becomes 255.

    Raises:
        BadInputError: see :func:`open_image`.
    """
    with open_image(path) as image:
        image.load()
        if image.mode in HIGH_DEPTH_MODES:
            array = np.asarray(image, dtype=np.float32)
            scaled = np.clip(array * (255.0 / max(float(array.max()), 1.0)), 0, 255)
            return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
        return image.convert("RGB")


def _three(value: Any, name: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    values = tuple(float(v) for v in value)
    if len(values) == 1:
        return values * 3
    if len(values) != 3:
        raise BadInputError(f"{name} needs 1 or 3 values, got {len(values)}")
    return values  # type: ignore[return-value]


# TF-slim MobileNet and Object Detection API SSD: RGB scaled to [-1, 1], plain bilinear resize
# (the shared float reference was measured that way).
def inception_preprocess(size: int) -> Preprocess:
    """Return the [-1, 1] RGB spec of TF-slim MobileNets and SSD models at ``size``."""
    return Preprocess(size, size)


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclasses.dataclass(frozen=True)
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
    paths = _images_in(root, recursive=True)
    if not paths:
        raise BadInputError(
            f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if classes and all(p.parent.parent == root for p in paths):
        labels = tuple(classes.index(p.parent.name) for p in paths)
        return ImageList(tuple(paths), labels, tuple(classes))
    return ImageList(tuple(paths))


def image_files(paths: Sequence[Path]) -> list[Path]:
    """Return the image files named on a command line: files as given, folders expanded to
    the images directly in them (sorted).

    Raises:
        BadInputError: a path is missing or a folder holds no image.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            images = _images_in(path, recursive=False)
            if not images:
                raise BadInputError(f"{path}: folder holds no image "
                                    f"({', '.join(sorted(IMAGE_SUFFIXES))})")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise BadInputError(f"{path}: no such image file or folder")
    return found


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    """Return the image files of ``folder`` (and its sub-folders when ``recursive``), sorted."""
    return sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir())
                  if is_image(p))


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


def cpu_count() -> int:
    """Return the number of CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
