"""The validation run: stream the images through both models, compute metrics, per-layer
error, latency.

Images are decoded and run in bounded batches by :mod:`quant.validate.stream` (worker
processes or Ray actors, per-batch results kept for resuming), so memory does not grow with
the image set.

:func:`run_validation` returns a plain JSON-ready dict (the content of ``report.json``);
:mod:`quant.validate.report` renders it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq import images as data
from edgeq.errors import BadInputError
from edgeq.images import Preprocess, inception_preprocess
from edgeq.sidecar import sidecar_path
from edgetpu.runtime import cpu_count, list_edge_tpus
from quant.preprocess import PreprocessOptions
from quant.sidecar import Sidecar
from quant.validate import detection, layers, metrics, stream
from quant.validate.latency import measure_latency, model_size_bytes
from quant.validate.reference import Reference, load_reference
from quant.validate.runners import TfliteRunner

# Detections of the float model at or above this score are ground truth for the int8 one.
PSEUDO_GT_SCORE = 0.5


@dataclass(frozen=True)
class ValidateConfig:
    """What to validate and how (mirrors the command-line options)."""

    int8: Path
    data: Path
    float_ref: str | None = None
    labels: Path | None = None
    annotations: Path | None = None
    max_drift: float | None = None
    limit: int | None = None
    layer_images: int = 8
    latency_runs: int = 50
    num_threads: int | None = None
    device: str | None = None
    preprocess_options: Any = None
    label_offset: int | None = None
    engine: stream.Engine = stream.Engine()
    work_dir: Path | None = None
    progress: bool = True


def run_validation(config: ValidateConfig) -> dict[str, Any]:
    """Validate ``config.int8`` against its float reference on ``config.data``.

    The reference is ``config.float_ref`` when given, else the float model and preprocessing
    recorded in the int8 model's sidecar (``x_int8.json`` beside ``x_int8.tflite``); without
    either the int8 model is scored alone (labels or annotations).

    Returns:
        The report as a JSON-ready dict; ``drift_exceeded`` tells whether ``max_drift`` was
        passed (the caller decides the exit code).

    Raises:
        BadInputError: inputs are missing, inconsistent or cannot be compared.
    """
    start = time.perf_counter()
    reference = _reference(config)
    if config.max_drift is not None and reference is None:
        raise BadInputError(f"--max-drift needs a float reference to drift from: "
                            f"{_reference_hint(config)}")
    spec = _preprocess(reference, config)
    int8 = TfliteRunner(config.int8, spec, config.num_threads, config.device)
    _log(f"int8 model {config.int8.name}: input {int8.input_dtype} "
         f"{int8.input_size[0]}x{int8.input_size[1]}")
    if not int8.is_quantized:
        _log(f"note: {config.int8} holds no 8-bit tensor: it is a float model, so the drift "
             "below is not that of a quantized one (pass the int8 .tflite to --int8)")
    if reference is not None:
        _check_compatible(reference, int8, config)
    report: dict[str, Any] = {
        "int8_model": str(config.int8),
        "float_model": reference.describe() if reference else None,
        "data": str(config.data),
        "preprocess": spec.to_dict(),
        "threads": config.num_threads or cpu_count(),
    }
    if int8.is_detector:
        report.update(_detection(config, int8, reference, spec))
    else:
        report.update(_classification(config, int8, reference, spec))
    report["latency"] = _latency(config, reference)
    report["drift_pts"] = _drift_points(report)
    report["max_drift_pts"] = config.max_drift
    report["drift_exceeded"] = (config.max_drift is not None and report["drift_pts"] is not None
                                and report["drift_pts"] > config.max_drift)
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report


def _reference(config: ValidateConfig) -> Reference | None:
    """Load the float reference: ``--float``, else the one the int8 model's sidecar records.

    Returns None when neither names one: the int8 model is then scored alone.

    Raises:
        BadInputError: the sidecar is unusable or records no float model file, or the float
            model cannot be loaded (the message names the sidecar and ``--float``).
    """
    if config.float_ref:
        return load_reference(config.float_ref, config.preprocess_options, config.num_threads,
                              config.int8)
    recorded = Sidecar.beside(config.int8)
    if recorded is None:
        return None
    path = sidecar_path(config.int8)
    arguments = recorded.float_parent.loader_arguments()
    if arguments is None:
        raise BadInputError(f"{path}: records no float model file to load (source "
                            f"{recorded.float_parent.source!r}); pass --float REF")
    source, checkpoint = arguments
    options = config.preprocess_options
    if options is None or not options.given():
        options = PreprocessOptions(recorded=recorded.preprocess)
    _log(f"float reference {source}, recorded in {path}")
    try:
        return load_reference(source, options, config.num_threads, config.int8, checkpoint)
    except BadInputError as exc:
        raise BadInputError(f"{exc} (the float model recorded in {path}; pass --float REF to "
                            "give it)") from exc


def _reference_hint(config: ValidateConfig) -> str:
    """Return how to give a float reference, for the errors of a run without one."""
    return (f"add --float REF, or keep the sidecar quantize wrote "
            f"({sidecar_path(config.int8).name}) beside {config.int8}")


def _preprocess(reference: Reference | None, config: ValidateConfig) -> Preprocess:
    if reference is not None:
        return reference.runner.preprocess
    options = config.preprocess_options
    if options is not None and options.given():
        return options.build(1, 1)  # the size is set from the model input
    return inception_preprocess(1)


def _check_compatible(reference: Reference, int8: TfliteRunner, config: ValidateConfig) -> None:
    if reference.runner.input_size != int8.input_size:
        fw, fh = reference.runner.input_size
        qw, qh = int8.input_size
        raise BadInputError(
            f"input sizes differ: float {reference.source} takes {fw}x{fh}, int8 {config.int8} "
            f"takes {qw}x{qh}; compare a model with the float model it was made from"
        )
    if reference.runner.is_detector != int8.is_detector:
        raise BadInputError(
            f"{reference.source} and {config.int8} are not the same kind of model "
            "(one is a detector, the other a classifier)"
        )


def _classification(config: ValidateConfig, int8: TfliteRunner, reference: Reference | None,
                    spec: Preprocess) -> dict[str, Any]:
    if config.annotations is not None:
        raise BadInputError(f"--annotations is for detection models; {config.int8} is a "
                            "classifier (use --labels)")
    images = data.list_images(config.data, config.labels).head(config.limit)
    if reference is None and images.labels is None:
        raise BadInputError("nothing to measure: give --labels (or a folder per class) or a "
                            f"float reference: {_reference_hint(config)}")
    if reference is not None and reference.runner.num_outputs != int8.num_outputs:
        raise BadInputError(
            f"the float model has {reference.runner.num_outputs} outputs and the int8 model "
            f"{int8.num_outputs}; they do not classify the same classes"
        )
    labels = _labels(images, int8.num_outputs, config)
    batches = [(batch,) for batch in stream.batched(images.paths)]
    records = _run(config, "classify", batches, images.paths, int8, reference)
    summary = metrics.classification_summary(records, labels[0] if labels else None)
    result: dict[str, Any] = {"task": "classify", "images": len(images),
                              "num_outputs": int8.num_outputs,
                              "label_offset": None if labels is None else int(labels[1]),
                              "int8": summary.get("int8", {})}
    if reference is None:
        return result
    result["float"] = summary.get("float", {})
    if labels:
        result["top1_drop"] = result["float"]["top1"] - result["int8"]["top1"]
        result["top5_drop"] = result["float"]["top5"] - result["int8"]["top5"]
    for key in ("agreement", "top5_overlap", "kl_mean", "output_sqnr_db"):
        result[key] = summary[key]
    result["disagreements"] = [{"float": f, "int8": q, "count": n}
                               for f, q, n in summary["disagreements"]]
    result["layers"] = _layers(config, reference, images.paths, int8.preprocess, spec)
    return result


def _run(config: ValidateConfig, method: str, batches: list[tuple], paths: Sequence[Path],
         int8: TfliteRunner, reference: Reference | None) -> stream.Records:
    """Stream ``batches`` through the int8 model and the reference; return the records.

    A float ``.tflite`` reference runs in every worker; a Keras one only in this process.
    """
    in_process = reference is not None and reference.runner.kind != "tflite"
    workers = 1 if in_process else max(1, min(config.engine.workers, len(batches)))
    threads = max(1, (config.num_threads or cpu_count()) // workers)
    models = stream.WorkerModels(config.int8, None if reference is None or in_process
                                 else reference.tflite_path, int8.preprocess, threads,
                                 config.device)
    where = "Ray" if config.engine.ray and not in_process else "process"
    _log(f"running {len(paths)} images in batches of {stream.BATCH_IMAGES} on {workers} "
         f"{where}{'es' if where == 'process' and workers > 1 else ''} "
         f"({threads} thread{'s' if threads > 1 else ''} each)")
    store = None
    if config.work_dir is not None:
        identity = stream.run_identity(models, paths, method,
                                       reference.source if reference else None)
        store = stream.BatchStore(config.work_dir, identity)
    engine = dataclasses.replace(config.engine, workers=workers)
    return stream.run_batches(method, batches, models, engine, store,
                              reference.runner if in_process else None, config.progress)


def _labels(images: data.ImageList, num_outputs: int,
            config: ValidateConfig) -> tuple[np.ndarray, int] | None:
    if images.labels is None:
        return None
    offset = (config.label_offset if config.label_offset is not None
              else data.label_offset(num_outputs, images.labels))
    labels = np.asarray(images.labels) + offset
    if labels.max() >= num_outputs or labels.min() < 0:
        raise BadInputError(f"labels with offset {offset} fall outside the model's "
                            f"{num_outputs} outputs; check --labels / --label-offset")
    return labels, offset


def _layers(config: ValidateConfig, reference: Reference, paths: Sequence[Path],
            decode: Preprocess, spec: Preprocess) -> dict[str, Any]:
    """Per-layer error on the first ``config.layer_images`` images (decoded with
    ``decode``, the int8 model's preprocessing at its input size)."""
    if config.layer_images <= 0:
        return {"skipped": "disabled (--layer-images 0)"}
    if reference.tflite_path is None:
        return {"skipped": "the float reference has no .tflite to compare tensors with"}
    sample = data.decode_images(paths[: config.layer_images], decode)
    _log(f"per-layer error on {len(sample)} images")
    errors = layers.layer_errors(reference.tflite_path, config.int8, sample, spec,
                                 config.num_threads)
    return {"images": len(sample), "tensors": [e.to_dict() for e in errors]}


def _detection(config: ValidateConfig, int8: TfliteRunner, reference: Reference | None,
               spec: Preprocess) -> dict[str, Any]:
    if config.labels is not None:
        raise BadInputError(f"--labels is for classifiers; {config.int8} is a detector "
                            "(use --annotations)")
    if config.annotations is not None:
        images = detection.coco_images(config.data, config.annotations)
    elif reference is not None:
        paths = data.list_images(config.data).paths
        images = detection.CocoImages(tuple(range(1, len(paths) + 1)), paths,
                                      tuple(data.image_sizes(paths)), Path())
    else:
        raise BadInputError("a detector needs --annotations (COCO instances JSON) or a float "
                            f"reference to be scored against: {_reference_hint(config)}")
    if config.limit is not None:
        n = config.limit
        images = detection.CocoImages(images.ids[:n], images.paths[:n], images.sizes[:n],
                                      images.annotations)
    count = len(images.paths)
    batches = [(paths, images.sizes[first:first + len(paths)], first)
               for first, paths in zip(range(0, count, stream.BATCH_IMAGES),
                                       stream.batched(images.paths), strict=True)]
    records = _run(config, "detect", batches, images.paths, int8, reference)
    int8_dets = stream.detections(records, "int8", count)
    result: dict[str, Any] = {"task": "detect", "images": count}
    float_dets = stream.detections(records, "float", count) if reference is not None else None
    if config.annotations is not None:
        truth = detection.load_coco(config.annotations)
        result["int8"] = detection.coco_map(
            truth, detection.to_coco_results(images.ids, int8_dets), images.ids)
        if float_dets is not None:
            result["float"] = detection.coco_map(
                truth, detection.to_coco_results(images.ids, float_dets), images.ids)
            result["map_drop"] = result["float"]["map"] - result["int8"]["map"]
    if float_dets is not None:
        truth = detection.pseudo_ground_truth(images, float_dets, PSEUDO_GT_SCORE)
        if truth.dataset["annotations"]:
            result["int8_vs_float"] = {
                **detection.coco_map(truth, detection.to_coco_results(images.ids, int8_dets),
                                     images.ids),
                "float_score_threshold": PSEUDO_GT_SCORE,
            }
        else:
            result["int8_vs_float"] = {
                "skipped": f"the float model has no detection scoring {PSEUDO_GT_SCORE} or more"
            }
        result["layers"] = _layers(config, reference, images.paths, int8.preprocess, spec)
    return result


def _latency(config: ValidateConfig, reference: Reference | None) -> dict[str, Any]:
    if config.latency_runs <= 0:
        return {"skipped": "disabled (--latency-runs 0)"}
    threads = sorted({1, config.num_threads or cpu_count()})
    models = {"int8": config.int8}
    if reference is not None and reference.tflite_path is not None:
        models["float"] = reference.tflite_path
    _log(f"timing {', '.join(models)} on the CPU with {threads} threads")
    cpu: dict[str, Any] = {"runs": config.latency_runs, "by_threads": {}}
    for n in threads:
        cpu["by_threads"][str(n)] = {
            name: measure_latency(path, n, config.latency_runs).to_dict()
            for name, path in models.items()
        }
    top = cpu["by_threads"][str(threads[-1])]
    for name in models:
        cpu[f"{name}_ms_p50"] = top[name]["p50"]
    return {
        "cpu": cpu,
        "model_bytes": {name: model_size_bytes(path) for name, path in models.items()},
        "edgetpu": _edgetpu_latency(config),
        "edgetpu_estimated": _edgetpu_estimate(config),
    }


def _edgetpu_estimate(config: ValidateConfig) -> dict[str, Any]:
    """The cost model's Edge TPU latency of the int8 model: an estimate, not a measurement."""
    from edgetpu.cost import estimate
    from edgetpu.runtime import is_edgetpu_model

    if is_edgetpu_model(config.int8):
        return {"skipped": "the model is already compiled (estimate its source .tflite)"}
    return {"estimate": True, "source": "edgetpu.cost (fitted on Coral's published latencies)",
            "ms": estimate(config.int8).latency_ms}


def _edgetpu_latency(config: ValidateConfig) -> dict[str, Any]:
    from edgetpu.runtime import is_edgetpu_model

    if not is_edgetpu_model(config.int8):
        return {"skipped": "the int8 model is not compiled for the Edge TPU"}
    devices = list_edge_tpus()
    if not devices:
        return {"skipped": "no Edge TPU attached"}
    stats = measure_latency(config.int8, 1, config.latency_runs, device=config.device)
    return {"device": config.device or f"{devices[0].type}:0", **stats.to_dict()}


def _drift_points(report: dict[str, Any]) -> float | None:
    """Return the accuracy lost by the int8 model, in percentage points (None: unknown)."""
    if "top1_drop" in report:
        return 100 * report["top1_drop"]
    if "map_drop" in report:
        return 100 * report["map_drop"]
    if "agreement" in report:
        return 100 * (1 - report["agreement"])
    if "map" in report.get("int8_vs_float", {}):
        return 100 * (1 - report["int8_vs_float"]["map"])
    return None


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
