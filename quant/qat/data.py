"""Training images for quantization-aware fine-tuning: folders, optional labels, decoded once.

Images come from one or more folders (searched recursively) through
:func:`edgeq.images.list_images`; a labels CSV (``file,label``) applies to the first
folder and adds cross-entropy to the distillation loss. Pixels are decoded and resized once
with the model's own :class:`~edgeq.images.Preprocess`
(:func:`edgeq.images.decode_images`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeq.errors import BadInputError
from edgeq.images import Preprocess, decode_images, label_offset, list_images


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """Decoded training images and where they came from.

    Attributes:
        pixels: uint8 RGB pixels [N, H, W, 3] at the model's input size.
        paths: the files, in the order of ``pixels``.
        labels: model output indices [N] (offset already applied), or None without labels.
        source: the folders (and labels CSV) they came from, for the sidecar.
        sha256: hash of the file list and preprocessing, recorded in the sidecar.
        skipped: unreadable files (always empty: a bad image is an error here).
    """

    pixels: np.ndarray
    paths: tuple[Path, ...]
    labels: np.ndarray | None
    source: str
    sha256: str
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.paths)


def training_set(paths: Sequence[Path], pixels: np.ndarray, source: str,
                 labels: Sequence[int] | np.ndarray | None = None,
                 preprocess: Preprocess | None = None) -> TrainingSet:
    """Return a :class:`TrainingSet` for already decoded ``pixels`` of ``paths``.

    Args:
        paths: image files, one per row of ``pixels``.
        pixels: uint8 [N, H, W, 3].
        source: a description for the sidecar.
        labels: model output indices, one per image, or None.
        preprocess: the preprocessing used (part of the hash).

    Raises:
        BadInputError: counts do not match or the set is empty.
    """
    if len(paths) == 0:
        raise BadInputError(f"{source}: no training images")
    if len(paths) != len(pixels) or (labels is not None and len(labels) != len(paths)):
        raise BadInputError(f"{source}: {len(paths)} images but {len(pixels)} decoded and "
                            f"{'no' if labels is None else len(labels)} labels")
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path).encode() + b"\0")
    if labels is not None:
        digest.update(np.asarray(labels, np.int64).tobytes())
    if preprocess is not None:
        digest.update(repr(preprocess.to_dict()).encode())
    return TrainingSet(pixels, tuple(Path(p) for p in paths),
                       None if labels is None else np.asarray(labels, np.int64),
                       source, digest.hexdigest())


def load_training_set(folders: str | Path | Sequence[str | Path], preprocess: Preprocess,
                      num_outputs: int, labels_csv: str | Path | None = None,
                      limit: int | None = None) -> TrainingSet:
    """List, label and decode the training images.

    Args:
        folders: one folder or several (recursive); with ``labels_csv`` only the first
            folder is read, through the CSV.
        preprocess: the model's preprocessing (decides the pixel size).
        num_outputs: the model's number of outputs (1001-class TF-slim models get +1 on
            0-based labels, see :func:`edgeq.images.label_offset`).
        labels_csv: ``file,label`` CSV; None trains by distillation only.
        limit: use only the first ``limit`` images (sorted), for quick runs.

    Raises:
        BadInputError: a folder is missing or empty, a label does not fit the model, or an
            image cannot be read (the message names it).
    """
    if isinstance(folders, (str, Path)):
        folders = [folders]
    if not folders:
        raise BadInputError("no training folder given (--train-dir)")
    raw_labels: tuple[int, ...] | None = None
    if labels_csv is not None:
        if len(folders) > 1:
            raise BadInputError("--labels applies to one --train-dir; pass a single folder")
        images = list_images(folders[0], labels_csv)
        paths, raw_labels = list(images.paths), images.labels
        source = f"{folders[0]} (labels {labels_csv})"
    else:
        paths = [p for folder in folders for p in list_images(folder).paths]
        source = ", ".join(str(f) for f in folders)
    if limit is not None:
        paths = paths[:limit]
        raw_labels = raw_labels[:limit] if raw_labels is not None else None
    labels = None
    if raw_labels is not None:
        offset = label_offset(num_outputs, raw_labels)
        labels = [label + offset for label in raw_labels]
    pixels = decode_images(paths, preprocess)
    return training_set(paths, pixels, source, labels, preprocess)
