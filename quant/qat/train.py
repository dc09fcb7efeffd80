"""The fine-tuning loop: distillation from the float model on streamed, augmented batches.

Each step runs the float model (the teacher) and the tfmot-wrapped one on the same augmented
batch of the training pipeline (:func:`quant.qat.dataset.pipeline`). Loss:
``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, plus ``label_weight *``
cross-entropy over the images that have a label (label -1: none). Adam with a cosine
learning-rate decay over all steps. The step runs under a ``tf.distribute`` strategy
(:mod:`.distribute`): each replica takes its share of the global batch, divides its losses
by the global batch size, and the replicas' sums are added. After each epoch the model, the
optimizer and the epoch are saved under the checkpoint folder (``state.json`` by the chief
only); a later run with the same model, images and settings resumes from there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edgeq.errors import BadInputError
from edgeq.images import Preprocess
from quant.qat import distribute
from quant.qat.dataset import TrainingFiles, pipeline
from quant.qat.layers import trainable_variables

STATE_FILE = "state.json"


@dataclasses.dataclass(frozen=True)
class EpochStats:
    """What one epoch did: mean loss, agreement with the float model's top-1, steps, seconds."""

    epoch: int
    loss: float
    agreement: float
    steps: int
    seconds: float


def read_state(folder: Path) -> dict[str, Any]:
    """Return the saved progress of a checkpoint folder (``{}`` when there is none)."""
    path = folder / STATE_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    temp = folder / (STATE_FILE + ".tmp")
    temp.write_text(json.dumps(state, indent=2) + "\n")
    temp.replace(folder / STATE_FILE)


def fit(qat_model, teacher, files: TrainingFiles, preprocess: Preprocess, options: Any,
        checkpoint_dir: Path, strategy: Any,
        on_epoch_end: Callable[[EpochStats], None] | None = None) -> list[EpochStats]:
    """Fine-tune ``qat_model``; save a checkpoint after every epoch; resume from one.

    An epoch is ``ceil(len(files) / batch_size)`` steps; ``options.steps`` sets the total
    instead (the last epoch may be partial).

    Args:
        qat_model: the tfmot-wrapped model (batch None), ranges already set, built in
            ``strategy.scope()``.
        teacher: the float model (batch None, same scope), run on every training batch.
        files: the training images (:mod:`quant.qat.dataset`).
        preprocess: the model's input size and normalization.
        options: a :class:`quant.qat.QatOptions`.
        checkpoint_dir: where checkpoints and ``state.json`` live.
        strategy: the ``tf.distribute`` strategy (:func:`quant.qat.distribute.strategy`).
        on_epoch_end: called with each finished epoch's stats (after its checkpoint).

    Returns:
        The stats of the epochs trained in this call (empty when already complete).

    Raises:
        BadInputError: an image cannot be decoded or a label does not fit the model.
    """
    from edgeq._tensorflow import keras, tf

    batch_size = min(options.batch_size, len(files))
    per_epoch = math.ceil(len(files) / batch_size)
    total_steps = options.steps if options.steps else options.epochs * per_epoch
    epochs = math.ceil(total_steps / per_epoch)
    variables = trainable_variables(qat_model)
    with strategy.scope():
        schedule = keras.optimizers.schedules.CosineDecay(options.lr, max(total_steps, 1))
        optimizer = keras.optimizers.Adam(schedule)
        optimizer.build(variables)
        checkpoint = tf.train.Checkpoint(model=qat_model, optimizer=optimizer)
    state = read_state(checkpoint_dir)
    done = int(state.get("epochs_done", 0))
    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    if done and latest:
        checkpoint.restore(latest)
    else:
        done = 0
    if done >= epochs:
        return []
    machines, worker = distribute.worker_shard(strategy)
    data = pipeline(files, preprocess, batch_size, options.seed + done, flip=options.flip,
                    shard=(machines, worker))
    batches = iter(strategy.experimental_distribute_dataset(data))
    step = _train_step(strategy, qat_model, teacher, optimizer, variables, options, batch_size,
                       files.has_labels)
    chief = distribute.is_chief(strategy)
    history = []
    for epoch in range(done, epochs):
        start = time.perf_counter()
        steps = min(per_epoch, total_steps - epoch * per_epoch)
        losses, agrees = [], []
        bar = tqdm(range(steps), desc=f"QAT epoch {epoch + 1}/{epochs}", unit="step",
                   disable=not (options.progress and chief), leave=False)
        for _ in bar:
            try:
                loss, agree = step(next(batches))
            except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
                raise BadInputError(
                    f"{files.source}: training stopped on its data "
                    f"({exc.message.strip().splitlines()[0]}); an image cannot be decoded or "
                    "a label is not an output of the model: fix or remove it, then rerun to "
                    "resume") from None
            losses.append(float(loss))
            agrees.append(float(agree))
            bar.set_postfix(loss=f"{np.mean(losses):.4f}", agree=f"{np.mean(agrees):.3f}")
        bar.close()
        _save(checkpoint, checkpoint_dir, epoch + 1, chief, worker)
        stats = EpochStats(epoch + 1, float(np.mean(losses)), float(np.mean(agrees)), steps,
                           time.perf_counter() - start)
        history.append(stats)
        previous = state.get("history", [])[:epoch]
        state = {"epochs_done": epoch + 1,
                 "history": [*previous, dataclasses.asdict(stats)]}
        if chief:
            _write_state(checkpoint_dir, state)
        if options.progress and chief:
            print(f"QAT epoch {epoch + 1}/{epochs}: loss {stats.loss:.4f}, agreement with "
                  f"float {stats.agreement:.3f}, {steps / stats.seconds:.2f} steps/s, "
                  f"{stats.seconds:.0f} s", file=sys.stderr, flush=True)
        if on_epoch_end is not None:
            on_epoch_end(stats)
    return history


