"""Export a fine-tuned tfmot model to a full-integer, batch-1 ``.tflite`` for the Edge TPU."""

from __future__ import annotations

import contextlib
import io

from edgeq.errors import BadInputError
from edgeq.logs import native_stderr_hidden
from quant.modes import IoType, parse
from quant.ptq import compat


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
    if io_type != "float":
        dtype = tf.uint8 if io_type == "uint8" else tf.int8
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
    try:
        with native_stderr_hidden(), contextlib.redirect_stdout(io.StringIO()):
            return bytes(converter.convert())
    except Exception as exc:  # the converter raises many types; report one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"the TFLite converter could not convert the trained model "
                            f"({first})") from exc


def edgetpu_problems(model: bytes, io_type: str) -> list[str]:
    """Return why ops of ``model`` would not map to the Edge TPU (PTQ's own check).

    With ``float`` I/O the QUANTIZE of the input and the DEQUANTIZE of the output are
    expected on the CPU.
    """
    return compat.edgetpu_problems(model, allowed_on_cpu=compat.cpu_ops(io_type))
