"""The quantized result, its JSON sidecar and Markdown summary, written atomically."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeq.outputs import atomic_write_all

if TYPE_CHECKING:
    from quant.calibration import CalibrationSet
    from quant.float_model import FloatModel
    from quant.options import QuantizeOptions
    from quant.ptq.equalize import EqualizeReport
    from quant.ptq.weights import WeightReport


@dataclasses.dataclass(frozen=True)
class QuantizedModel:
    """An int8 model and what produced it.

    Attributes:
        tflite: the flatbuffer bytes.
        float_model: the :class:`quant.float_model.FloatModel` it came from.
        calibration: the :class:`quant.calibration.CalibrationSet` used.
        options: the :class:`quant.options.QuantizeOptions` used.
        equalization: the cross-layer equalization report, when it ran.
        ranges_changed: activation ranges replaced between calibration and quantization.
        weights: the :class:`quant.ptq.weights.WeightReport` of the weight stage.
        timings: seconds per stage.
        drift: quick drift on held-out images (filled by :func:`with_drift`).
        edgetpu_problems: ops that would not map (empty unless the caller allowed them).
    """

    tflite: bytes
    float_model: FloatModel
    calibration: CalibrationSet
    options: QuantizeOptions
    equalization: EqualizeReport | None = None
    ranges_changed: int = 0
    weights: WeightReport | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    drift: dict[str, Any] | None = None
    edgetpu_problems: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Return the output stem, ``<model>_int8``."""
        return f"{self.float_model.name}_int8"

    def with_drift(self, drift: dict[str, Any]) -> QuantizedModel:
        """Return a copy carrying a quick drift measurement."""
        return dataclasses.replace(self, drift=drift)


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("edgetpu-quant", "tensorflow", "tf-keras", "ai-edge-litert", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def _source_digest(path: Path | None) -> str | None:
    if path is None or not path.exists():
        return None
    if path.is_file():
        from quant.fetch import sha256_of

        return sha256_of(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.parent.glob(path.name + "*") if p.is_file()):
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _weight_stage(result: Any) -> dict[str, Any] | None:
    report = getattr(result, "weights", None)  # QAT results, which share this record, have none
    return None if report is None else dataclasses.asdict(report)


def sidecar(result: QuantizedModel) -> dict[str, Any]:
    """Return the JSON sidecar: source, preprocessing, settings, calibration, versions, drift."""
    fm = result.float_model
    cle = result.equalization
    return {
        "model": result.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tflite_sha256": hashlib.sha256(result.tflite).hexdigest(),
        "float_parent": {
            "name": fm.name, "task": fm.task, "source": fm.source,
            "source_file": str(fm.source_file) if fm.source_file else None,
            "source_sha256": _source_digest(fm.source_file),
            "zoo": fm.spec.to_dict() if fm.spec is not None else None,
        },
        "preprocess": fm.preprocess.to_dict(),
        "quantization": {
            **dataclasses.asdict(result.options),
            "method": "ptq", "weights": "per-tensor" if result.options.per_tensor
            else "per-channel",
            "cross_layer_equalization": None if cle is None else {
                "pairs": len(cle.pairs),
                "max_range_ratio_before": cle.max_range_ratio_before,
                "max_range_ratio_after": cle.max_range_ratio_after,
            },
            "ranges_changed": result.ranges_changed,
            "weight_stage": _weight_stage(result),
        },
        "calibration": {
            "source": result.calibration.source, "images": len(result.calibration.paths),
            "sha256": result.calibration.sha256, "skipped": len(result.calibration.skipped),
        },
        "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
        "drift": result.drift,
        "edgetpu_problems": list(result.edgetpu_problems),
        "versions": _versions(),
    }


def summary_markdown(data: dict[str, Any]) -> str:
    """Return the short Markdown summary of a sidecar."""
    q, c = data["quantization"], data["calibration"]
    corrected = (q.get("weight_stage") or {}).get("bias_corrected")
    lines = [
        f"# {data['model']}",
        "",
        f"- float parent: `{data['float_parent']['name']}` from `{data['float_parent']['source']}`",
        f"- weights: {q['weights']}; I/O: {q['io_type']}; activation ranges: {q['ranges']} "
        f"({q['ranges_changed']} changed); cross-layer equalization: "
        f"{'yes' if q['cross_layer_equalization'] else 'no'}; weight rounding: "
        f"{q['rounding']}; bias correction: {'yes' if corrected else 'no'}",
        f"- calibration: {c['images']} images from `{c['source']}` (sha256 {c['sha256'][:12]})",
        f"- time: {data['timings_s'].get('total_s', '?')} s",
    ]
    drift = data.get("drift")
    if drift:
        lines.append(f"- quick drift on {drift['images']} held-out images: top-1 agreement "
                     f"{drift['agreement']:.3f}, mean |logit diff| {drift['mean_abs_diff']:.4f}")
    lines.append(f"- tools: {', '.join(f'{k} {v}' for k, v in data['versions'].items())}")
    return "\n".join(lines) + "\n"


def write_outputs(out_dir: str | Path, name: str, tflite: bytes, data: dict[str, Any],
                  markdown: str) -> list[Path]:
    """Write ``<name>.tflite``, ``<name>.json`` and ``<name>.md`` into ``out_dir``.

    The three are written to temporary names, then renamed together
    (:func:`edgeq.outputs.atomic_write_all`): an interruption or a full disk never leaves a
    partial file, nor a model without its sidecar.

    Raises:
        BadInputError: the folder cannot be created or written.
    """
    folder = Path(out_dir)
    files = [
        (folder / f"{name}.tflite", tflite),
        (folder / f"{name}.json", (json.dumps(data, indent=2) + "\n").encode()),
        (folder / f"{name}.md", markdown.encode()),
    ]
    atomic_write_all(files)
    return [path for path, _ in files]


def save(result: QuantizedModel, out_dir: str | Path) -> list[Path]:
    """Write the model, its JSON sidecar and Markdown summary (see :func:`write_outputs`)."""
    data = sidecar(result)
    return write_outputs(out_dir, result.name, result.tflite, data, summary_markdown(data))
