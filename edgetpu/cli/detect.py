"""edgetpu-detect: run an SSD detector (with ``TFLite_Detection_PostProcess``) on images,
a folder, a video file or a camera, on the Edge TPU or the CPU.

Examples::

    edgetpu-detect --model ssd_mobilenet_v1_quant_postprocess.tflite \\
        --labels labelmap.txt --image kite_and_cold.jpg --json
    edgetpu-detect --model ssd_edgetpu.tflite --device usb:0 --image photos/ --out out/
    edgetpu-detect --model ssd_edgetpu.tflite --video clip.mp4 --out out/
    edgetpu-detect --model ssd_edgetpu.tflite --camera 0 --max-frames 300

A model compiled by ``edgetpu_compiler`` runs on the Edge TPU (``--device`` picks one:
``:0``, ``usb``, ``usb:N``, ``pci``, ``pci:N``); an uncompiled model runs on the CPU.
Results go to stdout, one line per frame (``--json``: JSON lines with label, score and box
``[xmin, ymin, xmax, ymax]`` in original-image pixels, plus per-stage times); the timing
summary (FPS, mean ms per stage) goes to stderr. ``--out DIR`` writes annotated images
(``<name>_detections.jpg``) or video (``<name>_detections.mp4``).

Label files: ``???``-first label maps, one name per line, ``id name`` pairs, or
``label_map.pbtxt`` (see :mod:`edgetpu.labels`).

Exit codes: 0 ok; 2 bad input (unreadable image or video, model without post-processing,
bad option); 3 Edge TPU runtime or device missing, camera missing, OpenCV missing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

from edgeq.errors import BadInputError, cli_entry
from edgeq.logs import add_verbose_argument
from edgeq.outputs import atomic_write, check_out_dir

PROG = "edgetpu-detect"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``edgetpu-detect``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True,
                        help=".tflite detector ending in TFLite_Detection_PostProcess")
    parser.add_argument("--labels", type=Path, help="label file (names instead of indices)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, nargs="+", metavar="PATH",
                        help="image files and/or folders of images")
    source.add_argument("--video", type=Path, help="a video file (needs OpenCV)")
    source.add_argument("--camera", type=int, metavar="INDEX",
                        help="a camera index, e.g. 0 for /dev/video0 (needs OpenCV)")
    parser.add_argument("--threshold", type=float, default=0.4,
                        help="minimum score (default 0.4)")
    parser.add_argument("--top-k", type=int, default=None, help="keep at most K per frame")
    parser.add_argument("--device", help="Edge TPU device: ':0', 'usb', 'usb:N', 'pci', "
                        "'pci:N' (default: the first one, for compiled models)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    parser.add_argument("--max-frames", type=int, help="stop after N frames")
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout")
    parser.add_argument("--out", type=Path, help="folder for annotated images / video")
    add_verbose_argument(parser)
    return parser


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    """Run ``edgetpu-detect``; return the exit code."""
    args = build_parser().parse_args(argv)
    if not 0.0 <= args.threshold <= 1.0:
        raise BadInputError(f"--threshold {args.threshold}: expected a score in [0, 1]")
    if args.top_k is not None and args.top_k < 1:
        raise BadInputError(f"--top-k {args.top_k}: expected a positive count")
    if args.out is not None:
        check_out_dir(args.out)
    from edgetpu.detect import Detector, frames
    from edgetpu.labels import read_labels

    labels = read_labels(args.labels) if args.labels else {}
    detector = Detector.open(args.model, device=args.device, num_threads=args.threads)
    writer = _VideoOut(args.out, args.video or f"camera{args.camera}") if (
        args.out and args.image is None) else None
    totals = dict.fromkeys(("preprocess", "inference", "postprocess"), 0.0)
    count, started = 0, time.perf_counter()
    try:
        for frame in frames(args.image or (), args.video, args.camera, args.max_frames):
            result = detector.detect(frame.rgb, args.threshold, args.top_k)
            for stage, ms in result.timing_ms.items():
                totals[stage] += ms
            count += 1
            print(_format(frame, result, labels, args.json), flush=True)
            if args.out and writer is None:
                _save_image(frame, result, labels, args.out)
            elif writer is not None:
                writer.write(frame, result, labels)
        if writer is not None:
            writer.close()
    finally:
        if writer is not None:
            writer.abort()
    if count == 0:
        raise BadInputError("no frame was read from the input")
    elapsed = time.perf_counter() - started
    means = ", ".join(f"{stage} {ms / count:.1f} ms" for stage, ms in totals.items())
    print(f"{count} frame(s), {count / elapsed:.1f} FPS overall; mean {means}", file=sys.stderr)
    return 0


def _format(frame, result, labels: dict[int, str], as_json: bool) -> str:
    from edgetpu.labels import label_name

    objects = [
        {"label": label_name(labels, obj.label_id), "label_id": obj.label_id,
         "score": round(obj.score, 4),
         "box": [round(v, 1) for v in (obj.bbox.xmin, obj.bbox.ymin, obj.bbox.xmax,
                                       obj.bbox.ymax)]}
        for obj in result.objects
    ]
    if as_json:
        return json.dumps({
            "source": frame.source, "frame": frame.index,
            "width": int(frame.rgb.shape[1]), "height": int(frame.rgb.shape[0]),
            "objects": objects,
            "timing_ms": {k: round(v, 2) for k, v in result.timing_ms.items()},
        })
    found = "; ".join(f"{o['label']} {o['score']:.2f} {o['box']}" for o in objects)
    return f"{frame.source}#{frame.index}: {found or 'nothing found'}"


def _save_image(frame, result, labels: dict[int, str], out: Path) -> None:
    from edgetpu.detect import draw

    encoded = io.BytesIO()
    draw(frame.rgb, result.objects, labels).save(encoded, format="JPEG", quality=90)
    atomic_write(out / f"{Path(frame.source).stem}_detections.jpg", encoded.getvalue())


class _VideoOut:
    """An annotated video written to a temporary file and renamed when complete."""

    def __init__(self, out: Path, source: Path | str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.target = out / f"{Path(str(source)).stem}_detections.mp4"
        self.temp = out / f".{self.target.name}.part.mp4"
        self.writer = None

    def write(self, frame, result, labels: dict[int, str]) -> None:
        import numpy as np

        from edgetpu.detect import draw, import_cv2

        cv2 = import_cv2()
        height, width = frame.rgb.shape[:2]
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.temp), cv2.VideoWriter_fourcc(*"mp4v"),
                                          30.0, (width, height))
        bgr = np.asarray(draw(frame.rgb, result.objects, labels))[:, :, ::-1]
        self.writer.write(np.ascontiguousarray(bgr))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            os.replace(self.temp, self.target)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if self.temp.exists():
            self.temp.unlink()


if __name__ == "__main__":
    sys.exit(main())
