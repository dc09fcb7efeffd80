"""The sidecar: one typed record of a quantized model, written beside it by PTQ and QAT alike.

``NAME.json`` (schema :data:`edgeq.sidecar.SCHEMA_VERSION`) holds, each in its own section:
the float model it came from (``float_parent``: name, task, source, the file read and its
sha256), its ``preprocess``, the run's ``options`` as given, the figures the run ``derived``
(the images used and their digest, timings, drift, Edge TPU problems and the method's own),
the tool ``versions`` and, once ``compile-edgetpu`` has carried it beside a compiled model, a
``compile`` section. :func:`save` writes a model, its sidecar and a Markdown summary as one
atomic group; ``validate-quant`` finds the float reference in the sidecar.

Example::

    from quant.sidecar import Sidecar
    record = Sidecar.from_json("out/mobilenet_v2_1.0_224_int8.json")
    record.float_parent.source, record.preprocess, record.derived["drift"]
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from edgeq.errors import BadInputError
from edgeq.images import Preprocess
from edgeq.outputs import atomic_write_all
from edgeq.sidecar import SCHEMA_VERSION, find_sidecar, read_sidecar, sidecar_path
from quant.modes import Method
from quant.options import QatOptions, QuantizeOptions

if TYPE_CHECKING:
    from quant.float_model import FloatModel


class ImageSet(Protocol):
    """The images a run calibrated or trained on (a calibration or a training set)."""

    source: str
    sha256: str
    skipped: tuple[str, ...]

    def __len__(self) -> int:
        """The number of images."""
        ...


class QuantResult(Protocol):
    """A quantizer's result (:class:`quant.ptq.QuantizedModel`, :class:`quant.qat.QatResult`)."""

    tflite: bytes
    float_model: FloatModel
    calibration: ImageSet
    options: QuantizeOptions | QatOptions
    timings: dict[str, float]
    drift: dict[str, Any] | None
    edgetpu_problems: tuple[str, ...]

    @property
    def name(self) -> str:
        """The output stem (``<model>_int8``)."""
        ...

    def derived_figures(self) -> dict[str, Any]:
        """The figures only this method derives, for the sidecar's ``derived`` section."""
        ...


@dataclasses.dataclass(frozen=True)
class FloatParent:
    """The float model a quantized one was made from.

    Attributes:
        name: its short name.
        task: ``classify`` or ``detect``.
        source: the model source as the user gave it (zoo name, URL, path).
        source_file: the absolute path of the file or folder read, None for a model built in
            memory.
        source_sha256: the checksum of that file (of the checkpoint's files for a prefix).
        zoo: the zoo entry (:meth:`quant.zoo.ModelSpec.to_dict`) of a zoo architecture.
    """

    name: str
    task: str
    source: str
    source_file: str | None = None
    source_sha256: str | None = None
    zoo: dict[str, Any] | None = None

    @classmethod
    def of(cls, float_model: FloatModel) -> FloatParent:
        """Return the identity of ``float_model``."""
        file = float_model.source_file
        return cls(
            name=float_model.name, task=float_model.task, source=float_model.source,
            source_file=None if file is None else str(Path(file).absolute()),
            source_sha256=_source_digest(file),
            zoo=None if float_model.spec is None else float_model.spec.to_dict(),
        )

    def loader_arguments(self) -> tuple[str, str | None] | None:
        """Return ``(source, checkpoint)`` that load this float model again.

        The arguments of :func:`quant.sources.load_float_model`: a zoo architecture by its
        name with the checkpoint read (archive, folder or prefix), anything else by the file
        read. None when no file was read (a model built in memory).
        """
        if self.source_file is None:
            return None
        if self.zoo is None:
            return self.source_file, None
        return self.zoo["name"], self.source_file


