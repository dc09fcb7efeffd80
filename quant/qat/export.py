"""Export a fine-tuned tfmot model to a full-integer, batch-1 ``.tflite`` for the Edge TPU."""

from __future__ import annotations

from quant.modes import IoType, parse
from quant.ptq import compat
from quant.ptq.convert import run_converter, tf_dtype


def to_tflite(qat_model, input_shape: tuple[int, ...],
              io_type: IoType | str = IoType.UINT8) -> bytes:
    """Convert ``qat_model`` to int8 with a static batch of 1 and ``io_type`` input / output.

    The fake-quant ranges learnt in training become the int8 scales; BatchNorm is folded
    into the convolutions by the converter.

    Raises:
        BadInputError: an unknown I/O type, or the converter fails (first line of its error).
    """
    from edgeq._tensorflow import tf

    io_type = parse(IoType, io_type, "--io")
    function = tf.function(lambda x: qat_model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, *input_shape), tf.float32, name="input"))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], qat_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if io_type != IoType.FLOAT:
        converter.inference_input_type = converter.inference_output_type = tf_dtype(io_type)
    return run_converter(converter, "the trained model")


def edgetpu_problems(model: bytes, io_type: str) -> list[str]:
    """Return why ops of ``model`` would not map to the Edge TPU (PTQ's own check).

    With ``float`` I/O the QUANTIZE of the input and the DEQUANTIZE of the output are
    expected on the CPU.
    """
    return compat.edgetpu_problems(model, allowed_on_cpu=compat.cpu_ops(io_type))
