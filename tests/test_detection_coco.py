"""Detections on real COCO images, matched against the COCO ground truth by IoU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgetpu.adapters import BBox
from edgetpu.detect import Detector, read_image

# Annotated val2017 images with several clearly visible objects.
IMAGES = 8
SCORE = 0.6


def _ground_truth(shared_data):
    data = json.loads((shared_data / "coco_mini/annotations/instances_val2017.json").read_text())
    boxes: dict[int, list[tuple[int, BBox]]] = {}
    for ann in data["annotations"]:
        if ann.get("iscrowd"):
            continue
        x, y, w, h = ann["bbox"]
        boxes.setdefault(ann["image_id"], []).append((ann["category_id"], BBox(x, y, x + w, y + h)))
    images = sorted(data["images"], key=lambda image: -len(boxes.get(image["id"], [])))
    return [(shared_data / "coco_mini/val2017" / img["file_name"], boxes[img["id"]])
            for img in images[:IMAGES]]


def _matched_share(detections, truth) -> float:
    """Share of detections that overlap a same-category ground-truth box by IoU >= 0.5."""
    hits = sum(any(cat == det.label_id + 1 and det.bbox.iou(box) >= 0.5 for cat, box in truth)
               for det in detections)
    return hits / max(len(detections), 1)


def test_shared_int8_detections_match_coco_ground_truth(shared_data):
    detector = Detector.open(
        shared_data / "models/ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite")
    shares, counts = [], []
    for path, truth in _ground_truth(shared_data):
        result = detector.detect(read_image(path), threshold=SCORE)
        counts.append(len(result.objects))
        shares.append(_matched_share(result.objects, truth))
    assert sum(counts) >= IMAGES  # it finds something
    assert np.average(shares, weights=counts) >= 0.5  # measured 0.69


def _decode(encodings: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Box encodings (ty, tx, th, tw; scales 10, 10, 5, 5) -> (ymin, xmin, ymax, xmax)."""
    yc = encodings[:, 0] / 10 * anchors[:, 2] + anchors[:, 0]
    xc = encodings[:, 1] / 10 * anchors[:, 3] + anchors[:, 1]
    h = np.exp(encodings[:, 2] / 5) * anchors[:, 2]
    w = np.exp(encodings[:, 3] / 5) * anchors[:, 3]
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], 1)


def test_float_archive_detects_coco_objects_through_the_loader(shared_data):
    """The float OD API archive, loaded by our builder, run in Keras (no TFLite involved)."""
    from edgeq.images import inception_preprocess
    from quant.detection.sources import load_ssd_checkpoint

    loaded = load_ssd_checkpoint(
        shared_data / "models/ssd_mobilenet_v1_0.75_depth_300x300_coco_float.tar.gz")
    preprocess = inception_preprocess(300)
    hits = total = 0
    for path, truth in _ground_truth(shared_data):
        height, width = read_image(path).shape[:2]
        encodings, scores = (t.numpy()[0] for t in loaded.model(preprocess.load(path)[None]))
        boxes = _decode(encodings, loaded.head.anchors)
        best = scores[:, 1:].max(1)
        for index in np.flatnonzero(best >= SCORE):
            ymin, xmin, ymax, xmax = boxes[index]
            det_box = BBox(xmin * width, ymin * height, xmax * width, ymax * height)
            category = int(scores[index, 1:].argmax()) + 1
            total += 1
            hits += any(cat == category and det_box.iou(box) >= 0.5 for cat, box in truth)
    assert total >= IMAGES
    assert hits / total >= 0.5  # measured 0.86 (56 of 65)


@pytest.mark.slow
def test_float_archive_with_postprocessing_scores_coco_map(shared_data):
    """Float TFLite of our loaded model + TFLite_Detection_PostProcess, pycocotools mAP."""
    from edgeq.images import decode_images, image_sizes, inception_preprocess
    from quant.detection.sources import load_ssd_checkpoint
    from quant.validate.detection import coco_images, coco_map, load_coco, to_coco_results
    from quant.validate.reference import converted_tflite
    from quant.validate.runners import TfliteRunner

    coco = shared_data / "coco_mini"
    images = coco_images(coco / "val2017", coco / "annotations/instances_val2017.json")
    loaded = load_ssd_checkpoint(
        shared_data / "models/ssd_mobilenet_v1_0.75_depth_300x300_coco_float.tar.gz")
    preprocess = inception_preprocess(300)
    runner = TfliteRunner(converted_tflite(loaded.model, loaded.head), preprocess)
    detections = runner.detect(decode_images(images.paths, preprocess),
                               image_sizes(images.paths))
    scores = coco_map(load_coco(images.annotations), to_coco_results(images.ids, detections),
                      images.ids)
    assert scores["map"] >= 0.19 and scores["map50"] >= 0.35


def test_our_int8_of_the_float_archive_maps_and_matches_coco(shared_data, tmp_path):
    """PTQ of the float archive: every op but the post-processing maps to the Edge TPU (box
    offsets included), and its detections match the COCO ground truth."""
    from edgeq.images import decode_images, inception_preprocess, list_images
    from edgetpu.analyze import analyze_model
    from quant.calibration import CalibrationSet
    from quant.detection.sources import load_ssd_checkpoint
    from quant.float_model import FloatModel
    from quant.ptq import QuantizeOptions, quantize_model

    loaded = load_ssd_checkpoint(
        shared_data / "models/ssd_mobilenet_v1_0.75_depth_300x300_coco_float.tar.gz")
    preprocess = inception_preprocess(300)
    annotated = {path for path, _ in _ground_truth(shared_data)}
    calibration = [p for p in list_images(shared_data / "coco_mini/val2017").paths
                   if p not in annotated][:8]
    model = FloatModel(model=loaded.model, preprocess=preprocess, name="ssd", task="detect",
                       source="archive", postprocess=loaded.head)
    result = quantize_model(model, CalibrationSet(decode_images(calibration, preprocess),
                                                  tuple(calibration), "val2017", "-"),
                            QuantizeOptions(stats_images=8, range_images=8))
    path = tmp_path / "ssd_int8.tflite"
    path.write_bytes(result.tflite)
    analysis = analyze_model(path)
    assert analysis.cpu_ops == {"TFLite_Detection_PostProcess": 1}
    assert "ADD" in [op.opcode for op in analysis.ops]  # the anchor offsets
    detector = Detector.open(path)
    shares, counts = [], []
    for image, truth in _ground_truth(shared_data):
        objects = detector.detect(read_image(image), threshold=SCORE).objects
        counts.append(len(objects))
        shares.append(_matched_share(objects, truth))
    assert sum(counts) >= IMAGES
    assert np.average(shares, weights=counts) >= 0.5
