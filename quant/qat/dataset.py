"""Training images as ``tf.data`` pipelines: streamed from files, decoded and augmented on
the fly, never the whole set in memory.

Two sources: image files (folders, with an optional ``file,label`` CSV, through
:func:`edgeq.images.list_images`) and TFRecord shards in the standard ImageNet layout
(``image/encoded`` JPEG bytes, ``image/class/label`` 1-based, as written by the TF-slim and
TPU ImageNet conversion scripts). Training batches get a random resized crop and a random
horizontal flip; evaluation batches get the model's own preprocessing (resize, or the
central square crop then resize). Both are rounded to whole pixel values, as the int8
model's uint8 input will be, and normalized with the model's mean and std.

Only file names (and labels) are held; a training pipeline shuffles the names, then reads
and decodes each image when it is needed (TFRecord records are shuffled in a window of
:data:`SHUFFLE_RECORDS` encoded images).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import operator
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeq.errors import BadInputError
from edgeq.images import Preprocess, label_offset, list_images

#: Shuffle window of TFRecord records (encoded images, about 110 kB each for ImageNet).
SHUFFLE_RECORDS = 1024
#: Random resized crop: area fraction and aspect ratio ranges (the Inception recipe).
CROP_AREA = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
#: Image suffixes ``tf.io.decode_image`` cannot read.
UNDECODABLE = (".tif", ".tiff")
#: The features of an ImageNet-layout TFRecord this module reads.
ENCODED, LABEL = "image/encoded", "image/class/label"


@dataclasses.dataclass(frozen=True)
class TrainingFiles:
    """Where training images come from: image files, or TFRecord shards.

    Attributes:
        paths: image files, or TFRecord shard files when ``tfrecords`` is True.
        labels: model output indices per image file (offset applied), or None.
        tfrecords: the paths are ImageNet-layout TFRecord shards (labels inside them).
        label_offset: added to TFRecord labels (1-based ImageNet labels need 0 for a
            1001-output model, -1 for a 1000-output one).
        source: the folders or shard pattern, for the sidecar.
        sha256: hash of the file list (and labels), for the sidecar and checkpoint names.
        count: the number of images (records counted once for shards).
        skipped: unreadable files left out (always empty; the sidecar records it).
    """

    paths: tuple[Path, ...]
    labels: tuple[int, ...] | None
    tfrecords: bool
    label_offset: int
    source: str
    sha256: str
    count: int
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.count

    @property
    def has_labels(self) -> bool:
        """Return True when images carry labels (a labels CSV, or TFRecord shards)."""
        return self.tfrecords or self.labels is not None


def image_files(folders: str | Path | Sequence[str | Path], num_outputs: int,
                labels_csv: str | Path | None = None) -> TrainingFiles:
    """List training image files (nothing is decoded).

    Args:
        folders: one folder or several (recursive); with ``labels_csv`` one folder, read
            through the CSV.
        num_outputs: the model's outputs (1001-class TF-slim models get +1 on 0-based labels,
            see :func:`edgeq.images.label_offset`).
        labels_csv: ``file,label`` CSV; None trains by distillation only.

    Raises:
        BadInputError: no folder, a missing or empty folder, a file TensorFlow cannot
            decode, or labels that do not fit the model.
    """
    if isinstance(folders, (str, Path)):
        folders = [folders]
    if not folders:
        raise BadInputError("no training folder given (--train-dir)")
    if labels_csv is not None:
        if len(folders) > 1:
            raise BadInputError("--labels applies to one --train-dir; pass a single folder")
        listed = list_images(folders[0], labels_csv)
        paths, raw = listed.paths, listed.labels
        source = f"{folders[0]} (labels {labels_csv})"
    else:
        paths = tuple(p for folder in folders for p in list_images(folder).paths)
        raw, source = None, ", ".join(map(str, folders))
    labels = None
    if raw is not None:
        offset = label_offset(num_outputs, raw)
        labels = tuple(label + offset for label in raw)
    return listed_files(paths, source, labels)


def listed_files(paths: Sequence[Path], source: str,
                 labels: Sequence[int] | None = None) -> TrainingFiles:
    """Return the :class:`TrainingFiles` of image files already listed.

    Args:
        paths: the image files.
        source: what they are, for the sidecar.
        labels: model output indices, one per file, or None.

    Raises:
        BadInputError: no file, a count of labels that differs, or a file TensorFlow
            cannot decode.
    """
    paths = tuple(Path(p) for p in paths)
    if not paths:
        raise BadInputError(f"{source}: no training images")
    if labels is not None and len(labels) != len(paths):
        raise BadInputError(f"{source}: {len(paths)} training images but {len(labels)} labels")
    undecodable = next((p for p in paths if p.suffix.lower() in UNDECODABLE), None)
    if undecodable is not None:
        raise BadInputError(f"{undecodable}: TensorFlow cannot decode TIFF training images; "
                            "convert them to JPEG or PNG")
    labels = None if labels is None else tuple(int(label) for label in labels)
    return TrainingFiles(paths, labels, False, 0, source, _digest(paths, labels), len(paths))


def tfrecord_files(pattern: str, num_outputs: int) -> TrainingFiles:
    """List ImageNet-layout TFRecord shards matching ``pattern`` and count their records.

    Counting reads every shard once (bytes only, nothing decoded). Labels are 1-based
    (0 is background), as a 1001-output model indexes them; a 1000-output model gets them
    shifted by -1.

    Raises:
        BadInputError: no shard matches, a shard cannot be read, or the first record is
            not in the ImageNet layout.
    """
    from edgeq._tensorflow import tf

    shards = tuple(Path(p) for p in sorted(glob.glob(pattern)))
    if not shards:
        raise BadInputError(f"{pattern}: no TFRecord shard matches; pass a glob such as "
                            "/data/imagenet/train-*")
    names = [str(p) for p in shards]
    try:
        first = next(iter(tf.data.TFRecordDataset(names[:1]).take(1)), None)
        counts = tf.data.Dataset.from_tensor_slices(names).map(
            _record_count, num_parallel_calls=tf.data.AUTOTUNE)
        count = int(counts.reduce(np.int64(0), operator.add))
    except tf.errors.OpError as exc:
        raise BadInputError(f"{pattern}: cannot read the shards as TFRecords "
                            f"({exc.message.splitlines()[0]}); pass ImageNet TFRecord "
                            "shards") from None
    example = tf.train.Example.FromString(first.numpy()) if first is not None else None
    if example is None or ENCODED not in example.features.feature:
        raise BadInputError(f"{shards[0]}: not an ImageNet-layout TFRecord shard (no "
                            f"{ENCODED!r} feature); write the shards with the TF-slim / TPU "
                            "ImageNet conversion scripts, or use --train-dir")
    offset = 0 if num_outputs == 1001 else -1
    return TrainingFiles(shards, None, True, offset, pattern, _digest(shards, None), count)


def _record_count(shard):
    """Return the number of records of the TFRecord file ``shard`` (a string tensor)."""
    from edgeq._tensorflow import tf

    return tf.data.TFRecordDataset(shard).reduce(np.int64(0), _plus_one)


def _plus_one(count, _record):
    return count + 1


def _digest(paths: Sequence[Path], labels: Sequence[int] | None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path).encode("utf-8", "surrogateescape") + b"\0")
    digest.update(repr(labels).encode())
    return digest.hexdigest()


def pipeline(files: TrainingFiles, preprocess: Preprocess, batch_size: int, seed: int,
             training: bool = True, flip: bool = True, shard: tuple[int, int] = (1, 0)):
    """Return a ``tf.data.Dataset`` of (float images [B, H, W, 3], int64 labels [B]) batches.

    Args:
        files: the images or shards.
        preprocess: the model's input size, mean and std (and resize mode for evaluation).
        batch_size: images per batch (the global batch under a distribution strategy).
        seed: shuffling seed; epochs reshuffle.
        training: random resized crop (and flip), shuffled, repeated forever; otherwise
            the model's preprocessing, in order, one pass.
        flip: mirror training images at random.
        shard: (machines, this one's index): each machine reads its own share of the files
            (of the records when there are fewer shards than machines), so
            ``tf.distribute``'s own sharding is turned off.

    Labels are -1 where unknown (image files without a labels CSV).
    """
    from edgeq._tensorflow import tf

    def parse(record):
        return _parse_record(record, files.label_offset)

    def read(path, label):
        return tf.io.read_file(path), label

    def prepare(encoded, label):
        if training:
            return _augmented(encoded, preprocess, flip), label
        return _evaluated(encoded, preprocess), label

    autotune = tf.data.AUTOTUNE
    machines, index = shard
    if files.tfrecords:
        data = tf.data.Dataset.from_tensor_slices([str(p) for p in files.paths])
        by_file = machines <= len(files.paths)
        if by_file:
            data = data.shard(machines, index)
        if training:
            data = data.shuffle(len(files.paths), seed=seed).repeat().interleave(
                tf.data.TFRecordDataset, num_parallel_calls=autotune, deterministic=False)
        else:
            data = data.flat_map(tf.data.TFRecordDataset)
        if not by_file:
            data = data.shard(machines, index)
        if training:
            data = data.shuffle(SHUFFLE_RECORDS, seed=seed)
        data = data.map(parse, num_parallel_calls=autotune)
    else:
        labels = files.labels or (-1,) * len(files.paths)
        data = tf.data.Dataset.from_tensor_slices(
            ([str(p) for p in files.paths], np.asarray(labels, np.int64)))
        data = data.shard(machines, index)
        if training:
            data = data.shuffle(len(files.paths), seed=seed).repeat()
        data = data.map(read, num_parallel_calls=autotune)
    data = data.map(prepare, num_parallel_calls=autotune, deterministic=not training)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return data.batch(batch_size, drop_remainder=training).prefetch(autotune).with_options(
        options)


def _parse_record(record, offset: int):
    """Return (JPEG bytes, model output index or -1) of an ImageNet-layout record."""
    from edgeq._tensorflow import tf

    features = tf.io.parse_single_example(record, {
        ENCODED: tf.io.FixedLenFeature([], tf.string),
        LABEL: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    })
    label = features[LABEL]
    return features[ENCODED], tf.where(label >= 0, label + offset, tf.constant(-1, tf.int64))


def _decode(encoded):
    """Return uint8 RGB pixels; JPEGs decoded with the accurate IDCT, as Pillow decodes them."""
    from edgeq._tensorflow import tf

    def jpeg():
        return tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")

    def other():
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)

    image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def _normalize(image, preprocess: Preprocess):
    """Round to whole pixel values (what the uint8 model input holds), then normalize."""
    from edgeq._tensorflow import tf

    pixels = tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0.0, 255.0)
    mean = tf.constant(preprocess.mean, tf.float32)
    std = tf.constant(preprocess.std, tf.float32)
    return (pixels - mean) / std


def _augmented(encoded, preprocess: Preprocess, flip: bool):
    """Random resized crop to the model's size, random flip, normalization."""
    from edgeq._tensorflow import tf

    image = _decode(encoded)
    box_start, box_size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), area_range=CROP_AREA,
        aspect_ratio_range=CROP_RATIO, min_object_covered=0.0, max_attempts=10)
    image = tf.slice(image, box_start, box_size)
    image = tf.image.resize(image, (preprocess.height, preprocess.width))
    if flip:
        image = tf.image.random_flip_left_right(image)
    return _normalize(image, preprocess)


def _evaluated(encoded, preprocess: Preprocess):
    """The model's own preprocessing (:meth:`edgeq.images.Preprocess.resize_image`)."""
    from edgeq._tensorflow import tf

    image = _decode(encoded)
    if preprocess.resize == "center_crop":
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        side = tf.reduce_min(shape) * preprocess.crop_fraction
        start = tf.round((shape - side) / 2)
        end = tf.round((shape - side) / 2 + side)
        start, size = tf.cast(start, tf.int32), tf.cast(end - start, tf.int32)
        image = image[start[0]:start[0] + size[0], start[1]:start[1] + size[1]]
    image = tf.image.resize(image, (preprocess.height, preprocess.width),
                            antialias=preprocess.antialias)
    return _normalize(image, preprocess)
