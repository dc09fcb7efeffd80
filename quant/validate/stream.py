"""Validation in bounded batches: decoded, run and summarized a batch at a time.

Memory stays flat as the image set grows: only one batch of pixels per worker exists at a
time, and each image leaves a few numbers behind (its top-5 classes, the row terms of the
comparison metrics, or its detections). ``workers`` processes each hold their own
interpreters (LiteRT runs one inference per interpreter at a time), so the cores are all
busy. Every finished batch is written to a :class:`BatchStore` under ``--out``; a run that
was killed finds them there and only runs the batches that are missing.

Batches do not change the numbers: records are per image (see
:func:`quant.validate.metrics.classification_records`), so the summary of a set streamed
in batches is that of the whole set at once.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import multiprocessing
import shutil
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edgeq.errors import BadInputError, MissingToolError
from edgeq.images import Preprocess, decode_images
from edgeq.outputs import atomic_write, write_json
from edgetpu.adapters import BBox, Detection
from quant.fetch import sha256_of
from quant.validate import metrics

#: Images per batch: enough to amortize a worker round trip, small enough to keep memory flat
#: (64 images at 224 x 224 are 9.6 MB of pixels).
BATCH_IMAGES = 64
Records = dict[str, np.ndarray]


@dataclass(frozen=True)
class WorkerModels:
    """What a worker loads once: the int8 model and, optionally, a float ``.tflite``.

    Attributes:
        int8: the quantized model.
        reference: the float reference ``.tflite`` (None: none, or one run in-process).
        preprocess: the preprocessing of both models' inputs.
        threads: interpreter threads per worker.
        device: Edge TPU device string for the int8 model, if any.
    """

    int8: Path
    reference: Path | None
    preprocess: Preprocess
    threads: int
    device: str | None = None


class Worker:
    """Runs batches of images through the models it loaded once."""

    def __init__(self, models: WorkerModels, reference_runner: Any = None) -> None:
        from quant.validate.runners import TfliteRunner

        self.int8 = TfliteRunner(models.int8, models.preprocess, models.threads, models.device)
        self.reference = reference_runner or (
            TfliteRunner(models.reference, models.preprocess, models.threads)
            if models.reference is not None else None)

    def classify(self, paths: Sequence[Path]) -> Records:
        """Return the per-image classification records of ``paths``."""
        pixels = decode_images(paths, self.int8.preprocess, workers=1)
        float_out = self.reference.classify(pixels) if self.reference is not None else None
        return metrics.classification_records(self.int8.classify(pixels), float_out)

    def detect(self, paths: Sequence[Path], sizes: Sequence[tuple[int, int]],
               first: int) -> Records:
        """Return the int8 (and float) detections of ``paths`` as flat arrays; ``first`` is
        the index of the batch's first image in the whole set."""
        pixels = decode_images(paths, self.int8.preprocess, workers=1)
        records = _detection_arrays("int8", self.int8.detect(pixels, list(sizes)), first)
        if self.reference is not None:
            records.update(_detection_arrays(
                "float", self.reference.detect(pixels, list(sizes)), first))
        return records


_WORKER: Worker | None = None  # the worker of this process, in a pool's worker processes


def _start_worker(models: WorkerModels) -> None:
    global _WORKER
    _WORKER = Worker(models)


def _run_in_worker(method: str, args: tuple) -> Records:
    assert _WORKER is not None, "the pool initializer did not run"
    return getattr(_WORKER, method)(*args)


class BatchStore:
    """Per-batch results of one validation, kept in a folder so a killed run can resume.

    The folder holds ``run.json`` (what the results depend on: the models' and images'
    digests, the preprocessing, the batch size) and one ``batch_NNNNNN.npz`` per finished
    batch, each written atomically. Results of another run (a different ``run.json``) are
    removed when the store is opened.
    """

    def __init__(self, folder: Path, identity: dict[str, Any]) -> None:
        self.folder = folder
        stamp = folder / "run.json"
        identity = json.loads(json.dumps(identity))  # as it reads back (tuples are lists)
        try:
            same = json.loads(stamp.read_text()) == identity
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(folder, ignore_errors=True)
            write_json(stamp, identity)

    def _path(self, index: int) -> Path:
        return self.folder / f"batch_{index:06d}.npz"

    def load(self, index: int) -> Records | None:
        """Return the records of batch ``index``, or None when it has not finished."""
        try:
            with np.load(self._path(index), allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError):
            return None

    def save(self, index: int, records: Records) -> None:
        """Keep the records of batch ``index`` (atomically)."""
        buffer = io.BytesIO()
        np.savez(buffer, **records)
        atomic_write(self._path(index), buffer.getvalue())


