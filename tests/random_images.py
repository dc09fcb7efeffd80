"""Folders of random RGB PNG images for calibration and CLI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_random_pngs(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """Create ``folder`` holding ``count`` random ``size`` x ``size`` RGB PNGs; return it."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
    return folder
