"""Preprocessing given on the command line for models that do not carry it.

The :class:`~edgeq.images.Preprocess` itself lives in :mod:`edgeq.images`, beside the image
reading that uses it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from edgeq.errors import BadInputError
from edgeq.images import Preprocess


@dataclasses.dataclass(frozen=True)
class PreprocessOptions:
    """Preprocessing given on the command line for models that do not carry it.

    Attributes:
        mean: per-channel mean (1 or 3 values) on 0..255 pixels.
        std: per-channel std (1 or 3 values).
        input_range: (low, high) that pixels 0 and 255 map to; excludes mean/std.
        file: a JSON or YAML file with :class:`Preprocess` fields.
        recorded: a whole :class:`Preprocess` recorded earlier (a sidecar's), used alone.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_range: tuple[float, float] | None = None
    file: Path | None = None
    recorded: Preprocess | None = None

    def given(self) -> bool:
        """Return True when any option was set."""
        return any(v is not None for v in (self.mean, self.std, self.input_range, self.file,
                                           self.recorded))

    def build(self, height: int, width: int) -> Preprocess:
        """Return the :class:`Preprocess` these options describe for an input size."""
        if self.recorded is not None:
            return dataclasses.replace(self.recorded, height=height, width=width)
        if self.file is not None:
            data = _read_mapping(self.file)
            data.setdefault("height", height)
            data.setdefault("width", width)
            return Preprocess.from_dict(data)
        if self.input_range is not None:
            if self.mean is not None or self.std is not None:
                raise BadInputError("give either --input-range or --mean/--std, not both")
            low, high = self.input_range
            if high <= low:
                raise BadInputError(f"--input-range {low},{high}: high must exceed low")
            return Preprocess.from_input_range(height, width, low, high)
        return Preprocess.from_dict({
            "height": height, "width": width,
            "mean": self.mean if self.mean is not None else (0.0,),
            "std": self.std if self.std is not None else (1.0,),
        })


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read preprocessing file ({exc.strerror})") from exc
    try:
        if Path(path).suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (ValueError, ImportError) as exc:
        raise BadInputError(f"{path}: not valid JSON/YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a mapping of preprocessing fields")
    return data
