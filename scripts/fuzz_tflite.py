"""Fuzz the ``.tflite`` reader and analyzer (``edgetpu-check``) with mutated real models.

Seeds are the real models in ``../shared/data`` (``models/*.tflite``, ``coral/*.tflite``,
``coral/pipeline/*.tflite``). Each case applies one to three mutations to a seed: bit flips,
interesting 16 / 32-bit values written over flatbuffer fields (offsets, vector lengths,
vtable entries, found by walking the seed's tables), truncation, deleted or inserted ranges,
and splices from another seed. Case ``i`` of seed ``S`` is the same on every run.

Cases run in a worker process, so a native crash (a signal) is counted, not fatal: the
worker is restarted and the run goes on; a case that takes longer than ``--timeout`` is a
hang (the worker is killed and restarted). Targets:

- ``check`` (default): ``edgetpu-check`` in-process (the reader, the analyzer, the cost
  model, the report or ``--json``). ``clean_errors``: exit 2 with a one-line message;
  ``accepted``: exit 0 or 1; ``crashes``: any other exception, a message that is not one
  line, or a signal.
- ``interpreter``: :func:`edgetpu.runtime.make_interpreter` (our reader first, then the
  native load isolated in a child process), ``allocate_tensors`` and one ``invoke`` on
  zeros. ``clean_errors``: an ``EdgeqError``; ``crashes``: anything else.
- ``interpreter-raw``: LiteRT's ``Interpreter`` on the bytes with no validation, for
  comparison. ``clean_errors``: a Python exception from the interpreter; ``crashes``:
  signals only.

Prints a table and writes JSON (``cases``, ``crashes``, ``hangs``, ``clean_errors``,
``accepted``, per-seed counts and the first failures with their mutations)::

    python scripts/fuzz_tflite.py --cases 20000 --json out/fuzz_tflite.json --seed 0
    python scripts/fuzz_tflite.py --target interpreter --cases 500 --json out/fuzz_native.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import selectors
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.outputs import write_json

SEED_GLOBS = ("models/*.tflite", "coral/*.tflite", "coral/pipeline/*.tflite")
TARGETS = ("check", "interpreter", "interpreter-raw")
_INTERESTING = (0, 1, 2, 3, 4, 7, 8, 16, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
                0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFC)
_MAX_FAILURES = 50  # failures kept in the JSON, with their mutations


@dataclass(frozen=True)
class Seed:
    """A seed model: its bytes and the positions of its flatbuffer fields.

    ``words`` are positions of 32-bit values (table offsets to vtables, field values,
    offset targets such as vector lengths); ``halves`` positions of 16-bit vtable entries.
    """

    name: str
    data: bytes
    words: tuple[int, ...]
    halves: tuple[int, ...]


def load_seeds(folder: Path, names: list[str] | None = None) -> list[Seed]:
    """Return the seed models under ``folder`` (or only those whose file name is in names)."""
    paths = sorted(p for pattern in SEED_GLOBS for p in folder.glob(pattern))
    if names:
        paths = [p for p in paths if p.name in names]
    seeds = []
    for path in paths:
        data = path.read_bytes()
        words, halves = _structure(data)
        seeds.append(Seed(str(path.relative_to(folder)), data, words, halves))
    return seeds


def _structure(data: bytes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Positions of the fields of every table reached from the model root."""
    import tflite

    words: set[int] = {0}
    halves: set[int] = set()

    def table(tab: Any) -> None:
        pos = tab.Pos
        vtable = pos - struct.unpack_from("<i", data, pos)[0]
        words.add(pos)
        (vsize,) = struct.unpack_from("<H", data, vtable)
        for entry in range(vtable, vtable + vsize, 2):
            halves.add(entry)
            if entry < vtable + 4:
                continue
            (field,) = struct.unpack_from("<H", data, entry)
            if field and pos + field + 4 <= len(data):
                words.add(pos + field)
                target = pos + field + struct.unpack_from("<I", data, pos + field)[0]
                if target + 4 <= len(data):
                    words.add(target)  # a vector's length, a string's, or a sub-table

    model = tflite.Model.GetRootAsModel(data, 0)
    table(model._tab)
    for i in range(model.OperatorCodesLength()):
        table(model.OperatorCodes(i)._tab)
    for i in range(model.BuffersLength()):
        table(model.Buffers(i)._tab)
    for i in range(model.SubgraphsLength()):
        graph = model.Subgraphs(i)
        table(graph._tab)
        for j in range(graph.TensorsLength()):
            tensor = graph.Tensors(j)
            table(tensor._tab)
            if tensor.Quantization() is not None:
                table(tensor.Quantization()._tab)
        for j in range(graph.OperatorsLength()):
            op = graph.Operators(j)
            table(op._tab)
            if op.BuiltinOptions() is not None:
                table(op.BuiltinOptions())
    return tuple(sorted(p for p in words if p + 4 <= len(data))), tuple(sorted(halves))


