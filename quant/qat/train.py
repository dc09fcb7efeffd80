"""The fine-tuning loop: distillation from the float model, optional labels, resumable.

Loss: ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` against the float model's
outputs (precomputed once for each image and its mirror image), plus ``label_weight *``
cross-entropy when the training set has labels. Adam with a cosine learning-rate decay over
all steps. After each epoch the model, the optimizer and the epoch are saved under the
checkpoint folder; a later run with the same model, images and settings resumes from there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edgeq.errors import MissingToolError
from quant.modes import TrainingDevice, parse
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


def device_name(device: TrainingDevice) -> str:
    """Return the TensorFlow device for ``auto`` / ``cpu`` / ``gpu``.

    Raises:
        BadInputError: an unknown device name.
        MissingToolError: ``gpu`` asked for but TensorFlow sees none.
    """
    from edgeq._tensorflow import tf

    device = parse(TrainingDevice, device, "--device")
    gpus = tf.config.list_physical_devices("GPU")
    if device == TrainingDevice.GPU and not gpus:
        raise MissingToolError("--device gpu: TensorFlow sees no GPU here; use --device cpu "
                               "or auto (a GPU needs the tensorflow[and-cuda] wheel)")
    return "/GPU:0" if gpus and device != TrainingDevice.CPU else "/CPU:0"


def teacher_outputs(float_model, inputs: Callable[[np.ndarray], np.ndarray],
                    pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """Return the float model's outputs [2, N, C] for each image and its mirror image."""
    from edgeq._tensorflow import tf

    run = tf.function(lambda x: float_model(x, training=False))
    halves = []
    for flip in (False, True):
        rows = []
        for start in range(0, len(pixels), batch_size):
            batch = pixels[start:start + batch_size]
            rows.append(run(tf.constant(inputs(batch[:, :, ::-1] if flip else batch))).numpy())
        halves.append(np.concatenate(rows).reshape(len(pixels), -1))
    return np.stack(halves)


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


def fit(qat_model, inputs: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray,
        teacher: np.ndarray, labels: np.ndarray | None, options: Any, checkpoint_dir: Path,
        on_epoch_end: Callable[[EpochStats], None] | None = None) -> list[EpochStats]:
    """Fine-tune ``qat_model``; save a checkpoint after every epoch; resume from one.

    Args:
        qat_model: the tfmot-wrapped model (batch None), ranges already set.
        inputs: turns uint8 pixels [B, H, W, 3] into model inputs.
        pixels: training images, uint8 [N, H, W, 3].
        teacher: float model outputs [2, N, C] (plain, mirrored).
        labels: output indices [N] or None.
        options: a :class:`quant.qat.QatOptions`.
        checkpoint_dir: where checkpoints and ``state.json`` live.
        on_epoch_end: called with each finished epoch's stats (after its checkpoint).

    Returns:
        The stats of the epochs trained in this call (empty when already complete).
    """
    from edgeq._tensorflow import keras, tf

    count = len(pixels)
    batch_size = min(options.batch_size, count)
    per_epoch = math.ceil(count / batch_size)
    total_steps = options.steps if options.steps else options.epochs * per_epoch
    epochs = math.ceil(total_steps / per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(options.lr, max(total_steps, 1))
    optimizer = keras.optimizers.Adam(schedule)
    checkpoint = tf.train.Checkpoint(model=qat_model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=1)
    state = read_state(checkpoint_dir)
    done = int(state.get("epochs_done", 0))
    if done and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint)
    else:
        done = 0
    temperature = float(options.temperature)
    use_labels = labels is not None and options.label_weight > 0

    variables = trainable_variables(qat_model)

    @tf.function
    def step(x, soft, hard):
        with tf.GradientTape() as tape:
            student = qat_model(x, training=True)
            log_p = tf.nn.log_softmax(student / temperature)
            target = tf.nn.softmax(soft / temperature)
            kl = tf.reduce_sum(target * (tf.math.log(target + 1e-12) - log_p), axis=-1)
            loss = tf.reduce_mean(kl) * temperature ** 2
            if use_labels:
                ce = tf.nn.sparse_softmax_cross_entropy_with_logits(hard, student)
                loss += options.label_weight * tf.reduce_mean(ce)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        agree = tf.reduce_mean(tf.cast(
            tf.equal(tf.argmax(student, -1), tf.argmax(soft, -1)), tf.float32))
        return loss, agree

    history = []
    dummy = np.zeros(count, np.int64)
    for epoch in range(done, epochs):
        start = time.perf_counter()
        rng = np.random.default_rng([options.seed, epoch])
        order = rng.permutation(count)
        flips = rng.random(count) < 0.5 if options.flip else np.zeros(count, bool)
        steps = min(per_epoch, total_steps - epoch * per_epoch)
        losses, agrees = [], []
        bar = tqdm(range(steps), desc=f"QAT epoch {epoch + 1}/{epochs}", unit="step",
                   disable=not options.progress, leave=False)
        for i in bar:
            index = order[i * batch_size:(i + 1) * batch_size]
            batch = pixels[index]
            flip = flips[index]
            batch = np.where(flip[:, None, None, None], batch[:, :, ::-1], batch)
            soft = teacher[flip.astype(int), index]
            hard = (labels if labels is not None else dummy)[index]
            loss, agree = step(tf.constant(inputs(batch)), tf.constant(soft),
                               tf.constant(hard))
            losses.append(float(loss))
            agrees.append(float(agree))
            bar.set_postfix(loss=f"{np.mean(losses):.4f}", agree=f"{np.mean(agrees):.3f}")
        bar.close()
        manager.save(checkpoint_number=epoch + 1)
        stats = EpochStats(epoch + 1, float(np.mean(losses)), float(np.mean(agrees)), steps,
                           time.perf_counter() - start)
        history.append(stats)
        previous = state.get("history", [])[:epoch]
        state = {"epochs_done": epoch + 1,
                 "history": [*previous, dataclasses.asdict(stats)]}
        _write_state(checkpoint_dir, state)
        if options.progress:
            print(f"QAT epoch {epoch + 1}/{epochs}: loss {stats.loss:.4f}, agreement with "
                  f"float {stats.agreement:.3f}, {stats.seconds:.0f} s", file=sys.stderr,
                  flush=True)
        if on_epoch_end is not None:
            on_epoch_end(stats)
    return history