def run_identity(models: WorkerModels, paths: Sequence[Path], task: str,
                 reference_name: str | None) -> dict[str, Any]:
    """Return what a run's per-batch results depend on (for :class:`BatchStore`)."""
    images = hashlib.sha256("\n".join(map(str, paths)).encode("utf-8", "surrogateescape"))
    return {"task": task, "batch_images": BATCH_IMAGES, "images": len(paths),
            "image_list_sha256": images.hexdigest(), "int8_sha256": sha256_of(models.int8),
            "reference": reference_name,
            "reference_sha256": sha256_of(models.reference) if models.reference else None,
            "preprocess": models.preprocess.to_dict(), "device": models.device}


@dataclass(frozen=True)
class Engine:
    """Where the batches run.

    Attributes:
        workers: worker processes (local) or Ray actors; 1 runs locally in this process.
        ray: run on Ray (a local one started for the run, or the cluster at ``ray_address``);
            model and image paths must then be readable by every node (a shared file system).
        ray_address: a running Ray cluster (``ray://HOST:10001`` or ``HOST:6379``).
    """

    workers: int = 1
    ray: bool = False
    ray_address: str | None = None


def run_batches(method: str, batches: Sequence[tuple], models: WorkerModels, engine: Engine,
                store: BatchStore | None, reference_runner: Any = None,
                progress: bool = True) -> Records:
    """Run ``Worker.<method>(*batch)`` on every batch; return all records, in image order.

    Args:
        method: ``"classify"`` or ``"detect"``.
        batches: the arguments of each call; the first is the batch's image paths.
        models: what each worker loads.
        engine: where the batches run; an in-process ``reference_runner`` (a Keras model)
            makes them run in this process whatever the engine.
        store: where finished batches are kept and found again (None: nowhere).
        reference_runner: a float reference that cannot be loaded in a worker process.
        progress: show images/s and the time left on stderr.

    Raises:
        BadInputError: a worker process died (the finished batches are kept).
        MissingToolError: Ray is not installed, or its cluster cannot be reached.
    """
    results: dict[int, Records] = {}
    todo = []
    for index in range(len(batches)):
        kept = store.load(index) if store is not None else None
        if kept is None:
            todo.append(index)
        else:
            results[index] = kept
    total = sum(len(batch[0]) for batch in batches)
    done = sum(len(batches[i][0]) for i in results)
    with tqdm(total=total, initial=done, unit="img", desc="validating", disable=not progress,
              leave=False) as bar:
        for index, records in _execute(method, batches, todo, models, engine,
                                       reference_runner):
            if store is not None:
                store.save(index, records)
            results[index] = records
            bar.update(len(batches[index][0]))
    return concat_records([results[i] for i in range(len(batches))])


def _execute(method: str, batches: Sequence[tuple], todo: list[int], models: WorkerModels,
             engine: Engine, reference_runner: Any) -> Iterator[tuple[int, Records]]:
    """Yield (batch index, records) as batches finish."""
    if reference_runner is not None or (engine.workers <= 1 and not engine.ray):
        worker = Worker(models, reference_runner)
        for index in todo:
            yield index, getattr(worker, method)(*batches[index])
    elif engine.ray:
        yield from _execute_on_ray(method, batches, todo, models, engine)
    else:
        yield from _execute_in_processes(method, batches, todo, models, engine.workers)