def make_case(seeds: list[Seed], seed: int, index: int) -> tuple[str, bytes, list[str]]:
    """Return ``(seed name, mutated bytes, mutation descriptions)`` of case ``index``."""
    rng = random.Random(f"{seed}:{index}")
    base = seeds[index % len(seeds)]
    data = bytearray(base.data)
    steps = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        mutate = rng.choice(_MUTATORS)
        steps.append(mutate(rng, data, base, seeds))
    return base.name, bytes(data), steps


def _spot(rng: random.Random, data: bytearray, base: Seed) -> int:
    """A position: mostly near a flatbuffer field, sometimes anywhere."""
    if base.words and rng.random() < 0.8:
        return min(rng.choice(base.words) + rng.randrange(-2, 6), len(data) - 1) if data else 0
    return rng.randrange(len(data)) if data else 0


def _flip(rng: random.Random, data: bytearray, base: Seed, seeds: list[Seed]) -> str:
    spots = []
    for _ in range(rng.randint(1, 8)):
        at = max(_spot(rng, data, base), 0)
        if at < len(data):
            data[at] ^= 1 << rng.randrange(8)
            spots.append(at)
    return f"flip {spots}"


def _word(rng: random.Random, data: bytearray, base: Seed, seeds: list[Seed]) -> str:
    use_half = bool(base.halves) and rng.random() < 0.3
    at = rng.choice(base.halves if use_half else base.words)
    fmt, mask = ("<H", 0xFFFF) if use_half else ("<I", 0xFFFFFFFF)
    if at + struct.calcsize(fmt) > len(data):
        return "word (outside)"
    (old,) = struct.unpack_from(fmt, data, at)
    value = rng.choice((
        rng.choice(_INTERESTING), old + rng.randint(-16, 16), old * 2, old // 2,
        len(data) - at + rng.randint(-8, 8), rng.getrandbits(32),
    )) & mask
    struct.pack_into(fmt, data, at, value)
    return f"{'u16' if use_half else 'u32'} @{at} {old} -> {value}"


def _truncate(rng: random.Random, data: bytearray, base: Seed, seeds: list[Seed]) -> str:
    cut = rng.choice((rng.randrange(len(data) + 1), _spot(rng, data, base), rng.randrange(64)))
    del data[cut:]
    return f"truncate {cut}"


def _delete(rng: random.Random, data: bytearray, base: Seed, seeds: list[Seed]) -> str:
    at = _spot(rng, data, base)
    count = rng.choice((1, 2, 4, rng.randint(1, 64), rng.randint(1, 4096)))
    del data[at:at + count]
    return f"delete {count} @{at}"


def _insert(rng: random.Random, data: bytearray, base: Seed, seeds: list[Seed]) -> str:
    at = _spot(rng, data, base)
    count = rng.choice((1, 4, rng.randint(1, 64), rng.randint(1, 4096)))
    chunk = (bytes(rng.getrandbits(8) for _ in range(count)) if rng.random() < 0.5
             else bytes(data[max(at - count, 0):at]) or b"\0")
    data[at:at] = chunk
    return f"insert {len(chunk)} @{at}"


def _splice(rng: random.Random, data: bytearray, base: Seed, seeds: list[Seed]) -> str:
    other = rng.choice(seeds)
    at = _spot(rng, data, base)
    start = rng.randrange(len(other.data))
    if rng.random() < 0.5:  # this file's head and the other's tail
        data[at:] = other.data[start:]
        return f"splice head {at} + {other.name} tail {start}"
    count = rng.randint(1, 4096)
    data[at:at + count] = other.data[start:start + count]
    return f"splice {count} from {other.name} @{start} over @{at}"