@dataclasses.dataclass(frozen=True)
class Sidecar:
    """The record written beside a quantized model (``NAME.json``).

    Attributes:
        model: the output stem (``<model>_int8``).
        created: when it was written (UTC, ISO 8601).
        tflite_sha256: the checksum of the quantized ``.tflite``.
        float_parent: the float model it came from.
        preprocess: how images are fed to both.
        options: the settings of the run, as given (:class:`QuantizeOptions` for PTQ,
            :class:`QatOptions` for QAT).
        derived: figures the run produced: ``weights`` (per-channel / per-tensor),
            ``dataset`` (source, images, sha256, skipped), ``timings_s``, ``drift``,
            ``edgetpu_problems`` and the method's own (PTQ: ``cross_layer_equalization``,
            ``ranges_changed``, ``weight_stage``; QAT: ``scheme``, ``loss``, ``history``,
            ``resumed_from_epoch``, ``checkpoint_dir``).
        versions: the versions of the tools involved.
        compile: what ``compile-edgetpu`` added (compiler version, mapped ops, its report);
            None before compilation.
    """

    SCHEMA_VERSION: ClassVar[int] = SCHEMA_VERSION

    model: str
    created: str
    tflite_sha256: str
    float_parent: FloatParent
    preprocess: Preprocess
    options: QuantizeOptions | QatOptions
    derived: dict[str, Any]
    versions: dict[str, str]
    compile: dict[str, Any] | None = None

    @property
    def method(self) -> Method:
        """Return how the model was quantized (from the type of its options)."""
        return Method.QAT if isinstance(self.options, QatOptions) else Method.PTQ

    @classmethod
    def from_result(cls, result: QuantResult) -> Sidecar:
        """Return the record of a PTQ or QAT result."""
        images = result.calibration
        derived = {
            "weights": "per-tensor" if result.options.per_tensor else "per-channel",
            "dataset": {"source": images.source, "images": len(images),
                        "sha256": images.sha256, "skipped": len(images.skipped)},
            "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
            "drift": result.drift,
            "edgetpu_problems": list(result.edgetpu_problems),
            **result.derived_figures(),
        }
        return cls(
            model=result.name,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            tflite_sha256=hashlib.sha256(result.tflite).hexdigest(),
            float_parent=FloatParent.of(result.float_model),
            preprocess=result.float_model.preprocess, options=result.options,
            derived=derived, versions=_versions(),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready sidecar."""
        data = {
            "schema_version": self.SCHEMA_VERSION, "model": self.model,
            "method": self.method.value, "created": self.created,
            "tflite_sha256": self.tflite_sha256,
            "float_parent": dataclasses.asdict(self.float_parent),
            "preprocess": self.preprocess.to_dict(),
            "options": {k: str(v) if isinstance(v, Path) else v
                        for k, v in dataclasses.asdict(self.options).items()},
            "derived": self.derived, "versions": self.versions,
        }
        if self.compile is not None:
            data["compile"] = self.compile
        return data

    def to_json(self) -> str:
        """Return the sidecar file's text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, path: str | Path) -> Sidecar:
        """Read the sidecar file ``path``.

        Raises:
            BadInputError: the file is missing, unreadable, not JSON, of another schema
                version, or lacks an entry (the message names the file and the fix).
        """
        return cls.from_dict(read_sidecar(path), Path(path))

    @classmethod
    def beside(cls, model: str | Path) -> Sidecar | None:
        """Return the sidecar beside ``model`` (``x_int8.json`` for ``x_int8.tflite``), or None.

        Raises:
            BadInputError: as :meth:`from_json`, for a sidecar that is there but unusable.
        """
        data = find_sidecar(model)
        return None if data is None else cls.from_dict(data, sidecar_path(model))

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> Sidecar:
        """Return the record of ``data``, a sidecar of this schema version read from ``path``.

        Raises:
            BadInputError: an entry is missing or malformed.
        """
        try:
            method = Method(data["method"])
            return cls(
                model=data["model"], created=data["created"],
                tflite_sha256=data["tflite_sha256"],
                float_parent=FloatParent(**data["float_parent"]),
                preprocess=Preprocess.from_dict(data["preprocess"]),
                options=_options(method, data["options"]),
                derived=data["derived"], versions=data["versions"], compile=data.get("compile"),
            )
        except (KeyError, TypeError, ValueError, BadInputError) as exc:
            raise BadInputError(f"{path}: a sidecar with a missing or malformed entry "
                                f"({type(exc).__name__}: {exc}); quantize the model again to "
                                "rewrite it") from exc

    def summary_markdown(self) -> str:
        """Return the short Markdown summary written beside the sidecar."""
        parent, derived = self.float_parent, self.derived
        lines = [
            f"# {self.model}",
            "",
            f"- float parent: `{parent.name}` from `{parent.source}`",
            *self._method_lines(),
            f"- time: {derived['timings_s'].get('total_s', '?')} s",
        ]
        drift = derived["drift"]
        if drift:
            lines.append(f"- quick drift on {drift['images']} held-out images: top-1 agreement "
                         f"{drift['agreement']:.3f}, mean |logit diff| "
                         f"{drift['mean_abs_diff']:.4f}")
        lines.append(f"- tools: {', '.join(f'{k} {v}' for k, v in self.versions.items())}")
        return "\n".join(lines) + "\n"

    def _method_lines(self) -> list[str]:
        """Return the summary lines on the quantization and the images it used."""
        options, derived = self.options, self.derived
        dataset = derived["dataset"]
        images = (f"{dataset['images']} images from `{dataset['source']}` "
                  f"(sha256 {dataset['sha256'][:12]})")
        if isinstance(options, QatOptions):
            history = derived["history"]
            lines = [
                f"- quantization-aware fine-tuning ({derived['scheme']}, weights "
                f"{derived['weights']}); I/O: {options.io_type}; loss: {derived['loss']}",
                f"- training: {images}; {len(history)} epochs, batch {options.batch_size}, "
                f"lr {options.lr}",
            ]
            if history:
                lines.append(f"- last epoch: loss {history[-1]['loss']:.4f}, agreement with "
                             f"float {history[-1]['agreement']:.3f}")
            return lines
        corrected = (derived["weight_stage"] or {}).get("bias_corrected")
        return [
            f"- weights: {derived['weights']}; I/O: {options.io_type}; activation ranges: "
            f"{options.ranges} ({derived['ranges_changed']} changed); cross-layer "
            f"equalization: {'yes' if derived['cross_layer_equalization'] else 'no'}; weight "
            f"rounding: {options.rounding}; bias correction: {'yes' if corrected else 'no'}",
            f"- calibration: {images}",
        ]


def save(result: QuantResult, out_dir: str | Path) -> list[Path]:
    """Write ``<name>.tflite``, its sidecar ``<name>.json`` and ``<name>.md`` into ``out_dir``.

    The three are written to temporary names, then renamed together
    (:func:`edgeq.outputs.atomic_write_all`): an interruption or a full disk never leaves a
    partial file, nor a model without its sidecar.

    Returns:
        The three paths, model first.

    Raises:
        BadInputError: the folder cannot be created or written.
    """
    record = Sidecar.from_result(result)
    folder = Path(out_dir)
    files = [
        (folder / f"{result.name}.tflite", result.tflite),
        (folder / f"{result.name}.json", record.to_json().encode()),
        (folder / f"{result.name}.md", record.summary_markdown().encode()),
    ]
    atomic_write_all(files)
    return [path for path, _ in files]


def _options(method: Method, data: dict[str, Any]) -> QuantizeOptions | QatOptions:
    """Return the options of a ``method`` run from the sidecar's ``options`` section."""
    if method == Method.PTQ:
        return QuantizeOptions(**data)
    folder = data.get("checkpoint_dir")
    return QatOptions(**{**data, "checkpoint_dir": None if folder is None else Path(folder)})


def _versions() -> dict[str, str]:
    """Return the installed versions of the tools that shape the result."""
    versions = {}
    for package in ("edgetpu-quant", "tensorflow", "tf-keras", "ai-edge-litert", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def _source_digest(path: Path | None) -> str | None:
    """Return the sha256 of a source file, or of a checkpoint prefix's files together."""
    if path is None or not path.exists():
        return None
    if path.is_file():
        from quant.fetch import sha256_of

        return sha256_of(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.parent.glob(path.name + "*") if p.is_file()):
        digest.update(file.read_bytes())
    return digest.hexdigest()
