"""Image preprocessing specs that travel with a model: size, colour order, scaling, resize policy.

A :class:`Preprocess` turns an image file into the float32 HxWx3 array a float model
expects, and is stored in every JSON sidecar so that calibration, validation and the
runtime feed the model the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from quant.errors import BadInputError

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


@dataclasses.dataclass(frozen=True)
class PreprocessOptions:
    """Preprocessing given on the command line for models that do not carry it.

    Attributes:
        mean: per-channel mean (1 or 3 values) on 0..255 pixels.
        std: per-channel std (1 or 3 values).
        input_range: (low, high) that pixels 0 and 255 map to; excludes mean/std.
        file: a JSON or YAML file with :class:`Preprocess` fields.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_range: tuple[float, float] | None = None
    file: Path | None = None

    def given(self) -> bool:
        """Return True when any option was set."""
        return any(v is not None for v in (self.mean, self.std, self.input_range, self.file))

    def build(self, height: int, width: int) -> Preprocess:
        """Return the :class:`Preprocess` these options describe for an input size."""
        if self.file is not None:
            data = _read_mapping(self.file)
            data.setdefault("height", height)
            data.setdefault("width", width)
            return Preprocess.from_dict(data)
        if self.input_range is not None:
            if self.mean is not None or self.std is not None:
                raise BadInputError("give either --input-range or --mean/--std, not both")
            low, high = self.input_range
            if high <= low:
                raise BadInputError(f"--input-range {low},{high}: high must exceed low")
            return Preprocess.from_input_range(height, width, low, high)
        return Preprocess.from_dict({
            "height": height, "width": width,
            "mean": self.mean if self.mean is not None else (0.0,),
            "std": self.std if self.std is not None else (1.0,),
        })


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read preprocessing file ({exc.strerror})") from exc
    try:
        if Path(path).suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (ValueError, ImportError) as exc:
        raise BadInputError(f"{path}: not valid JSON/YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a mapping of preprocessing fields")
    return data
