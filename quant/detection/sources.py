"""TF1 Object Detection API archives (``pipeline.config`` + ``model.ckpt``) to float SSDs.

The archive's ``pipeline.config`` decides the architecture
(:func:`quant.detection.ssd.build_ssd`) and the post-processing
(:class:`quant.detection.postprocess.DetectionHead`); ``model.ckpt`` variables are mapped by
name. The model's outputs are box encodings and sigmoid class scores;
``FloatModel.postprocess`` carries the op settings and the anchors.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeq.errors import BadInputError
from edgeq.images import Preprocess
from quant.detection.anchors import ssd_anchors
from quant.detection.pipeline_config import SsdConfig, read_ssd_config
from quant.detection.postprocess import DetectionHead
from quant.detection.preprocessing import extractor_preprocess
from quant.fetch import locate_checkpoint
from quant.float_model import FloatModel

if TYPE_CHECKING:
    from quant.zoo import ModelSpec

# Checkpoint scopes an SSD's weights live in; anything else under them must be consumed.
SSD_SCOPES = ("FeatureExtractor", "BoxPredictor", "WeightSharedConvolutionalBoxPredictor")
# Ranges that quantization-aware training (the ``graph_rewriter`` of ``*_quantized_*``
# configs) adds beside each weight and activation; our PTQ measures its own.
_QUANTIZATION_RANGE = re.compile(r"/(?:weights_quant|act_quant)/(?:min|max)$")
# The box-encoding reshape of each feature map (its input is the predictor's conv output).
_BOX_RESHAPE = re.compile(r"(?:BoxPredictor|WeightSharedConvolutionalBoxPredictor)(?:_(\d+))?"
                          r"/Reshape")


@dataclasses.dataclass(frozen=True)
class DetectionCheckpoint:
    """An SSD loaded from an archive: network, parsed config, head, and what was read."""

    model: Any
    config: SsdConfig
    head: DetectionHead
    prefix: Path
    loaded: int


def load_ssd_checkpoint(source: str | Path, checkpoint_prefix: str | None = "model.ckpt",
                        ) -> DetectionCheckpoint:
    """Build the SSD described by an archive's ``pipeline.config`` and load its weights.

    Args:
        source: URL, ``.tar.gz``, folder or checkpoint prefix of an OD API export.
        checkpoint_prefix: checkpoint file name to pick when a folder holds several.

    Raises:
        BadInputError: no ``pipeline.config`` beside the checkpoint, an unsupported
            architecture, or variables that do not match the model.
    """
    from quant.checkpoints import load_weights, open_checkpoint
    from quant.detection.ssd import build_ssd, unused_checkpoint_scopes

    files = locate_checkpoint(source, expected_prefix=checkpoint_prefix)
    if files.pipeline_config is None:
        raise BadInputError(
            f"{source}: no pipeline.config beside {files.prefix.name}; detection checkpoints "
            "need the Object Detection API pipeline.config of the same export"
        )
    config = read_ssd_config(files.pipeline_config)
    model = build_ssd(config)
    report = load_weights(model, files.prefix, scope="FeatureExtractor")
    names = open_checkpoint(files.prefix).get_variable_to_shape_map()
    ignored = unused_checkpoint_scopes(config)
    expected = {
        name for name in names
        if name.startswith(SSD_SCOPES) and "ExponentialMovingAverage" not in name
        and not any(slot in name for slot in ("/RMSProp", "/Momentum", "/Adam"))
        and not _QUANTIZATION_RANGE.search(name)
        and not name.startswith(ignored)
    }
    if report.loaded != len(expected):
        unused = [name for name in report.unused if name in expected]
        raise BadInputError(
            f"{files.prefix}: the model took {report.loaded} of the checkpoint's "
            f"{len(expected)} feature extractor / box predictor variables; unused: "
            f"{', '.join(unused[:5]) or 'box predictor variables'}"
        )
    anchors = ssd_anchors(config.anchors, feature_map_sizes(model), config.image_size)
    return DetectionCheckpoint(model, config, DetectionHead.from_config(config, anchors),
                               files.prefix, report.loaded)


def load_detection_model(spec: ModelSpec, checkpoint: str, source: str) -> FloatModel:
    """Return the float model of a zoo detection model.

    Args:
        spec: the zoo entry (``task == "detect"``).
        checkpoint: its archive (URL, ``.tar.gz``, folder or prefix).
        source: the model source as the user gave it.
    """
    loaded = load_ssd_checkpoint(checkpoint, spec.checkpoint_prefix)
    height, width = loaded.config.image_size
    if (height, width) != (spec.input_size, spec.input_size):
        raise BadInputError(
            f"{checkpoint}: pipeline.config says {height}x{width} but {spec.name} is "
            f"{spec.input_size}x{spec.input_size}; is it the right archive?"
        )
    preprocess = spec.preprocess or extractor_preprocess(loaded.config.feature_extractor.type,
                                                         height, width)
    return FloatModel(
        model=loaded.model, preprocess=preprocess, name=spec.name, task="detect",
        source=source,
        source_file=Path(checkpoint) if Path(checkpoint).exists() else loaded.prefix,
        spec=spec, postprocess=loaded.head,
    )


def random_ssd(config: SsdConfig, name: str, preprocess: Preprocess | None = None,
               spec: ModelSpec | None = None) -> FloatModel:
    """Return an SSD of ``config`` with random weights.

    The graph, anchors and post-processing are those of a loaded archive; only the weights
    are missing (enough for latency and Edge TPU mapping, which depend on the graph alone).
    """
    from quant.detection.ssd import build_ssd

    model = build_ssd(config, name=name)
    anchors = ssd_anchors(config.anchors, feature_map_sizes(model), config.image_size)
    return FloatModel(model=model, name=name, task="detect", source="random weights",
                      preprocess=preprocess or extractor_preprocess(
                          config.feature_extractor.type, *config.image_size),
                      spec=spec, postprocess=DetectionHead.from_config(config, anchors))


def feature_map_sizes(model: Any) -> list[tuple[int, int]]:
    """Return the (height, width) of each feature map of an SSD built by ``build_ssd``."""
    reshapes = {}
    for layer in model.layers:
        match = _BOX_RESHAPE.fullmatch(layer.name)
        if match:
            reshapes[int(match.group(1) or 0)] = layer.input.shape
    return [(int(reshapes[i][1]), int(reshapes[i][2])) for i in sorted(reshapes)]
