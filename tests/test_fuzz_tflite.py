"""The fuzzer of scripts/fuzz_tflite.py, small: mutated real models never crash edgetpu-check.

The heavy run (20,000 cases over every seed) stays in the script; here a few hundred cases
over the small seeds, with a fixed seed, run through the same engine and worker process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scripts_loader import load_script

from edgeq.errors import BadInputError
from edgetpu import runtime
from edgetpu.tflite_model import read_model

SMALL_SEEDS = [
    "keras_lstm_mnist_ptq.tflite",
    "keras_lstm_mnist_ptq_edgetpu.tflite",
    "mobilenet_v1_0.25_128_quant.tflite",
    "model_invoking_error.tflite",
]


fuzz_tflite = load_script("fuzz_tflite")


@pytest.fixture(scope="module")
def seeds(shared_data: Path) -> list:
    found = fuzz_tflite.load_seeds(shared_data, SMALL_SEEDS)
    assert len(found) == len(SMALL_SEEDS)
    return found


def _segfaulting_model(shared_data: Path, folder: Path) -> Path:
    """A mutant of the LSTM model that our reader accepts and LiteRT dies on (SIGSEGV in
    allocate_tensors), found by ``fuzz_tflite.py --target interpreter-raw``."""
    data = bytearray((shared_data / "coral" / "keras_lstm_mnist_ptq.tflite").read_bytes())
    data[11315] = 0x61
    path = folder / "segfault.tflite"
    path.write_bytes(bytes(data))
    return path


def test_cases_are_reproducible(seeds: list) -> None:
    assert fuzz_tflite.make_case(seeds, 7, 42) == fuzz_tflite.make_case(seeds, 7, 42)
    assert fuzz_tflite.make_case(seeds, 7, 42)[1] != fuzz_tflite.make_case(seeds, 7, 43)[1]
    assert all(seed.words and seed.halves for seed in seeds)


def test_mutated_models_never_crash_the_check(seeds: list) -> None:
    result = fuzz_tflite.fuzz(seeds, 300, seed=1234, target="check", timeout=20)
    assert result["cases"] == 300
    assert result["crashes"] == 0 and result["hangs"] == 0, result["failures"][:5]
    assert result["accepted"] > 0 and result["clean_errors"] > 0
    assert result["accepted"] + result["clean_errors"] == 300


def test_worker_counts_a_native_crash_and_restarts(shared_data: Path, tmp_path: Path) -> None:
    crashing = _segfaulting_model(shared_data, tmp_path)
    read_model(crashing)  # our reader alone cannot tell
    worker = fuzz_tflite.Worker("interpreter-raw", timeout=60)
    try:
        assert worker.run(crashing, []) == {"outcome": "crash",
                                            "detail": "worker died: SIGSEGV"}
        good = shared_data / "coral" / "keras_lstm_mnist_ptq.tflite"
        assert worker.run(good, [])["outcome"] == "accepted"
        assert worker.restarts == 1
    finally:
        worker.close()


def test_native_crash_is_bad_input(shared_data: Path, tmp_path: Path) -> None:
    """make_interpreter runs the native load in a child first (this process would die)."""
    crashing = _segfaulting_model(shared_data, tmp_path)
    with pytest.raises(BadInputError, match=r"interpreter crashed on this model \(SIGSEGV\)"):
        runtime.make_interpreter(crashing)

