"""Object Detection API ``pipeline.config`` texts, synthetic exports and the int8 analysis of
the SSD builders, for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from slim_checkpoints import slim_variables, write_checkpoint

_MODEL = """\
# %(comment)s
model {
  ssd {
    num_classes: %%(num_classes)d
    box_coder { faster_rcnn_box_coder { y_scale: 10.0 x_scale: 10.0 height_scale: 5.0
                                        width_scale: 5.0 } }
    encode_background_as_zeros: true
    anchor_generator {
%(anchors)s
    }
    image_resizer { fixed_shape_resizer { height: %%(size)d width: %%(size)d } }
    box_predictor {
%(predictor)s
    }
    feature_extractor {
%(extractor)s
    }
    post_processing {
      batch_non_max_suppression {
        score_threshold: 1e-8
        iou_threshold: 0.6
        max_detections_per_class: 100
        max_total_detections: 100
      }
      score_converter: SIGMOID
    }
  }
}
"""
_SSD_ANCHORS = """\
      ssd_anchor_generator {
        num_layers: 6
        min_scale: %s
        max_scale: 0.95
        aspect_ratios: 1.0
        aspect_ratios: 2.0
        aspect_ratios: 0.5
        aspect_ratios: 3.0
        aspect_ratios: 0.3333%s
      }"""
_TEMPLATE = _MODEL % {
    "comment": "A minimal SSD pipeline.config in the Object Detection API text format.",
    "anchors": _SSD_ANCHORS % (0.2, ""),
    "predictor": """\
      convolutional_box_predictor {
        min_depth: 0
        max_depth: 0
        num_layers_before_predictor: 0
        kernel_size: %(kernel)d
        use_depthwise: %(depthwise)s
        box_code_size: 4
        conv_hyperparams { activation: RELU_6, batch_norm { epsilon: 0.001, } }
      }""",
    "extractor": """\
      type: '%(type)s'
      min_depth: 16
      depth_multiplier: %(multiplier)s
      use_depthwise: %(depthwise)s
      conv_hyperparams { activation: RELU_6, batch_norm { epsilon: 0.001 } }""",
}
_HYPERPARAMS = """\
conv_hyperparams {
          activation: RELU_6,
          regularizer { l2_regularizer { weight: 0.00004 } }
          initializer { random_normal_initializer { stddev: 0.01 mean: 0.0 } }
          batch_norm { scale: true, center: true, decay: 0.97, epsilon: 0.001 }
        }"""
_SHARED_PREDICTOR = """\
      weight_shared_convolutional_box_predictor {
%s
        class_prediction_bias_init: -4.6
        """ + _HYPERPARAMS + """
      }"""
# name -> (network fields of its OD API zoo sample config, input size)
_SHARED = {
    "ssd_mobilenet_v1_ppn": (_MODEL % {
        "comment": "samples/configs/ssd_mobilenet_v1_ppn_shared_box_predictor_300x300_coco14_sync",
        "anchors": _SSD_ANCHORS % (0.15, "\n        reduce_boxes_in_lowest_layer: false"),
        "predictor": _SHARED_PREDICTOR % """\
        depth: 512
        num_layers_before_predictor: 1
        kernel_size: 1
        share_prediction_tower: true""",
        "extractor": """\
      type: 'ssd_mobilenet_v1_ppn'
      """ + _HYPERPARAMS + """
      override_base_feature_extractor_hyperparams: true""",
    }, 300),
    "ssd_mobilenet_v1_fpn": (_MODEL % {
        "comment": "samples/configs/ssd_mobilenet_v1_fpn_shared_box_predictor_640x640_coco14_sync",
        "anchors": """\
      multiscale_anchor_generator {
        min_level: 3
        max_level: 7
        anchor_scale: 4.0
        aspect_ratios: [1.0, 2.0, 0.5]
        scales_per_octave: 2
      }""",
        "predictor": _SHARED_PREDICTOR % """\
        depth: 256
        num_layers_before_predictor: 4
        kernel_size: 3""",
        "extractor": """\
      type: 'ssd_mobilenet_v1_fpn'
      min_depth: 16
      depth_multiplier: 1.0
      """ + _HYPERPARAMS + """
      override_base_feature_extractor_hyperparams: true""",
    }, 640),
}

# name -> (feature extractor type, depth multiplier, SSDLite, input size)
BUILDERS = {
    "ssd_mobilenet_v1_0.75_depth": ("ssd_mobilenet_v1", 0.75, False, 300),
    "ssd_mobilenet_v2": ("ssd_mobilenet_v2", 1.0, False, 300),
    "ssdlite_mobilenet_v2": ("ssd_mobilenet_v2", 1.0, True, 300),
    "ssdlite_mobilenet_v3_large": ("ssd_mobilenet_v3_large", 1.0, True, 320),
    "ssdlite_mobilenet_v3_small": ("ssd_mobilenet_v3_small", 1.0, True, 320),
    "ssdlite_mobilenet_edgetpu": ("ssd_mobilenet_edgetpu", 1.0, True, 320),
    # samples/configs/ssdlite_mobiledet_{cpu,dsp,edgetpu,gpu}_320x320_coco_sync_4x4.config
    **{f"ssdlite_mobiledet_{kind}": (f"ssd_mobiledet_{kind}", 1.0, True, 320)
       for kind in ("cpu", "dsp", "edgetpu", "gpu")},
}


def pipeline_text(name: str, num_classes: int = 90, size: int | None = None) -> str:
    """Return the pipeline.config of one of :data:`BUILDERS` or of the weight-shared zoo
    configs (``ssd_mobilenet_v1_ppn``, ``ssd_mobilenet_v1_fpn``)."""
    if name in _SHARED:
        template, default_size = _SHARED[name]
        return template % {"num_classes": num_classes, "size": size or default_size}
    kind, multiplier, lite, default_size = BUILDERS[name]
    return _TEMPLATE % {
        "num_classes": num_classes, "size": size or default_size, "type": kind,
        "multiplier": multiplier, "depthwise": "true" if lite else "false",
        "kernel": 3 if lite else 1,
    }


def random_variables(model, seed: int = 0) -> dict[str, np.ndarray]:
    """Return random values for every weight of ``model`` keyed by checkpoint name."""
    return slim_variables(model, seed, std=0.05)


def write_export(folder: Path, config_text: str, variables: dict[str, np.ndarray]) -> Path:
    """Write an OD API export folder (pipeline.config + model.ckpt) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.config").write_text(config_text)
    write_checkpoint(folder / "model.ckpt", variables)
    return folder


def int8_analysis(float_model, size: int, tmp_path: Path, images: int = 2):
    """Quantize ``float_model`` with our PTQ (``images`` random uint8 images, nearest
    rounding), write it to ``tmp_path / "model.tflite"`` and return the offline Edge TPU
    analysis."""
    from edgetpu.analyze import analyze_model
    from quant.calibration import CalibrationSet
    from quant.ptq import QuantizeOptions, quantize_model

    pixels = np.random.default_rng(0).integers(0, 256, (images, size, size, 3), dtype=np.uint8)
    result = quantize_model(float_model, CalibrationSet(pixels, (), "random", "-"),
                            QuantizeOptions(rounding="nearest", require_edgetpu=False))
    path = tmp_path / "model.tflite"
    path.write_bytes(result.tflite)
    return analyze_model(path)