def _execute_in_processes(method: str, batches: Sequence[tuple], todo: list[int],
                          models: WorkerModels, workers: int) -> Iterator[tuple[int, Records]]:
    """Local worker processes, at most 2 batches per worker in flight."""
    context = multiprocessing.get_context("spawn")  # no fork of a process holding TensorFlow
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                                initializer=_start_worker,
                                                initargs=(models,)) as pool:
        pending: dict[concurrent.futures.Future, int] = {}
        queue = iter(todo)
        try:
            while True:
                for index in queue:
                    pending[pool.submit(_run_in_worker, method, batches[index])] = index
                    if len(pending) >= 2 * workers:
                        break
                if not pending:
                    return
                finished, _ = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    yield pending.pop(future), _result(future)
        finally:
            for future in pending:
                future.cancel()


def _execute_on_ray(method: str, batches: Sequence[tuple], todo: list[int],
                    models: WorkerModels, engine: Engine) -> Iterator[tuple[int, Records]]:
    """One Ray actor per worker, each holding its interpreters; an actor that dies is
    restarted and its batch retried (twice), and finished batches are kept by the caller."""
    try:
        import ray
        from ray.util import ActorPool
    except ModuleNotFoundError:
        raise MissingToolError("--engine ray needs Ray, which is not installed; install it "
                               "with: pip install 'edgetpu-quant[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if engine.ray_address:
            _check_reachable(engine.ray_address)
        try:
            ray.init(address=engine.ray_address, include_dashboard=False, log_to_driver=False,
                     num_cpus=None if engine.ray_address else engine.workers)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = engine.ray_address or "a local Ray"
            raise MissingToolError(f"cannot start or reach {where} ({exc}); check "
                                   "--ray-address and that the cluster is running") from exc
    try:
        actor = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(Worker)
        pool = ActorPool([actor.remote(models) for _ in range(max(engine.workers, 1))])
        results = pool.map(lambda worker, i: getattr(worker, method).remote(*batches[i]),
                           todo)
        yield from zip(todo, results, strict=True)
    finally:
        if started_here:
            ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at a Ray address (Ray itself retries for minutes).

    Raises:
        MissingToolError: the host does not answer on the port.
    """
    location = address.removeprefix("ray://")
    if location == "auto":
        return
    host, _, port = location.rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise MissingToolError(f"--ray-address {address}: no Ray cluster answers there "
                               f"({exc}); start it with 'ray start --head' or check the "
                               "address (HOST:6379, or ray://HOST:10001)") from None


def _result(future: concurrent.futures.Future) -> Records:
    try:
        return future.result()
    except concurrent.futures.process.BrokenProcessPool as exc:
        raise BadInputError("a validation worker process died (out of memory, or killed); "
                            "run again to resume from the batches already finished, or use "
                            "fewer --workers") from exc


def concat_records(parts: Sequence[Records]) -> Records:
    """Join per-batch records into one set (in the order given)."""
    if not parts:
        return {}
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def batched(items: Sequence[Any], size: int = BATCH_IMAGES) -> list[Sequence[Any]]:
    """Split ``items`` into consecutive slices of ``size``."""
    return [items[start:start + size] for start in range(0, len(items), size)]


def _detection_arrays(prefix: str, per_image: Sequence[Sequence[Detection]],
                      first: int) -> Records:
    """Flatten detections: image index (counted from ``first``) and a row of label, score,
    box per detection."""
    rows = [(first + i, d.label_id, d.score, *d.bbox)
            for i, dets in enumerate(per_image) for d in dets]
    table = np.asarray(rows, np.float64).reshape(-1, 7)
    return {f"{prefix}_image": table[:, 0].astype(np.int64), f"{prefix}_rows": table[:, 1:]}


def detections(records: Records, prefix: str, images: int) -> list[list[Detection]]:
    """Rebuild the per-image detection lists of ``prefix`` (``int8`` or ``float``)."""
    per_image: list[list[Detection]] = [[] for _ in range(images)]
    for image, (label, score, *box) in zip(records[f"{prefix}_image"],
                                           records[f"{prefix}_rows"], strict=True):
        per_image[int(image)].append(Detection(int(label), float(score), BBox(*box)))
    return per_image
