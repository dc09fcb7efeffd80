"""The settings of a quantization run, post-training or quantization-aware (both recorded in
the sidecar). Importing this module imports neither TensorFlow nor the quantizers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgeq.errors import BadInputError
from quant.modes import IoType, RangeMethod, Rounding, Strategy, Switch, TrainingDevice, parse


@dataclasses.dataclass(frozen=True)
class QuantizeOptions:
    """Settings of one quantization run (recorded in the sidecar).

    Attributes:
        io_type: ``uint8`` (default, what Coral examples feed), ``int8`` or ``float``.
        per_tensor: per-tensor weights instead of per-channel.
        equalize: cross-layer equalization (ReLU6 kept, see :mod:`.equalize`): ``on``,
            ``off`` (default: measured on MobileNetV2 it does not help once weights are
            rounded by ``hessian`` with bias correction, per-tensor 73.4 -> 72.7 top-1),
            or ``auto`` (with per-tensor weights).
        ranges: activation range method: ``relu6`` (default: min / max, ReLU6 outputs
            [0, 6]), ``minmax`` or ``mse`` (see :mod:`quant.ptq.ranges`).
        range_images: calibration images used to choose ranges (``mse``).
        rounding: weight rounding: ``hessian`` (default: learned from the calibration
            images' layer inputs, see :mod:`.rounding`) or ``nearest`` (the converter's).
        bias_correction: cancel the mean output shift of weight rounding: ``on``, ``off``
            or ``auto`` (default: on for classifiers, off for detectors). Measured:
            MobileNetV2 agreement 0.970 -> 0.984 with it; SSD MobileNet v1 0.75 COCO mAP
            drop 0.0027 without it against 0.0064 with it (mean over five calibration
            subsets, on the 79 annotated coco_mini images, the only annotated set here).
        stats_images: calibration images the layer statistics of ``rounding`` and
            ``bias_correction`` are measured on.
        exact_anchors: detectors only: float anchors behind a DEQUANTIZE of the box
            encodings (one more CPU op) instead of uint8 anchors. Without it, box offsets
            (:mod:`quant.ptq.box_offsets`) make the uint8 anchors decode like the float ones.
        require_edgetpu: refuse a result that would not map completely (default); when
            False the problems are recorded in the result instead.
    """

    io_type: IoType = IoType.UINT8
    per_tensor: bool = False
    equalize: Switch = Switch.OFF
    ranges: RangeMethod = RangeMethod.RELU6
    range_images: int = 32
    rounding: Rounding = Rounding.HESSIAN
    bias_correction: Switch = Switch.AUTO
    stats_images: int = 64
    exact_anchors: bool = False
    require_edgetpu: bool = True

    def __post_init__(self) -> None:
        """Turn the modes given as strings into their enums.

        Raises:
            BadInputError: a mode or an image count is out of range.
        """
        for field, mode in (("io_type", IoType), ("equalize", Switch), ("ranges", RangeMethod),
                            ("rounding", Rounding), ("bias_correction", Switch)):
            what = "--io" if field == "io_type" else field
            object.__setattr__(self, field, parse(mode, getattr(self, field), what))
        if self.stats_images < 1 or self.range_images < 1:
            raise BadInputError("stats_images and range_images must be at least 1")

    def corrects_bias(self, task: str) -> bool:
        """Return True when bias correction runs for a model of ``task``."""
        return self.bias_correction == Switch.ON or (self.bias_correction == Switch.AUTO
                                                     and task != "detect")

    @property
    def equalizes(self) -> bool:
        """Return True when cross-layer equalization runs."""
        return self.equalize == Switch.ON or (self.equalize == Switch.AUTO and self.per_tensor)


@dataclasses.dataclass(frozen=True)
class QatOptions:
    """Settings of one fine-tuning run (recorded in the sidecar).

    Attributes:
        epochs: passes over the training images (ignored when ``steps`` is given).
        steps: total optimizer steps instead of epochs (the last epoch may be partial).
        batch_size: images per step.
        lr: peak learning rate (Adam, cosine decay to 0 over all steps).
        temperature: softmax temperature of the distillation loss.
        label_weight: weight of the cross-entropy term when the images have labels.
        io_type: ``uint8`` (default), ``int8`` or ``float`` model input / output.
        device: ``auto`` (GPU when TensorFlow sees one), ``cpu`` or ``gpu``.
        strategy: ``none`` (one device), ``mirrored`` (every local GPU, or the logical CPUs
            without one) or ``multiworker`` (the machines of ``TF_CONFIG``; needs a
            ``checkpoint_dir`` every worker sees), see :mod:`quant.qat.distribute`.
        flip: mirror training images at random (after the random resized crop).
        seed: shuffling seed (a resumed run continues with ``seed + epochs done``).
        range_batches: batches used to set the activation ranges before training.
        checkpoint_dir: where to keep checkpoints; default a folder under the cache named
            after the model, the images and these settings, so rerunning resumes.
        progress: show a progress bar and one line per epoch on stderr.
        require_edgetpu: refuse a result whose ops would not all map to the Edge TPU
            (otherwise they are recorded in ``edgetpu_problems``).
    """

    epochs: int = 3
    steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-5
    temperature: float = 1.0
    label_weight: float = 1.0
    io_type: IoType = IoType.UINT8
    device: TrainingDevice = TrainingDevice.AUTO
    strategy: Strategy = Strategy.NONE
    flip: bool = True
    seed: int = 0
    range_batches: int = 8
    checkpoint_dir: Path | None = None
    progress: bool = True
    require_edgetpu: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "io_type", parse(IoType, self.io_type, "--io"))
        object.__setattr__(self, "device", parse(TrainingDevice, self.device, "--device"))
        object.__setattr__(self, "strategy", parse(Strategy, self.strategy, "--strategy"))
        if self.strategy == Strategy.MULTIWORKER and self.checkpoint_dir is None:
            raise BadInputError("--strategy multiworker needs --checkpoint-dir on storage every "
                                "worker sees (the chief writes the checkpoints, all resume "
                                "from them)")
        if self.steps is not None and self.steps <= 0:
            raise BadInputError(f"--steps must be positive, got {self.steps}")
        if self.steps is None and self.epochs <= 0:
            raise BadInputError(f"--epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0:
            raise BadInputError(f"--batch-size must be positive, got {self.batch_size}")
        if not self.lr > 0:
            raise BadInputError(f"--lr must be positive, got {self.lr}")
        if self.temperature <= 0 or self.label_weight < 0:
            raise BadInputError("temperature must be positive and label_weight >= 0")

    @property
    def per_tensor(self) -> bool:
        """Return False: tfmot's default scheme quantizes conv weights per channel."""
        return False

    def fingerprint(self) -> dict[str, Any]:
        """Return the settings that make a checkpoint reusable (not length, devices, paths)."""
        skip = {"epochs", "steps", "device", "strategy", "checkpoint_dir", "progress",
                "io_type", "require_edgetpu"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
