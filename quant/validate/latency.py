"""CPU latency of a ``.tflite`` model with LiteRT (XNNPACK): warm-up, then percentiles."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetpu import adapters
from edgetpu.runtime import make_interpreter


@dataclass(frozen=True)
class LatencyStats:
    """Per-inference latency in milliseconds over ``runs`` timed invocations."""

    threads: int
    runs: int
    p50: float
    p90: float
    p99: float
    mean: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def measure_latency(
    model_path: Path,
    num_threads: int,
    runs: int = 50,
    warmup: int = 5,
    device: str | None = None,
) -> LatencyStats:
    """Time ``runs`` invocations after ``warmup`` untimed ones, on a fixed random input.

    Args:
        model_path: the model.
        num_threads: CPU threads given to the interpreter.
        runs: timed invocations.
        warmup: untimed invocations first (XNNPACK packs weights on the first run).
        device: Edge TPU device string, for a compiled model on an attached device.
    """
    interpreter = make_interpreter(model_path, num_threads=num_threads, device=device)
    interpreter.allocate_tensors()
    details = adapters.input_details(interpreter)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=tuple(details["shape"][1:]), dtype=np.uint8)
    adapters.set_pixels(interpreter, pixels)
    for _ in range(warmup):
        interpreter.invoke()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times[i] = (time.perf_counter() - start) * 1000
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return LatencyStats(num_threads, runs, float(p50), float(p90), float(p99), float(times.mean()))


def model_size_bytes(path: Path) -> int:
    """Return the model file size in bytes."""
    return Path(path).stat().st_size
