"""The float model the quantizers start from, with everything its sidecar records."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from edgeq.images import Preprocess

if TYPE_CHECKING:
    from edgeq._tensorflow import keras
    from quant.detection.postprocess import DetectionHead
    from quant.zoo import ModelSpec


@dataclasses.dataclass(frozen=True)
class FloatModel:
    """A float model ready for conversion, with everything its sidecar records.

    Attributes:
        model: the tf-keras model (batch 1).
        preprocess: how images are fed to it.
        name: a short name for output files.
        task: ``"classify"`` or ``"detect"``.
        source: the model source as the user gave it.
        source_file: the file or folder read (its checksum goes into the sidecar).
        spec: the zoo entry, when the model comes from the zoo.
        bundled_tflite: a float ``.tflite`` shipped with the checkpoint, if any.
        postprocess: detection post-processing settings (anchors, NMS), for detectors.
    """

    model: keras.Model
    preprocess: Preprocess
    name: str
    task: str
    source: str
    source_file: Path | None = None
    spec: ModelSpec | None = None
    bundled_tflite: Path | None = None
    postprocess: DetectionHead | None = None

    @property
    def num_classes(self) -> int:
        """Return the size of the model's last output dimension."""
        return int(self.model.outputs[0].shape[-1])
