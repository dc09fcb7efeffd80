"""Two-step full-integer conversion: calibrate (float model + ranges), then quantize.

Between the steps the activation ranges can be edited (:mod:`quant.ptq.ranges`). The
quantizer writes int8 tensors with float I/O; :func:`set_io_type` then gives the model
uint8 or int8 I/O the way the TFLite converter does it.
"""

from __future__ import annotations

import contextlib
import io
import os

from quant.errors import BadInputError

IO_TYPES = ("uint8", "int8", "float")


@contextlib.contextmanager
def _quiet_native_logs():
    """Silence the converter's C++ chatter on stderr (file descriptor 2) for one block."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def calibrate(keras_model, representative_inputs) -> bytes:
    """Convert ``keras_model`` to a float TFLite model whose tensors carry calibrated ranges.

    Args:
        keras_model: a tf-keras model with a static batch-1 input.
        representative_inputs: a callable returning an iterator of float inputs [1,H,W,3].

    Returns:
        The calibrated float model (flatbuffer bytes).
    """
    from quant._tensorflow import tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in representative_inputs())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True
    try:
        with _quiet_native_logs(), contextlib.redirect_stdout(io.StringIO()):
            return bytes(converter.convert())
    except Exception as exc:  # the converter raises many types; report one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"the TFLite converter could not convert the model ({first})") \
            from exc


def quantize(calibrated: bytes, per_tensor: bool = False) -> bytes:
    """Quantize a calibrated model fully to int8 (float I/O through QUANTIZE / DEQUANTIZE).

    Fully-connected layers always get per-tensor weights: the Edge TPU compiler's
    FULLY_CONNECTED support predates per-channel weights for it.
    """
    from tensorflow.lite.python import convert

    from quant._tensorflow import tf

    with _quiet_native_logs(), contextlib.redirect_stdout(io.StringIO()):
        return bytes(convert.mlir_quantize(
            calibrated, disable_per_channel=per_tensor, fully_quantize=True,
            input_data_type=tf.float32, output_data_type=tf.float32,
            disable_per_channel_for_dense_layers=True,
        ))


def set_io_type(model: bytes, io_type: str) -> bytes:
    """Return ``model`` with ``uint8``, ``int8`` or ``float`` input and output tensors."""
    if io_type not in IO_TYPES:
        raise BadInputError(f"unknown I/O type {io_type!r}; expected one of {IO_TYPES}")
    if io_type == "float":
        return model
    from tensorflow.lite.python import util

    from quant._tensorflow import tf

    dtype = {"uint8": tf.uint8, "int8": tf.int8}[io_type]
    return bytes(util.modify_model_io_type(model, dtype, dtype))
