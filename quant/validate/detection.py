"""Detection metrics with pycocotools: COCO mAP@[.5:.95] and mAP@.5.

Against COCO annotations, or, without annotations, against the float model's detections
(those above a score threshold serve as ground truth). Model class ``k`` is COCO category
``k + 1`` (the TF Object Detection API label map: line 0 is background, line ``k + 1``
holds category id ``k + 1``).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import BadInputError
from edgetpu.adapters import Detection

COCO_ID_OFFSET = 1


@dataclass(frozen=True)
class CocoImages:
    """The annotated images found in the data folder: COCO ids, paths, (width, height)."""

    ids: tuple[int, ...]
    paths: tuple[Path, ...]
    sizes: tuple[tuple[int, int], ...]
    annotations: Path


def coco_images(data_dir: Path, annotations: Path) -> CocoImages:
    """Return the images of ``annotations`` present in ``data_dir``, sorted by id.

    Raises:
        BadInputError: the annotations file is unreadable or none of its images is present.
    """
    if not annotations.is_file():
        raise BadInputError(f"{annotations}: no such annotations file")
    try:
        data = json.loads(annotations.read_text())
        images = sorted(data["images"], key=lambda image: image["id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{annotations}: not a COCO instances file ({exc})") from exc
    found = [img for img in images if (data_dir / img["file_name"]).is_file()]
    if not found:
        raise BadInputError(
            f"none of the {len(images)} images of {annotations} is in {data_dir}; "
            "point --data at the matching image folder"
        )
    return CocoImages(
        tuple(int(img["id"]) for img in found),
        tuple(data_dir / img["file_name"] for img in found),
        tuple((int(img["width"]), int(img["height"])) for img in found),
        annotations,
    )


def to_coco_results(
    image_ids: Sequence[int], detections: Sequence[Sequence[Detection]],
    id_offset: int = COCO_ID_OFFSET,
) -> list[dict[str, Any]]:
    """Return detections (boxes in pixels) as COCO result records."""
    return [
        {"image_id": int(image_id), "category_id": det.label_id + id_offset,
         "bbox": [round(v, 2) for v in det.bbox.to_xywh()], "score": round(det.score, 5)}
        for image_id, dets in zip(image_ids, detections, strict=True)
        for det in dets
        if det.bbox.valid
    ]


def coco_map(ground_truth: Any, results: list[dict[str, Any]],
             image_ids: Sequence[int]) -> dict[str, float]:
    """Return ``map`` (AP@[.5:.95]) and ``map50`` of ``results`` against a COCO object."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {"map": 0.0, "map50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        detections = ground_truth.loadRes(results)
        evaluator = COCOeval(ground_truth, detections, "bbox")
        evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.maximum(evaluator.stats[:2], 0.0)  # -1 means "no ground truth"
    return {"map": float(stats[0]), "map50": float(stats[1])}


def load_coco(annotations: Path) -> Any:
    """Return a pycocotools ``COCO`` for the annotations file (quietly)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(annotations))


def pseudo_ground_truth(
    images: CocoImages, detections: Sequence[Sequence[Detection]], score_threshold: float
) -> Any:
    """Return a COCO object whose boxes are the reference detections above the threshold."""
    from pycocotools.coco import COCO

    records = to_coco_results(images.ids, detections)
    annotations = [
        {**r, "id": i + 1, "area": r["bbox"][2] * r["bbox"][3], "iscrowd": 0}
        for i, r in enumerate(r for r in records if r["score"] >= score_threshold)
    ]
    categories = sorted({a["category_id"] for a in annotations})
    dataset = {
        "images": [{"id": i, "width": w, "height": h}
                   for i, (w, h) in zip(images.ids, images.sizes, strict=True)],
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in categories],
    }
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
