"""Label files in the common formats, read into ``{model class index: name}``.

Formats (told apart by their content):

- one name per line with ``???`` on line 0 (the TF Object Detection API ``labelmap.txt``:
  line 0 is the background, model class ``k`` is line ``k + 1``);
- one name per line otherwise (Coral's ``coco_labels.txt``: model class ``k`` is line ``k``);
- ``id name`` pairs (pycoral's format); ids starting at 1 are category ids
  (model class ``k`` is id ``k + 1``), ids starting at 0 are class indices;
- ``label_map.pbtxt`` (``item { id: 1 name: ... display_name: ... }``, 1-based ids).

Placeholder names (``???``, ``n/a``, empty) are dropped: such a class prints as its index.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgeq.errors import BadInputError

PLACEHOLDERS = {"???", "n/a", "N/A", ""}
_PAIR = re.compile(r"^\s*(\d+)[\s:,]+(.*\S)\s*$")


def read_labels(path: str | Path) -> dict[int, str]:
    """Return ``{model class index: name}`` for a label file (see the module docstring).

    Raises:
        BadInputError: the file is missing or empty.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read label file ({exc})") from exc
    if "item" in text and "{" in text:
        return _from_pbtxt(text, path)
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise BadInputError(f"{path}: label file is empty")
    pairs = [_PAIR.match(line) for line in lines if line.strip()]
    if all(pairs):
        ids = {int(m.group(1)): m.group(2).strip() for m in pairs}
        offset = 1 if min(ids) >= 1 else 0
        return _named({i - offset: name for i, name in ids.items()})
    offset = 1 if lines[0].strip() == "???" else 0
    return _named({i - offset: line.strip() for i, line in enumerate(lines) if i >= offset})


def label_name(labels: dict[int, str], class_index: int) -> str:
    """Return the name of a model class, or its index as text when unnamed."""
    return labels.get(class_index, str(class_index))


def _named(labels: dict[int, str]) -> dict[int, str]:
    return {k: v for k, v in labels.items() if v not in PLACEHOLDERS}


def _from_pbtxt(text: str, path: Path) -> dict[int, str]:
    from edgeq.textproto import parse_text_proto

    items = parse_text_proto(text, str(path)).get("item", [])
    labels = {}
    for item in items:
        if "id" not in item:
            raise BadInputError(f"{path}: an item has no id")
        name = (item.get("display_name") or item.get("name") or [""])[-1]
        labels[int(item["id"][-1]) - 1] = str(name)
    if not labels:
        raise BadInputError(f"{path}: no 'item {{ id: ... }}' entries")
    return _named(labels)
