"""Quantization-aware fine-tuning (tensorflow-model-optimization) exported for the Edge TPU.

``train_qat(float_model, files, options)`` runs: wrap the float model with tfmot's default
8-bit scheme (:mod:`.layers`: BatchNorm kept for the converter to fold, frozen statistics,
unsupported layers refused), start each activation range at the float model's min / max on
the first evaluation batches, fine-tune by distillation from the float model (plus
cross-entropy with labels) on streamed, augmented batches (:mod:`.dataset`) with checkpoints
each epoch (:mod:`.train`), on one device or under a ``tf.distribute`` strategy
(:mod:`.distribute`), export a batch-1 full-integer ``.tflite`` with uint8 / int8 / float I/O
and check with PTQ's Edge TPU check that every op maps (:mod:`.export`). ``save``
(:func:`quant.sidecar.save`, shared with PTQ) writes the model, its JSON sidecar and a
Markdown summary.

Example::

    from quant.qat import QatOptions, image_files, save, train_qat
    from quant.sources import load_float_model

    fm = load_float_model("mobilenet_v2_1.0_224", "mobilenet_v2_1.0_224.tgz")
    files = image_files(["calib/", "more/"], fm.num_classes)  # or tfrecord_files("train-*", ...)
    result = train_qat(fm, files, QatOptions(epochs=3))
    save(result, "out/")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeq.errors import BadInputError
from quant.options import QatOptions
from quant.qat.dataset import TrainingFiles, image_files, pipeline, tfrecord_files
from quant.qat.train import EpochStats
from quant.sidecar import save

__all__ = ["QatOptions", "QatResult", "TrainingFiles", "image_files", "save", "tfrecord_files",
           "train_qat"]


@dataclasses.dataclass(frozen=True)
class QatResult:
    """A fine-tuned int8 model and what produced it (shaped like :class:`quant.ptq.QuantizedModel`).

    Attributes:
        tflite: the full-integer flatbuffer (batch 1, every op checked to map to the Edge TPU).
        float_model: the :class:`quant.float_model.FloatModel` it came from.
        calibration: the :class:`~quant.qat.dataset.TrainingFiles` it was trained on (the
            fields PTQ's sidecar reads from a calibration set).
        options: the :class:`QatOptions` used.
        history: per-epoch stats of every epoch, including those of an earlier interrupted run.
        resumed_from_epoch: epochs already done by an earlier run (0 for a fresh run).
        checkpoint_dir: where the checkpoints are.
        timings: seconds per stage (``train_s`` counts this run only).
        drift: quick drift on held-out images (filled by :meth:`with_drift`).
        edgetpu_problems: ops the analyzer predicts on the CPU (empty unless
            ``require_edgetpu`` was off).
    """

    tflite: bytes
    float_model: Any
    calibration: TrainingFiles
    options: QatOptions
    history: tuple[dict[str, Any], ...] = ()
    resumed_from_epoch: int = 0
    checkpoint_dir: Path | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    drift: dict[str, Any] | None = None
    edgetpu_problems: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Return the output stem, ``<model>_qat_int8``."""
        return f"{self.float_model.name}_qat_int8"

    def with_drift(self, drift: dict[str, Any]) -> QatResult:
        """Return a copy carrying a quick drift measurement."""
        return dataclasses.replace(self, drift=drift)

    def derived_figures(self) -> dict[str, Any]:
        """Return what only QAT derives, for the sidecar: scheme, loss, history, checkpoints."""
        return {
            "scheme": "tfmot default 8-bit",
            "loss": ("distillation + cross-entropy" if self.calibration.has_labels
                     else "distillation"),
            "history": list(self.history),
            "resumed_from_epoch": self.resumed_from_epoch,
            "checkpoint_dir": None if self.checkpoint_dir is None else str(self.checkpoint_dir),
        }


def _checkpoint_dir(float_model, files: TrainingFiles, options: QatOptions) -> Path:
    if options.checkpoint_dir is not None:
        return Path(options.checkpoint_dir)
    from edgeq.paths import cache_dir

    digest = hashlib.sha256()
    for weights in float_model.model.get_weights():
        digest.update(weights.tobytes())
    digest.update(files.sha256.encode())
    digest.update(json.dumps(options.fingerprint(), sort_keys=True, default=str).encode())
    return cache_dir() / "qat" / f"{float_model.name}-{digest.hexdigest()[:16]}"


def train_qat(float_model, files: TrainingFiles, options: QatOptions | None = None,
              on_epoch_end: Callable[[EpochStats], None] | None = None) -> QatResult:
    """Fine-tune ``float_model`` quantization-aware and export it to full integer.

    Nothing is written except checkpoints (``options.checkpoint_dir``, by default under the
    cache, named after the float weights, the images and the settings that shape training):
    rerunning the same call after an interruption resumes after the last finished epoch; a
    finished run is not trained again, only exported. Call :func:`save` to write the model
    (under ``multiworker``, on the chief only: :func:`quant.qat.distribute.is_chief`).

    Args:
        float_model: a :class:`quant.float_model.FloatModel` classifier: ``model`` a functional
            tf-keras model with a batch-1 input and logits out, ``preprocess``, ``name``,
            ``task == "classify"``.
        files: the training images (:func:`image_files` or :func:`tfrecord_files`), streamed;
            without labels the loss is distillation only, with them cross-entropy is added.
        options: settings (default: 3 epochs, batch 16, Adam lr 1e-5 with cosine decay,
            uint8 I/O, device auto, no distribution strategy).
        on_epoch_end: called after each epoch's checkpoint with its
            :class:`~quant.qat.train.EpochStats` (raising there stops the run, resumable).

    Returns:
        A :class:`QatResult`: ``tflite`` (bytes, batch 1, int8 inside, ``io_type`` I/O, every
        op mapped to the Edge TPU unless ``require_edgetpu`` is off), ``history`` (per-epoch
        loss, agreement with the float top-1, steps, seconds), ``timings`` (``prepare_s``,
        ``train_s``, ``export_s``, ``total_s``), ``name`` (``<model>_qat_int8``),
        ``with_drift`` (as PTQ's, for :func:`quant.ptq.drift.quick_drift`).

    Raises:
        BadInputError: a detector, layers tfmot cannot wrap, an image that cannot be decoded,
            a converter failure, or a result that would not map entirely to the Edge TPU.
        MissingToolError: ``device="gpu"`` without a GPU; ``multiworker`` without a
            reachable ``TF_CONFIG`` cluster.
    """
    from quant.ptq import compat
    from quant.qat import distribute, export, layers, train

    options = options or QatOptions()
    if float_model.task != "classify":
        raise BadInputError(f"{float_model.name}: quantization-aware training supports "
                            "classifiers; use --method ptq for detectors")
    preprocess = float_model.preprocess
    timings: dict[str, float] = {}
    start = time.perf_counter()
    strategy = distribute.strategy(options.strategy, options.device)
    folder = _checkpoint_dir(float_model, files, options)
    folder.mkdir(parents=True, exist_ok=True)
    resumed = int(train.read_state(folder).get("epochs_done", 0))
    with strategy.scope():
        teacher = layers.with_batch(float_model.model, None)
        qat_model = layers.quantize_for_training(teacher, float_model.name)
        if not resumed:
            first = pipeline(files, preprocess, options.batch_size, options.seed,
                             training=False).take(options.range_batches)
            layers.calibrate_ranges(qat_model, teacher, (x.numpy() for x, _ in first),
                                    _pixel_range(preprocess))
    timings["prepare_s"] = time.perf_counter() - start
    mark = time.perf_counter()
    train.fit(qat_model, teacher, files, preprocess, options, folder, strategy, on_epoch_end)
    timings["train_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    shape = tuple(int(d) for d in float_model.model.inputs[0].shape[1:])
    if distribute.worker_shard(strategy)[0] > 1:
        qat_model = layers.local_copy(qat_model, float_model.model, float_model.name)
    model = export.to_tflite(qat_model, shape, options.io_type)
    problems = export.edgetpu_problems(model, options.io_type)
    if options.require_edgetpu:
        compat.raise_on_problems(problems, float_model.name)
    timings["export_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - start
    return QatResult(
        tflite=model, float_model=float_model, calibration=files, options=options,
        history=tuple(train.read_state(folder).get("history", [])), resumed_from_epoch=resumed,
        checkpoint_dir=folder, timings=timings, edgetpu_problems=tuple(problems),
    )


def _pixel_range(preprocess) -> tuple[float, float]:
    """Return the model input values of pixels 0 and 255 over all channels."""
    low = [(0 - m) / s for m, s in zip(preprocess.mean, preprocess.std, strict=True)]
    high = [(255 - m) / s for m, s in zip(preprocess.mean, preprocess.std, strict=True)]
    return min(low + high), max(low + high)
