"""Turn a ``--float`` argument into a runnable float reference.

A float ``.tflite`` runs with LiteRT directly. Anything else (zoo name, checkpoint archive,
Keras file, SavedModel) goes through :func:`quant.sources.load_float_model`, then runs as a
float ``.tflite`` with LiteRT (faster than Keras, and needed for per-layer error and
latency): the bundled one (``bundled_tflite``) or a cached conversion, each used only when
its outputs match the Keras model's within float rounding; otherwise Keras runs it. When
the loader is not installed, an archive whose only float model is a bundled ``.tflite``
is still accepted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import BadInputError
from edgeq.images import inception_preprocess
from edgeq.paths import cache_dir
from quant.validate.runners import KerasRunner, TfliteRunner

ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar")
# Largest output gap at which a float .tflite stands in for the Keras model (float rounding).
SAME_NETWORK_TOLERANCE = 5e-3


@dataclass
class Reference:
    """A float reference ready to run, and where it came from."""

    runner: TfliteRunner | KerasRunner
    source: str
    tflite_path: Path | None

    def describe(self) -> dict[str, str | None]:
        """Return a JSON-ready description for the report."""
        return {
            "source": self.source,
            "runtime": self.runner.kind,
            "tflite": str(self.tflite_path) if self.tflite_path else None,
        }


def load_reference(
    source: str, options: Any = None, num_threads: int | None = None,
    int8_path: Path | None = None, checkpoint: str | None = None,
) -> Reference:
    """Load the float reference named by ``source``.

    Args:
        source: a float ``.tflite``, or anything :func:`quant.sources.load_float_model` takes.
        options: a ``quant.sources.PreprocessOptions`` from the command line or a sidecar,
            or None (default: what the model carries, else [-1, 1] RGB).
        num_threads: CPU threads for LiteRT.
        int8_path: the int8 model; a float detector takes its ``max_detections`` so both
            are scored on equal terms.
        checkpoint: a local checkpoint for a zoo name (``load_float_model``'s).

    Raises:
        BadInputError: the source cannot be loaded as a float model.
    """
    path = Path(source)
    given = options is not None and options.given()
    if path.suffix == ".tflite":
        if path.is_dir():
            raise BadInputError(f"{path}: a folder, not a float .tflite file; pass the file")
        if not path.is_file():
            raise BadInputError(f"{path}: no such float model file")
        return Reference(_tflite(path, options if given else None, num_threads), source, path)
    loader = _loader()
    if loader is None:
        bundled = _bundled_tflite(path)
        return Reference(_tflite(bundled, options if given else None, num_threads),
                         source, bundled)
    try:
        float_model = loader(source, checkpoint, options)
    except BadInputError as loader_error:
        if not path.name.endswith(ARCHIVE_SUFFIXES):
            raise
        try:  # an archive the loader cannot place: its bundled float .tflite, if any
            bundled = _bundled_tflite(path)
        except BadInputError:
            raise loader_error from None
        return Reference(_tflite(bundled, options if given else None, num_threads),
                         source, bundled)
    if float_model.task == "detect":
        head = _aligned_head(float_model.postprocess, int8_path)
        path = converted_tflite(float_model.model, head)
        return Reference(TfliteRunner(path, float_model.preprocess, num_threads), source, path)
    for candidate in _tflite_candidates(float_model):
        if _same_network(float_model, candidate):
            runner = TfliteRunner(candidate, float_model.preprocess, num_threads)
            return Reference(runner, source, candidate)
    return Reference(KerasRunner(float_model.model, float_model.preprocess), source, None)


def _tflite_candidates(float_model: Any) -> Iterator[Path]:
    """Yield the bundled float ``.tflite`` if any, then a conversion of the Keras model."""
    if float_model.bundled_tflite is not None:
        yield Path(float_model.bundled_tflite)
    try:
        yield converted_tflite(float_model.model)
    except Exception as exc:  # the converter raises many types; Keras inference still works
        print(f"note: float model not convertible to .tflite ({type(exc).__name__}); "
              "running it with Keras, without per-layer error or float latency",
              file=sys.stderr)


def _same_network(float_model: Any, tflite_path: Path) -> bool:
    """Return True when a float ``.tflite`` computes what the Keras model does."""
    from quant.sources import max_abs_diff_with_tflite

    try:
        return max_abs_diff_with_tflite(float_model, tflite_path) <= SAME_NETWORK_TOLERANCE
    except BadInputError:
        return False


def converted_tflite(model: Any, head: Any = None) -> Path:
    """Return a float ``.tflite`` of a Keras model, converted once and cached by content.

    LiteRT runs it faster than Keras, and per-layer comparison and latency need a
    ``.tflite``; the cache key hashes the architecture, every weight and the head.

    Args:
        model: a tf-keras model.
        head: a ``quant.detection.postprocess.DetectionHead`` for an SSD whose outputs are box
            encodings and class scores: ``TFLite_Detection_PostProcess`` is appended.
    """
    from edgeq._tensorflow import tf

    digest = hashlib.sha256(model.to_json().encode())
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    if head is not None:
        digest.update(repr(head.settings).encode() + head.anchors.tobytes())
    target = cache_dir() / "float_refs" / digest.hexdigest()[:16] / f"{model.name}_float.tflite"
    if not target.is_file():
        data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        if head is not None:
            from quant.detection.postprocess import append_postprocess

            data = append_postprocess(data, head)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)
    return target


def _aligned_head(head: Any, int8_path: Path | None) -> Any:
    """Return ``head`` with the int8 model's ``max_detections`` (when it has the op)."""
    from quant.detection.postprocess import DetectionHead, read_postprocess

    if head is None:
        raise BadInputError("the float detector carries no post-processing settings")
    settings = read_postprocess(int8_path.read_bytes()) if int8_path else None
    if settings is None or settings.max_detections == head.settings.max_detections:
        return head
    return DetectionHead(
        dataclasses.replace(head.settings, max_detections=settings.max_detections),
        head.anchors,
    )


def _tflite(path: Path, options: Any, num_threads: int | None) -> TfliteRunner:
    runner = TfliteRunner(path, inception_preprocess(1), num_threads)
    if options is not None:
        width, height = runner.input_size
        runner = TfliteRunner(path, options.build(height, width), num_threads)
    return runner


def _loader() -> Callable[..., Any] | None:
    """Return ``quant.sources.load_float_model``, or None where it cannot be imported."""
    try:
        module = importlib.import_module("quant.sources")
    except ImportError as exc:  # the loader or one of its project modules is not there yet
        if (exc.name or "").split(".")[0] == "quant":
            return None
        raise
    return getattr(module, "load_float_model", None)


def _bundled_tflite(path: Path) -> Path:
    """Extract the only ``.tflite`` of an archive into the cache and return its path."""
    if not path.name.endswith(ARCHIVE_SUFFIXES):
        raise BadInputError(
            f"{path}: --float needs a float .tflite or a model archive (.tgz) holding one "
            "(zoo names, checkpoints and SavedModels need quant.sources)"
        )
    if not path.is_file():
        raise BadInputError(f"{path}: no such archive")
    try:
        with tarfile.open(path) as archive:
            members = [m for m in archive.getmembers()
                       if m.isfile() and m.name.endswith(".tflite")]
            if len(members) != 1:
                raise BadInputError(
                    f"{path}: expected exactly one float .tflite in the archive, found "
                    f"{len(members)}; checkpoints without one need the model loader "
                    "(quant.sources), which could not be imported"
                )
            digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_mtime_ns}".encode())
            target = cache_dir() / "float_refs" / digest.hexdigest()[:16] / Path(
                members[0].name).name
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(members[0])
                assert source is not None  # a regular file member always has content
                tmp = target.with_suffix(".part")
                tmp.write_bytes(source.read())
                tmp.replace(target)
            return target
    except (tarfile.TarError, OSError) as exc:
        raise BadInputError(f"{path}: not a readable archive ({exc})") from exc
