"""Run by tests/test_qat.py in a fresh process: a short QAT run under a distribution strategy.

``python tests/qat_distributed.py STRATEGY IMAGES CHECKPOINTS``: ``mirrored`` splits the CPU
into two logical devices first (before TensorFlow initializes its devices);
``multiworker`` reads TF_CONFIG. The run stops after its first epoch (as an interrupted run
would), runs again to resume, and prints one JSON line: replicas, resumed epochs, history.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


class Stop(Exception):
    """Raised after the first epoch, as an interruption."""


def main(strategy: str, images: str, checkpoints: str) -> None:
    """Train two epochs of the tiny model, interrupted after the first; print the result."""
    from quant.qat import distribute

    if strategy == "mirrored":
        from edgeq._tensorflow import tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    distribution = distribute.strategy(strategy, "cpu")

    from test_qat import CLASSES, SIZE, tiny_model

    from edgeq.images import inception_preprocess
    from quant.float_model import FloatModel
    from quant.qat import QatOptions, image_files, train_qat

    float_model = FloatModel(model=tiny_model(), preprocess=inception_preprocess(SIZE),
                             name="tiny", task="classify", source="test")
    files = image_files(images, CLASSES)
    options = QatOptions(epochs=2, batch_size=4, strategy=strategy, device="cpu",
                         checkpoint_dir=Path(checkpoints), progress=False)

    def stop(_stats) -> None:
        raise Stop

    with contextlib.suppress(Stop):
        train_qat(float_model, files, options, on_epoch_end=stop)
    result = train_qat(float_model, files, options)
    print(json.dumps({"replicas": distribution.num_replicas_in_sync,
                      "chief": distribute.is_chief(distribution),
                      "resumed": result.resumed_from_epoch, "history": list(result.history),
                      "tflite_bytes": len(result.tflite)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