def _train_step(strategy: Any, qat_model, teacher, optimizer, variables: list, options: Any,
                batch_size: int, labelled: bool) -> Callable:
    """Return the compiled step: (images, labels) per replica -> (loss, agreement) summed."""
    from edgeq._tensorflow import tf

    temperature = float(options.temperature)
    weight = float(options.label_weight)
    use_labels = labelled and weight > 0
    total = tf.distribute.ReduceOp.SUM

    def replica_step(images, labels):
        soft = teacher(images, training=False)
        with tf.GradientTape() as tape:
            student = qat_model(images, training=True)
            target = tf.nn.softmax(soft / temperature)
            kl = tf.reduce_sum(target * (tf.math.log(target + 1e-12)
                                         - tf.nn.log_softmax(student / temperature)), axis=-1)
            loss = tf.nn.compute_average_loss(kl, global_batch_size=batch_size)
            loss *= temperature ** 2
            if use_labels:
                known = labels >= 0
                ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(labels, 0),
                                                                    student)
                count = tf.distribute.get_replica_context().all_reduce(
                    total, tf.reduce_sum(tf.cast(known, tf.float32)))
                loss += weight * tf.reduce_sum(tf.where(known, ce, 0.0)) / tf.maximum(count, 1.0)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        agree = tf.cast(tf.equal(tf.argmax(student, -1), tf.argmax(soft, -1)), tf.float32)
        return loss, tf.reduce_sum(agree) / batch_size

    @tf.function
    def step(batch):
        loss, agree = strategy.run(replica_step, args=batch)
        return strategy.reduce(total, loss, axis=None), strategy.reduce(total, agree, axis=None)

    return step


def _save(checkpoint, folder: Path, epoch: int, chief: bool, worker: int) -> None:
    """Save ``checkpoint`` as epoch ``epoch`` (one kept).

    Every machine saves (reading distributed variables takes all of them); the chief into
    ``folder``, the others into a scratch folder that they delete.
    """
    from edgeq._tensorflow import tf

    target = folder if chief else folder / f"worker-{worker}.tmp"
    tf.train.CheckpointManager(checkpoint, str(target), max_to_keep=1).save(
        checkpoint_number=epoch)
    if not chief:
        shutil.rmtree(target, ignore_errors=True)
