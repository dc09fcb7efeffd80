"""Two-step full-integer conversion: calibrate (float model + ranges), then quantize.

Between the steps the activation ranges can be edited (:mod:`quant.ptq.ranges`). The
quantizer writes int8 tensors with uint8, int8 or float input and output.
"""

from __future__ import annotations

import contextlib
import io

from edgeq.errors import BadInputError
from edgeq.logs import native_stderr_hidden
from quant.modes import IoType, parse


def calibrate(keras_model, representative_inputs) -> bytes:
    """Convert ``keras_model`` to a float TFLite model whose tensors carry calibrated ranges.

    Args:
        keras_model: a tf-keras model with a static batch-1 input.
        representative_inputs: a callable returning an iterator of float inputs [1,H,W,3].

    Returns:
        The calibrated float model (flatbuffer bytes).
    """
    from edgeq._tensorflow import tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in representative_inputs())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True
    return run_converter(converter, "the model")


def run_converter(converter, what: str) -> bytes:
    """Run a configured ``TFLiteConverter`` quietly; return the flatbuffer.

    Raises:
        BadInputError: the converter failed; the first line of its error names why.
    """
    try:
        with native_stderr_hidden(), contextlib.redirect_stdout(io.StringIO()):
            return bytes(converter.convert())
    except Exception as exc:  # the converter raises many types; report one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"the TFLite converter could not convert {what} ({first})") \
            from exc


def tf_dtype(io_type: IoType | str):
    """Return the TensorFlow dtype of a model input / output of ``io_type``."""
    from edgeq._tensorflow import tf

    io_type = parse(IoType, io_type, "--io")
    return {IoType.UINT8: tf.uint8, IoType.INT8: tf.int8, IoType.FLOAT: tf.float32}[io_type]


def quantize(calibrated: bytes, io_type: IoType | str = IoType.UINT8,
             per_tensor: bool = False) -> bytes:
    """Quantize a calibrated model to int8 with ``uint8``, ``int8`` or ``float`` I/O.

    Called as the TFLite converter calls it (not ``fully_quantize``, which forces int8 I/O).
    Fully-connected layers always get per-tensor weights: the Edge TPU compiler's
    FULLY_CONNECTED support predates per-channel weights for it.
    """
    from edgeq._tensorflow import lite_convert

    dtype = tf_dtype(io_type)
    with native_stderr_hidden(), contextlib.redirect_stdout(io.StringIO()):
        return bytes(lite_convert.mlir_quantize(
            calibrated, disable_per_channel=per_tensor,
            input_data_type=dtype, output_data_type=dtype,
            disable_per_channel_for_dense_layers=True,
        ))
