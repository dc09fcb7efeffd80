"""Per-layer error: every quantized activation of the int8 model against the float model.

Both models run with all intermediate tensors kept. Layers are paired by aligning the two
op sequences on (op type, output shape), which works whether or not tensor names agree
(a post-training model keeps the float names; a model trained elsewhere does not);
QUANTIZE / DEQUANTIZE ops exist only on one side and are skipped. For each pair the
int8 tensor is dequantized and compared: SQNR in dB, and RMSE in units of the tensor's
quantization step (about 0.29 is the floor of pure rounding noise).
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.images import Preprocess
from edgetpu import adapters
from edgetpu.runtime import make_interpreter

_SKIPPED_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


@dataclass(frozen=True)
class LayerError:
    """Error of one int8 activation tensor against its float counterpart."""

    index: int
    op: str
    name: str
    shape: tuple[int, ...]
    sqnr_db: float
    rmse_over_scale: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class _Op:
    position: int
    op: str
    tensor: int
    name: str
    shape: tuple[int, ...]

    @property
    def key(self) -> tuple[str, tuple[int, ...]]:
        return (self.op, self.shape)


def layer_errors(
    float_path: Path,
    int8_path: Path,
    pixels: np.ndarray,
    preprocess: Preprocess,
    num_threads: int | None = None,
) -> list[LayerError]:
    """Return the per-layer error of the int8 model, worst (lowest SQNR) first.

    Args:
        float_path: the float ``.tflite`` reference.
        int8_path: the quantized ``.tflite``.
        pixels: uint8 images [N, H, W, 3] at the common input size (a small sample).
        preprocess: the float preprocessing (mean / std) shared by both models.
        num_threads: CPU threads.
    """
    float_it = _debug_interpreter(float_path, num_threads)
    int8_it = _debug_interpreter(int8_path, num_threads)
    pairs = align_ops(_ops(float_it), _ops(int8_it))
    quantized = [(f, q) for f, q in pairs if _scale(int8_it, q.tensor) > 0]
    noise = np.zeros(len(quantized))
    signal = np.zeros(len(quantized))
    count = np.zeros(len(quantized))
    for image in pixels:
        for interpreter in (float_it, int8_it):
            adapters.set_pixels(interpreter, image, preprocess.mean, preprocess.std)
            interpreter.invoke()
        for i, (f, q) in enumerate(quantized):
            ref = float_it.get_tensor(f.tensor).astype(np.float64)
            details = int8_it._get_tensor_details(q.tensor, 0)
            test = adapters.dequantize(details, int8_it.get_tensor(q.tensor)).astype(np.float64)
            noise[i] += np.sum((ref - test) ** 2)
            signal[i] += np.sum(ref**2)
            count[i] += ref.size
    results = []
    for i, (_, q) in enumerate(quantized):
        scale = _scale(int8_it, q.tensor)
        sqnr = float("inf") if noise[i] == 0 else 10 * np.log10(max(signal[i], 1e-30) / noise[i])
        rmse = float(np.sqrt(noise[i] / max(count[i], 1)))
        results.append(LayerError(q.position, q.op, q.name, q.shape, float(sqnr), rmse / scale))
    return sorted(results, key=lambda e: e.sqnr_db)


def align_ops(float_ops: list[_Op], int8_ops: list[_Op]) -> list[tuple[_Op, _Op]]:
    """Pair ops of the two models whose (op type, output shape) sequences line up."""
    matcher = difflib.SequenceMatcher(
        a=[o.key for o in float_ops], b=[o.key for o in int8_ops], autojunk=False
    )
    pairs = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            pairs.append((float_ops[block.a + k], int8_ops[block.b + k]))
    return pairs


def _debug_interpreter(path: Path, num_threads: int | None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "preserve_all_tensors is for debugging"
        interpreter = make_interpreter(path, num_threads=num_threads, preserve_all_tensors=True)
    interpreter.allocate_tensors()
    return interpreter


def _ops(interpreter: Any) -> list[_Op]:
    ops = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in _SKIPPED_OPS or len(op["outputs"]) != 1:
            continue
        tensor = int(op["outputs"][0])
        details = interpreter._get_tensor_details(tensor, 0)
        shape = tuple(int(s) for s in details["shape"])
        ops.append(_Op(int(op["index"]), op["op_name"], tensor, details["name"], shape))
    return ops


def _scale(interpreter: Any, tensor: int) -> float:
    details = interpreter._get_tensor_details(tensor, 0)
    if np.dtype(details["dtype"]).kind == "f":
        return 0.0
    return float(details["quantization"][0])