_MUTATORS = (_flip, _flip, _word, _word, _word, _truncate, _delete, _insert, _splice)


# --- worker ----------------------------------------------------------------------------------


def run_case(target: str, path: Path, args: list[str]) -> dict[str, str]:
    """Run one case in this process; return ``{"outcome": ..., "detail": ...}``.

    Outcomes: ``accepted``, ``clean_error``, ``crash`` (an exception that is not a clean
    error; native crashes never return).
    """
    from edgeq.errors import EdgeqError

    try:
        if target == "check":
            return _run_check(path, args)
        if target == "interpreter":
            _run_interpreter(path)
        else:
            _run_raw(path)
    except EdgeqError as exc:
        return {"outcome": "clean_error", "detail": str(exc).splitlines()[0][:200]}
    except Exception as exc:
        if target == "interpreter-raw":
            return {"outcome": "clean_error", "detail": f"{type(exc).__name__}: {exc}"[:200]}
        return {"outcome": "crash", "detail": _where(exc)}
    return {"outcome": "accepted", "detail": ""}


def _run_check(path: Path, args: list[str]) -> dict[str, str]:
    from edgetpu.cli.check import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(path), *args])
    except Exception as exc:
        return {"outcome": "crash", "detail": _where(exc)}
    message = err.getvalue().strip()
    if code == 2:
        if len(message.splitlines()) != 1 or not message.startswith("error: "):
            return {"outcome": "crash", "detail": f"exit 2 without a one-line message: "
                                                  f"{message[:200]!r}"}
        return {"outcome": "clean_error", "detail": message[:200]}
    if code in (0, 1):
        return {"outcome": "accepted", "detail": ""}
    return {"outcome": "crash", "detail": f"exit {code}: {message[:200]!r}"}


def _run_interpreter(path: Path) -> None:
    from edgetpu.runtime import make_interpreter

    _invoke_zeros(make_interpreter(path, num_threads=1))


