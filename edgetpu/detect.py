"""Object detection with a ``TFLite_Detection_PostProcess`` model: frames in, boxes out.

:class:`Detector` runs one model (CPU, or Edge TPU through the delegate) on RGB frames of
any size and times each stage; :func:`frames` reads images, folders, video files or a
camera; :func:`draw` annotates a frame. Boxes are in the original frame's pixels.

Example::

    detector = Detector.open("ssd_edgetpu.tflite", device="usb")
    for frame in frames(images=[Path("street.jpg")]):
        result = detector.detect(frame.rgb, threshold=0.5)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from edgeq.errors import BadInputError, MissingToolError
from edgeq.images import Preprocess, image_files, read_rgb
from edgetpu import adapters
from edgetpu.labels import label_name
from edgetpu.runtime import make_interpreter

STAGES = ("preprocess", "inference", "postprocess")


@dataclass(frozen=True)
class Frame:
    """One RGB frame (H x W x 3 uint8) and where it came from."""

    source: str
    index: int
    rgb: np.ndarray


@dataclass(frozen=True)
class DetectResult:
    """Detections of one frame (highest score first) and the stage times in ms."""

    objects: list[adapters.Detection]
    timing_ms: dict[str, float]


@dataclass
class Detector:
    """A detection model ready to run; ``mean``/``std`` describe its float input."""

    interpreter: Any
    path: Path
    mean: Sequence[float] = adapters.DEFAULT_MEAN
    std: Sequence[float] = adapters.DEFAULT_STD
    _table: Any = field(default=None, init=False, repr=False)

    @classmethod
    def open(cls, model: str | Path, device: str | None = None,
             num_threads: int | None = None) -> Detector:
        """Load a detection model (the Edge TPU delegate when compiled or ``device`` is set).

        Raises:
            BadInputError: the file is not a model with ``TFLite_Detection_PostProcess``.
            MissingToolError: a compiled model without Edge TPU runtime or device.
        """
        path = Path(model)
        interpreter = make_interpreter(path, device=device, num_threads=num_threads)
        interpreter.allocate_tensors()
        try:
            adapters.detection_outputs(interpreter)
        except BadInputError as exc:
            raise BadInputError(
                f"{path}: {exc}; export the detector with its post-processing "
                "(quantize --model <ssd zoo name>) or use a *_postprocess.tflite model"
            ) from None
        detector = cls(interpreter, path)
        detector._table = adapters.pixel_table(interpreter, detector.mean, detector.std)
        return detector

    @property
    def input_size(self) -> tuple[int, int]:
        """Return the model input (width, height)."""
        return adapters.input_size(self.interpreter)

    def detect(self, rgb: np.ndarray, threshold: float = 0.5,
               top_k: int | None = None) -> DetectResult:
        """Return the detections of an RGB frame with score >= threshold, at most ``top_k``."""
        start = time.perf_counter()
        width, height = self.input_size
        resized = Preprocess(height, width).resize_pixels(rgb)
        adapters.set_input(self.interpreter, adapters.pixels_to_input(
            self.interpreter, resized, self.mean, self.std, self._table))
        loaded = time.perf_counter()
        self.interpreter.invoke()
        invoked = time.perf_counter()
        objects = adapters.get_objects(self.interpreter, threshold,
                                       image_scale=(rgb.shape[1], rgb.shape[0]))
        objects = sorted(objects, key=lambda d: -d.score)[:top_k]
        done = time.perf_counter()
        times = (loaded - start, invoked - loaded, done - invoked)
        return DetectResult(objects, {s: t * 1e3 for s, t in zip(STAGES, times, strict=True)})


def read_image(path: Path) -> np.ndarray:
    """Return the RGB pixels of an image file (any mode, see :func:`edgeq.images.read_rgb`).

    Raises:
        BadInputError: the file is not a readable image.
    """
    return np.asarray(read_rgb(path))


def frames(images: Sequence[Path] = (), video: Path | None = None, camera: int | None = None,
           max_frames: int | None = None) -> Iterator[Frame]:
    """Yield RGB frames from images (files or folders), a video file, or a camera index.

    Raises:
        BadInputError: an image or the video cannot be read.
        MissingToolError: OpenCV is missing (video, camera) or the camera cannot be opened.
    """
    if video is None and camera is None:
        for index, path in enumerate(image_files(images)[:max_frames]):
            yield Frame(str(path), index, read_image(path))
        return
    capture = open_capture(video, camera)
    source = str(video) if video is not None else f"camera:{camera}"
    try:
        index = 0
        while max_frames is None or index < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            yield Frame(source, index, np.ascontiguousarray(bgr[:, :, ::-1]))
            index += 1
    finally:
        capture.release()


def open_capture(video: Path | None, camera: int | None) -> Any:
    """Return an opened ``cv2.VideoCapture`` for a video file or a camera index.

    Raises:
        BadInputError: the video file is missing or unreadable.
        MissingToolError: OpenCV is missing or the camera cannot be opened.
    """
    cv2 = import_cv2()
    if video is not None:
        if not video.is_file():
            raise BadInputError(f"{video}: no such video file")
        capture = cv2.VideoCapture(str(video))
        if not capture.isOpened():
            raise BadInputError(f"{video}: OpenCV cannot decode this video (try an .mp4/.avi)")
        return capture
    capture = cv2.VideoCapture(int(camera))
    if not capture.isOpened():
        raise MissingToolError(
            f"camera {camera} cannot be opened; check that it is connected (Linux: "
            f"/dev/video{camera} exists and is readable) and not used by another program"
        )
    return capture


def import_cv2() -> Any:
    """Return the ``cv2`` module.

    Raises:
        MissingToolError: OpenCV is not installed.
    """
    try:
        import cv2
    except ImportError:
        raise MissingToolError(
            "video and camera input need OpenCV: pip install 'edgetpu-quant[video]'"
        ) from None
    return cv2


def draw(rgb: np.ndarray, objects: Sequence[adapters.Detection],
         labels: dict[int, str]) -> Image.Image:
    """Return the frame with each detection's box and ``label score`` drawn on it."""
    image = Image.fromarray(rgb)
    canvas = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 400))
    for obj in objects:
        box = obj.bbox
        canvas.rectangle((box.xmin, box.ymin, box.xmax, box.ymax), outline=(255, 0, 0),
                         width=width)
        text = f"{label_name(labels, obj.label_id)} {obj.score:.2f}"
        canvas.text((box.xmin + width, box.ymin + width), text, fill=(255, 0, 0))
    return image
