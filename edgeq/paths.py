"""Where things live: the download cache, the shared test data, the default output folder."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

DEFAULT_OUT = Path("out")


def cache_dir() -> Path:
    """Return the download cache: ``$EDGEQ_CACHE`` or the user cache dir (created)."""
    root = os.environ.get("EDGEQ_CACHE") or platformdirs.user_cache_dir("edgetpu-quant")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_data_dir() -> Path:
    """Return ``$EDGEQ_SHARED_DATA`` or ``../shared/data`` (may not exist)."""
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return Path(os.environ.get("EDGEQ_SHARED_DATA", default)).expanduser()
