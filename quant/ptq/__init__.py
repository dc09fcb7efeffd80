"""Full-integer post-training quantization for the Edge TPU: a facade over small stages.

``quantize_model(float_model, calibration, options)`` runs: optional cross-layer
equalization (:mod:`.equalize`), calibration (:func:`.convert.calibrate`), activation range
choice (:mod:`.ranges`), raw-pixel input (:mod:`.pixel_input`), Hessian-aware weight
rounding and bias correction (:mod:`.weights`), HARD_SWISH lowered to Edge TPU ops
(:mod:`.hard_swish`), for detectors the anchor offsets (:mod:`.box_offsets`), full-int8
quantization and the I/O type (:mod:`.convert`), for detectors the post-processing op
(:mod:`quant.detection.postprocess`), and the Edge TPU compatibility check (:mod:`.compat`).
The stages between calibration and quantization edit one mutable model
(:mod:`quant.tflite_edit`), read once from the calibrated flatbuffer and serialized once for
the quantizer. ``save`` writes the ``.tflite`` with its JSON
sidecar and Markdown summary (:mod:`quant.sidecar`), atomically; the result is a
:class:`~quant.ptq.result.QuantizedModel`.
"""

from __future__ import annotations

import time

from tqdm import tqdm

from quant.calibration import CalibrationSet
from quant.float_model import FloatModel
from quant.options import QuantizeOptions
from quant.ptq import (
    box_offsets,
    compat,
    convert,
    equalize,
    hard_swish,
    pixel_input,
    ranges,
    weights,
)
from quant.ptq.result import QuantizedModel
from quant.sidecar import save
from quant.tflite_edit import io_tensors, read_model, write_model

__all__ = ["QuantizeOptions", "QuantizedModel", "quantize_model", "save"]

def quantize_model(float_model: FloatModel, calibration: CalibrationSet,
                   options: QuantizeOptions | None = None) -> QuantizedModel:
    """Quantize ``float_model`` (a :class:`quant.float_model.FloatModel`) fully to int8.

    Args:
        float_model: the float model and its preprocessing.
        calibration: decoded calibration images (:func:`quant.calibration.calibration_set`).
        options: quantization settings (defaults: uint8 I/O, per-channel, ReLU6 ranges).

    Returns:
        The quantized model with everything its sidecar records.

    Raises:
        BadInputError: the converter cannot convert the model, or the result would not run
            on the Edge TPU (the message names the op and the fix).
    """
    options = options or QuantizeOptions()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    keras_model, cle = float_model.model, None

    def inputs():
        return calibration.inputs(float_model.preprocess)

    if options.equalizes:
        keras_model, cle = equalize.equalize(
            keras_model, (x for x, _ in zip(inputs(), range(options.stats_images), strict=False)))
        timings["equalize_s"] = time.perf_counter() - start

    def calibrating():
        return tqdm(inputs(), total=len(calibration.pixels), desc="calibrate", unit="img",
                    leave=False)

    mark = time.perf_counter()
    calibrated = convert.calibrate(keras_model, calibrating)
    timings["calibrate_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    edited = read_model(calibrated)
    sample = [x for x, _ in zip(inputs(), range(options.range_images), strict=False)]
    new_ranges = ranges.choose_ranges(edited, sample, options.ranges, skip=io_tensors(edited))
    ranges.set_ranges(edited, new_ranges)
    pixel_input.exact_pixel_input(edited, float_model.preprocess, options.io_type)
    timings["ranges_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    stats_inputs = (x for x, _ in zip(inputs(), range(options.stats_images), strict=False))
    weight_report = weights.adjust_weights(
        edited, stats_inputs, options.per_tensor, options.rounding,
        options.corrects_bias(float_model.task))
    timings["weights_s"] = time.perf_counter() - mark
    hard_swish.lower_hard_swish(edited)
    if float_model.task == "detect" and options.io_type != "float" and not options.exact_anchors:
        from quant.detection.postprocess import anchor_offsets

        box_offsets.add_box_offsets(edited, anchor_offsets(float_model.postprocess))
    mark = time.perf_counter()
    model = convert.quantize(write_model(edited), options.io_type, options.per_tensor)
    if float_model.task == "detect":
        from quant.detection.postprocess import append_postprocess

        model = append_postprocess(model, float_model.postprocess,
                                   exact_anchors=options.exact_anchors)
    timings["quantize_s"] = time.perf_counter() - mark
    problems = compat.edgetpu_problems(
        model, allowed_on_cpu=compat.cpu_ops(options.io_type, options.exact_anchors))
    if options.require_edgetpu:
        compat.raise_on_problems(problems, float_model.name)
    timings["total_s"] = time.perf_counter() - start
    return QuantizedModel(
        tflite=model, float_model=float_model, calibration=calibration, options=options,
        equalization=cle, ranges_changed=len(new_ranges), weights=weight_report,
        timings=timings,
        edgetpu_problems=tuple(problems),
    )

