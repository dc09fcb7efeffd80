"""What each SSD feature extractor's ``preprocess`` does to the resized RGB image.

The Object Detection API's export (``normalized_input_image_tensor``) starts after it, so the
int8 model's input and every image fed to it follow this spec:

- MobileNet, MobileDet, Inception, MnasFPN and SpaghettiNet extractors:
  ``(2 / 255) * pixel - 1``, RGB in [-1, 1];
- ResNet v1 FPN extractors (``_SSDResnetV1FpnFeatureExtractor.preprocess``): VGG channel
  means subtracted, ``pixel - [123.68, 116.779, 103.939]``, no scaling.
"""

from __future__ import annotations

from edgeq.images import Preprocess

#: Channel means of the ResNet extractors (the VGG means).
VGG_MEANS = (123.68, 116.779, 103.939)
_MEAN_SUBTRACTED = ("ssd_resnet50_v1_fpn", "ssd_resnet101_v1_fpn")


def extractor_preprocess(extractor: str, height: int, width: int | None = None) -> Preprocess:
    """Return the input spec of feature extractor type ``extractor`` at ``height`` x ``width``."""
    width = width or height
    if extractor in _MEAN_SUBTRACTED:
        return Preprocess(height, width, mean=VGG_MEANS, std=(1.0, 1.0, 1.0))
    return Preprocess(height, width)
