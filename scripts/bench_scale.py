"""Dataset scale: validation and QAT throughput and peak memory as the image set grows.

The evaluation split (``imagenet_val1300``) is repeated through symbolic links into sets of
1,000 and 10,000 images (labels CSV alongside). Each run is a fresh ``validate-quant`` or
``quantize --method qat`` process; its peak memory is the largest total resident set of the
process and its children, sampled from ``/proc`` every 50 ms.

- validation: the shared int8 MobileNet v2 (``coral/mobilenet_v2_1.0_224_quant.tflite``)
  against the labels: images/s over 10,000 images with 1 and 2 workers of one interpreter
  thread each (one interpreter on one core is what validation did before it streamed; the
  command's start-up, a few seconds, is included), peak memory with 2 workers at 1,000 and
  10,000 images; Ray (a local Ray with 2 CPUs) against the local run on 256 images;
- QAT: ``--steps`` optimizer steps of MobileNet v2 1.0 224 from the shared checkpoint on
  1,000 and 10,000 images (the streaming ``tf.data`` pipeline: memory does not follow the
  set's size).

Usage: ``python scripts/bench_scale.py --json out/bench_scale.json`` (about 15 minutes here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from edgeq.outputs import write_json
from edgeq.paths import shared_data_dir

MODEL = "coral/mobilenet_v2_1.0_224_quant.tflite"
CHECKPOINT = "models/mobilenet_v2_1.0_224.tgz"


def linked_set(source: Path, count: int, folder: Path) -> tuple[Path, Path]:
    """Make ``count`` links to the labelled images of ``source`` (cycling); return the
    image folder and its labels CSV."""
    rows = [line.split(",") for line in (source / "labels.csv").read_text().splitlines()[1:]]
    images = folder / "images"
    images.mkdir(parents=True)
    lines = ["file,label"]
    for i in range(count):
        name, label = rows[i % len(rows)]  # name: images/FILE, as in the shared set
        link = images / f"{i:06d}_{Path(name).name}"
        link.symlink_to((source / name).resolve())
        lines.append(f"images/{link.name},{label}")
    labels = folder / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    return images, labels


def _tree_rss_bytes(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (Linux ``/proc``)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo += [int(child) for child in children]
    return total


def measured_run(argv: list[str]) -> dict[str, float]:
    """Run a command; return its wall seconds and peak resident MB (process tree)."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_bytes(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({process.returncode}):\n{err[-2000:]}")
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak / 2**20}


def validate(images: Path, labels: Path, out: Path, workers: int, extra: list[str] = ()
             ) -> dict[str, float]:
    """One ``validate-quant`` run of the shared int8 model; its time, memory and top-1."""
    model = shared_data_dir() / MODEL
    report = out / "report.json"
    result = measured_run([
        sys.executable, "-m", "quant", "validate", "--int8", str(model), "--data", str(images),
        "--labels", str(labels), "--workers", str(workers), "--threads", str(workers),
        "--latency-runs", "0",
        "--layer-images", "0", "--out", str(out), "--json", str(report), *extra])
    result["top1"] = json.loads(report.read_text())["int8"]["top1"]
    return result


def qat(images: Path, labels: Path, out: Path, steps: int) -> dict[str, float]:
    """A short quantization-aware fine-tuning run; its time and memory."""
    return measured_run([
        sys.executable, "-m", "quant", "--model", "mobilenet_v2_1.0_224", "--checkpoint",
        str(shared_data_dir() / CHECKPOINT), "--method", "qat", "--train-dir", str(images),
        "--labels", str(labels), "--steps", str(steps), "--batch-size", "16",
        "--out", str(out)])


def main() -> int:
    """Run the benchmark; print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(1000, 10000),
                        metavar=("SMALL", "LARGE"))
    parser.add_argument("--qat-steps", type=int, default=3)
    parser.add_argument("--skip-qat", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    source = shared_data_dir() / "imagenet_val1300"
    small, large = args.sizes
    result: dict[str, dict] = {"validate": {}, "qat": {}}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        sets = {n: linked_set(source, n, root / f"set{n}") for n in (256, small, large)}
        runs = {  # throughput on the large set: the command's start-up is amortized there
            "small": validate(*sets[small], root / "v1", 2),
            "large_1_worker": validate(*sets[large], root / "v2", 1),
            "large_2_workers": validate(*sets[large], root / "v3", 2),
        }
        v = result["validate"]
        v["images_per_s_1_worker"] = large / runs["large_1_worker"]["seconds"]
        v["images_per_s_2_workers"] = large / runs["large_2_workers"]["seconds"]
        v[f"peak_rss_mb_{small}"] = runs["small"]["peak_rss_mb"]
        v[f"peak_rss_mb_{large}"] = runs["large_2_workers"]["peak_rss_mb"]
        v["top1"] = {name: run["top1"] for name, run in runs.items()}
        local = validate(*sets[256], root / "v4", 2)
        try:
            on_ray = validate(*sets[256], root / "v5", 2, ["--engine", "ray"])
            v["ray_matches_local"] = on_ray["top1"] == local["top1"]
        except SystemExit as exc:
            v["ray_matches_local"] = False
            v["ray_error"] = str(exc)[-300:]
        if not args.skip_qat:
            for n in (small, large):
                run = qat(*sets[n], root / f"q{n}", args.qat_steps)
                result["qat"][f"peak_rss_mb_{n}"] = run["peak_rss_mb"]
                result["qat"][f"seconds_{n}"] = run["seconds"]
    v = result["validate"]
    print(f"validation: {v['images_per_s_1_worker']:.1f} img/s with 1 worker, "
          f"{v['images_per_s_2_workers']:.1f} with 2 "
          f"({v['images_per_s_2_workers'] / v['images_per_s_1_worker']:.2f}x)")
    print(f"validation peak memory: {v[f'peak_rss_mb_{small}']:.0f} MB at {small} images, "
          f"{v[f'peak_rss_mb_{large}']:.0f} MB at {large}; Ray matches local: "
          f"{v['ray_matches_local']}")
    for n in (small, large) if result["qat"] else ():
        print(f"QAT peak memory at {n} images: {result['qat'][f'peak_rss_mb_{n}']:.0f} MB "
              f"({result['qat'][f'seconds_{n}']:.0f} s for {args.qat_steps} steps)")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
