"""Quantization-aware OD API detection exports (``tflite_graph.pb``) to uint8 ``.tflite``.

TF1 quantization-aware archives (``ssd_mobilenet_v1_0.75_depth_quantized_coco``...) ship
``tflite_graph.pb``: a frozen graph with fake-quant nodes that already ends in
``TFLite_Detection_PostProcess``. The documented conversion is the TF1 converter on the
frozen graph with ``inference_type=uint8``, input stats (mean 128, std 128) and custom ops
allowed; the four post-processing outputs are the model outputs.

Example::

    data = convert_tflite_graph("ssd_mobilenet_v2_quantized_300x300_coco.tar.gz")
"""

from __future__ import annotations

from pathlib import Path

from edgeq.errors import BadInputError
from quant.detection.postprocess import OUTPUT_NAMES
from quant.fetch import extract, is_archive

GRAPH_FILE = "tflite_graph.pb"
INPUT_NAME = "normalized_input_image_tensor"
INPUT_STATS = (128.0, 128.0)  # (mean, std) of the uint8 input: [-1, 1] floats


def find_tflite_graph(source: str | Path) -> Path:
    """Return the ``tflite_graph.pb`` of an archive, folder or the file itself.

    Raises:
        BadInputError: there is none (named with where it was looked for).
    """
    path = Path(source).expanduser()
    if is_archive(path):
        if not path.is_file():
            raise BadInputError(f"{path}: no such archive")
        path = extract(path)
    if path.is_dir():
        found = sorted(path.rglob(GRAPH_FILE))
        if not found:
            raise BadInputError(
                f"{source}: holds no {GRAPH_FILE}; only quantization-aware OD API exports "
                "have one (export_tflite_ssd_graph.py), float ones are quantized from "
                "model.ckpt instead"
            )
        return found[0]
    if path.name.endswith(".pb") and path.is_file():
        return path
    raise BadInputError(f"{source}: not a {GRAPH_FILE}, nor an archive or folder holding one")


def convert_tflite_graph(source: str | Path, input_size: tuple[int, int] | None = None) -> bytes:
    """Convert a quantization-aware ``tflite_graph.pb`` to a uint8 ``.tflite`` (bytes).

    Args:
        source: the ``.pb``, or an archive / folder holding it.
        input_size: (height, width); default: the ``pipeline.config`` beside the graph,
            else 300 x 300.

    Raises:
        BadInputError: no graph, or the converter rejects it (its first line quoted).
    """
    from edgeq._tensorflow import tf

    graph = find_tflite_graph(source)
    if input_size is None:
        config = graph.parent / "pipeline.config"
        if config.is_file():
            from quant.detection.pipeline_config import read_ssd_config

            input_size = read_ssd_config(config).image_size
        else:
            input_size = (300, 300)
    height, width = input_size
    try:
        converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
            str(graph), [INPUT_NAME], list(OUTPUT_NAMES), {INPUT_NAME: [1, height, width, 3]})
        converter.inference_type = tf.uint8
        converter.quantized_input_stats = {INPUT_NAME: INPUT_STATS}
        converter.allow_custom_ops = True
        return converter.convert()
    except (OSError, ValueError, RuntimeError, tf.errors.OpError) as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise BadInputError(
            f"{graph}: conversion failed ({lines[0] if lines else type(exc).__name__}); is "
            "it the tflite_graph.pb of export_tflite_ssd_graph.py with add_postprocessing_op?"
        ) from exc