def _run_raw(path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    _invoke_zeros(Interpreter(model_path=str(path), num_threads=1))


def _invoke_zeros(interpreter: Any) -> None:
    import numpy as np

    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()


def _where(exc: BaseException) -> str:
    """``Type: message at file:line`` of the innermost project frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/edgetpu/" in f.filename or "/quant/" in f.filename] or frames
    place = f"{Path(ours[-1].filename).name}:{ours[-1].lineno} ({ours[-1].name})" if ours else "?"
    return f"{type(exc).__name__}: {str(exc)[:120]} at {place}"


def worker(target: str) -> None:
    """Serve cases: read ``path\\targs-json`` lines on stdin, answer JSON lines on stdout."""
    protocol = sys.stdout
    sys.stdout = sys.stderr  # anything else printed must not reach the protocol
    import edgetpu.cli.check
    import edgetpu.runtime  # noqa: F401  (imports done before the first case's clock starts)

    protocol.write("ready\n")
    protocol.flush()
    for line in sys.stdin:
        path, args = line.rstrip("\n").split("\t")
        result = run_case(target, Path(path), json.loads(args))
        protocol.write(json.dumps(result) + "\n")
        protocol.flush()


class Worker:
    """A worker process that survives its cases' crashes and hangs by being restarted."""

    def __init__(self, target: str, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.process: subprocess.Popen[str] | None = None
        self.restarts = 0

    def _start(self) -> subprocess.Popen[str]:
        if self.process is None or self.process.poll() is not None:
            if self.process is not None:
                self.restarts += 1
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", self.target],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True, bufsize=1, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
            )
            assert self.process.stdout is not None
            if self.process.stdout.readline() != "ready\n":
                raise RuntimeError("the fuzz worker did not start")
        return self.process

    def run(self, path: Path, args: list[str]) -> dict[str, str]:
        """Run one case; a signal or a dead worker is a crash, no answer in time a hang."""
        process = self._start()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(f"{path}\t{json.dumps(args)}\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            ready = selector.select(self.timeout)
        if not ready:
            self.close()
            return {"outcome": "hang", "detail": f"no answer in {self.timeout} s"}
        line = process.stdout.readline()
        if line:
            return json.loads(line)
        code = process.wait()
        name = signal.Signals(-code).name if code < 0 else f"exit {code}"
        return {"outcome": "crash", "detail": f"worker died: {name}"}

    def close(self) -> None:
        """Stop the worker process."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# --- driver ----------------------------------------------------------------------------------

OUTCOME_KEYS = {"accepted": "accepted", "clean_error": "clean_errors", "crash": "crashes",
                "hang": "hangs"}


def fuzz(seeds: list[Seed], cases: int, seed: int = 0, target: str = "check",
         timeout: float = 5.0, keep: Path | None = None) -> dict[str, Any]:
    """Run ``cases`` mutated models through ``target``; return the counts and failures.

    Args:
        seeds: the seed models (see :func:`load_seeds`).
        cases: how many cases to run.
        seed: the run's seed; case ``i`` depends only on it and ``i``.
        target: ``check``, ``interpreter`` or ``interpreter-raw`` (see the module docstring).
        timeout: seconds per case before it counts as a hang.
        keep: a folder to copy crashing and hanging cases into (None: keep none).
    """
    totals = Counter({key: 0 for key in OUTCOME_KEYS.values()})
    per_seed: dict[str, Counter[str]] = {s.name: Counter() for s in seeds}
    failures: list[dict[str, Any]] = []
    details: Counter[str] = Counter()
    runner = Worker(target, timeout)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-tflite-") as folder:
        path = Path(folder) / "case.tflite"
        try:
            for index in range(cases):
                name, data, steps = make_case(seeds, seed, index)
                path.write_bytes(data)
                rng = random.Random(f"{seed}:{index}:args")
                args = rng.choice(([], ["--json"], ["-a"])) if target == "check" else []
                result = runner.run(path, args)
                key = OUTCOME_KEYS[result["outcome"]]
                totals[key] += 1
                per_seed[name][key] += 1
                if key in ("crashes", "hangs"):
                    details[result["detail"]] += 1
                    if keep is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        (keep / f"case{index}.tflite").write_bytes(data)
                    if len(failures) < _MAX_FAILURES:
                        failures.append({"case": index, "seed_model": name, "kind": key,
                                         "detail": result["detail"], "mutations": steps})
        finally:
            runner.close()
    return {"target": target, "seed": seed, "cases": cases, **totals,
            "seconds": round(time.perf_counter() - start, 1), "worker_restarts": runner.restarts,
            "per_seed": {k: dict(v) for k, v in per_seed.items()},
            "failure_kinds": dict(details.most_common()), "failures": failures}


def format_table(result: dict[str, Any]) -> str:
    """Return the per-seed counts and the totals as a fixed-width table."""
    keys = list(OUTCOME_KEYS.values())
    lines = [f"{'seed model':<70} " + " ".join(f"{k:>12}" for k in keys)]
    for name, counts in result["per_seed"].items():
        lines.append(f"{name:<70} " + " ".join(f"{counts.get(k, 0):>12}" for k in keys))
    lines.append(f"{'total (' + str(result['cases']) + ' cases, ' + result['target'] + ')':<70} "
                 + " ".join(f"{result[k]:>12}" for k in keys))
    lines += [f"  {count} x {detail}" for detail, count in result["failure_kinds"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer; exit 1 when a case crashed or hung."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", choices=TARGETS, default="check")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per case")
    parser.add_argument("--models", nargs="*", help="only these seed file names")
    parser.add_argument("--keep", type=Path, help="copy crashing / hanging cases here")
    parser.add_argument("--worker", choices=TARGETS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    from edgeq.paths import shared_data_dir

    seeds = load_seeds(shared_data_dir(), args.models)
    if not seeds:
        parser.error(f"no seed models under {shared_data_dir()} (set EDGEQ_SHARED_DATA)")
    result = fuzz(seeds, args.cases, args.seed, args.target, args.timeout, args.keep)
    print(format_table(result))
    if args.json:
        write_json(args.json, result)
    return 1 if result["crashes"] or result["hangs"] else 0


if __name__ == "__main__":
    sys.exit(main())
