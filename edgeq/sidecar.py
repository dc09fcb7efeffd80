"""The JSON sidecar beside a model, as plain data: where it lies, and reading it checked.

``quantize`` writes ``NAME.json`` beside ``NAME.tflite`` (the typed record is
:class:`quant.sidecar.Sidecar`); ``compile-edgetpu``, which imports nothing from ``quant``,
carries it forward as a dict. Both read it here, so the schema version is checked in one place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeq.errors import BadInputError

#: The layout of the sidecar; raise it when a key moves or changes meaning.
SCHEMA_VERSION = 1
#: A key only the sidecars written before schema versions have.
_OLD_LAYOUT_KEY = "quantization"


def sidecar_path(model: str | Path) -> Path:
    """Return where the sidecar of ``model`` lies (``x_int8.tflite`` -> ``x_int8.json``)."""
    return Path(model).with_suffix(".json")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """Read the sidecar ``path``, checking that it is one of :data:`SCHEMA_VERSION`.

    Raises:
        BadInputError: the file is missing, unreadable, not JSON, not a sidecar, or one of
            another schema version.
    """
    path = Path(path)
    return _checked(path, _read_object(path))


def find_sidecar(model: str | Path) -> dict[str, Any] | None:
    """Return the sidecar beside ``model``, or None when there is none.

    A JSON file there that is not a sidecar (``compile-edgetpu``'s report of a model that had
    none, say) counts as none; a sidecar written before schema versions is refused.

    Raises:
        BadInputError: the file there is unreadable, not JSON, an old sidecar, or one of
            another schema version.
    """
    path = sidecar_path(model)
    if not path.is_file():
        return None
    data = _read_object(path)
    if "schema_version" not in data and _OLD_LAYOUT_KEY not in data:
        return None
    return _checked(path, data)


def _checked(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` read from ``path`` when it is a sidecar of :data:`SCHEMA_VERSION`.

    Raises:
        BadInputError: it has no schema version, or another one.
    """
    version = data.get("schema_version")
    if version is None:
        raise BadInputError(f"{path}: not an edgetpu-quant sidecar (no schema_version; older "
                            "versions wrote none); quantize the model again to write one")
    if version != SCHEMA_VERSION:
        raise BadInputError(f"{path}: sidecar schema version {version!r}, this edgetpu-quant "
                            f"reads version {SCHEMA_VERSION}; quantize the model again with it")
    return data


def _read_object(path: Path) -> dict[str, Any]:
    """Return the JSON object in ``path``.

    Raises:
        BadInputError: the file is missing, unreadable, not JSON or not a JSON object.
    """
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read the sidecar ({exc.strerror or exc}); check "
                            "the path") from exc
    except ValueError as exc:  # a JSON or UTF-8 decoding error
        raise BadInputError(f"{path}: the sidecar is not valid JSON ({exc}); quantize the "
                            "model again to rewrite it, or remove it") from exc
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: the sidecar is not a JSON object; quantize the model "
                            "again to rewrite it, or remove it")
    return data
