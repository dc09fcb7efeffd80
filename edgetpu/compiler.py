"""Find and run ``edgetpu_compiler``, and parse what it prints and logs into data.

The compiler (Coral apt package ``edgetpu-compiler``, x86-64 Debian/Ubuntu only, closed
source) is found from ``--compiler PATH``, ``$EDGETPU_COMPILER`` or ``PATH``, or run in Docker
(image built from ``scripts/Dockerfile.edgetpu-compiler``). Its stdout lists per model the
sizes, on-chip / off-chip parameter memory, Edge TPU subgraphs and operation counts; the
``NAME_edgetpu.log`` holds the ``Operator  Count  Status`` table. Both are parsed here, known
failures are mapped to actions, and the real result is compared with the offline prediction
of :mod:`edgetpu.analyze`.

Example::

    from edgetpu.compiler import CompilerOptions, find_compiler, run_compiler
    result = run_compiler(find_compiler(), "model.tflite", CompilerOptions(), out_dir="out")
    result.stdout.models[0].on_chip_bytes
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import BadInputError, MissingToolError
from edgeq.outputs import atomic_write_all, temp_prefix

COMPILER_NAME = "edgetpu_compiler"
DOCKER_IMAGE = "edgetpu-compiler"
DOCKERFILE = "scripts/Dockerfile.edgetpu-compiler"

INSTALL_INSTRUCTIONS = f"""\
edgetpu_compiler was not found (tried --compiler, $EDGETPU_COMPILER, PATH).
Install it (x86-64 Debian/Ubuntu only):
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \\
    | sudo gpg --dearmor -o /usr/share/keyrings/coral-edgetpu.gpg
  echo "deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg] \\
https://packages.cloud.google.com/apt coral-edgetpu-stable main" \\
    | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list
  sudo apt-get update && sudo apt-get install edgetpu-compiler
Or use Docker (any OS; on ARM / Apple silicon add --platform linux/amd64):
  docker build -t {DOCKER_IMAGE} -f {DOCKERFILE} scripts
  compile-edgetpu MODEL.tflite --docker"""

_SIZE_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE = re.compile(r"^\s*([\d.]+)\s*(B|KiB|MiB|GiB)\s*$")
_TABLE_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\S.*?)\s*$")

# stdout line prefix -> (field, kind)
_FIELDS: dict[str, tuple[str, str]] = {
    "Input model:": ("input_model", "str"),
    "Input size:": ("input_bytes", "size"),
    "Output model:": ("output_model", "str"),
    "Output size:": ("output_bytes", "size"),
    "On-chip memory used for caching model parameters:": ("on_chip_bytes", "size"),
    "On-chip memory remaining for caching model parameters:": ("on_chip_remaining_bytes",
                                                                "size"),
    "Off-chip memory used for streaming uncached model parameters:": ("off_chip_bytes", "size"),
    "Number of Edge TPU subgraphs:": ("subgraphs", "int"),
    "Total number of operations:": ("operations", "int"),
    "Operation log:": ("log", "str"),
    "Number of operations that will run on Edge TPU:": ("operations_on_edgetpu", "int"),
    "Number of operations that will run on CPU:": ("operations_on_cpu", "int"),
}

#: Known failures: (pattern in stdout/stderr, problem, action).
KNOWN_FAILURES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'"),
     "op {0} version {1} is newer than this compiler understands",
     "convert with an older TFLite converter (TF 2.5-2.8), or avoid the feature that raised "
     "the op version; edgetpu-check lists each op version against the compiler's"),
    (re.compile(r"Model not quantized"),
     "the compiler says 'Model not quantized': a float tensor, or often a dynamic batch size",
     "use full-integer quantization (int8/uint8 everywhere) and a static input shape with "
     "batch 1; edgetpu-check shows the offending tensor"),
    (re.compile(r"Internal compiler error"),
     "internal compiler error",
     "retry (the compiler is sometimes non-deterministic); else compile with -a, -d, or "
     "-i <tensor> to cut the model before the failing op, or simplify that part"),
    (re.compile(r"Compilation failed due to large activation tensors"),
     "activation tensors too large for the Edge TPU",
     "reduce the input resolution or split the model (-n segments, -i intermediate tensors)"),
    (re.compile(r"requires runtime version \((\d+)\), which is newer than this runtime "
                r"version \((\d+)\)"),
     "the model needs Edge TPU runtime {0} but the device has {1}",
     "recompile with -m {1} (--min_runtime_version), or update libedgetpu on the device"),
    (re.compile(r"did not complete within timeout period|timed out", re.I),
     "the compilation hit its time limit",
     "raise -t / --timeout_sec, or split the model with -n"),
]


@dataclass(frozen=True)
class CompilerOptions:
    """Every ``edgetpu_compiler`` option (None or False: the compiler's default)."""

    show_operations: bool = True
    min_runtime_version: int | None = None
    num_segments: int | None = None
    intermediate_tensors: tuple[str, ...] = ()
    enable_multiple_subgraphs: bool = False
    search_delegate: bool = False
    delegate_search_step: int | None = None
    timeout_sec: int | None = None

    def args(self, out_dir: str) -> list[str]:
        """Return the command-line flags, writing into ``out_dir``."""
        args = ["-o", out_dir]
        if self.show_operations:
            args.append("-s")
        if self.min_runtime_version is not None:
            args += ["-m", str(self.min_runtime_version)]
        if self.num_segments is not None:
            args += ["-n", str(self.num_segments)]
        if self.intermediate_tensors:
            args += ["-i", ",".join(self.intermediate_tensors)]
        if self.enable_multiple_subgraphs:
            args.append("-a")
        if self.search_delegate:
            args.append("-d")
        if self.delegate_search_step is not None:
            args += ["-k", str(self.delegate_search_step)]
        if self.timeout_sec is not None:
            args += ["-t", str(self.timeout_sec)]
        return args


@dataclass(frozen=True)
class OperatorRow:
    """One row of the compiler's ``Operator  Count  Status`` table."""

    operator: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        """True for ``Mapped to Edge TPU``."""
        return self.status == "Mapped to Edge TPU"


@dataclass(frozen=True)
class ModelStats:
    """What stdout says about one output model (one per segment with ``-n``)."""

    input_model: str = ""
    input_bytes: int | None = None
    output_model: str = ""
    output_bytes: int | None = None
    on_chip_bytes: int | None = None
    on_chip_remaining_bytes: int | None = None
    off_chip_bytes: int | None = None
    subgraphs: int | None = None
    operations: int | None = None
    operations_on_edgetpu: int | None = None
    operations_on_cpu: int | None = None
    log: str = ""
    compile_ms: int | None = None
    operators: tuple[OperatorRow, ...] = ()

    @property
    def operations_mapped(self) -> int | None:
        """Return the operations mapped to the Edge TPU: from the table, else the total less
        those on the CPU (None when stdout gave neither)."""
        if self.operators:
            return sum(row.count for row in self.operators if row.mapped)
        if self.operations is None:
            return None
        return self.operations - (self.operations_on_cpu or 0)


@dataclass(frozen=True)
class CompilerOutput:
    """Parsed compiler stdout."""

    version: str | None
    success: bool
    models: tuple[ModelStats, ...]
    search_steps: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class CompilerLog:
    """Parsed ``NAME_edgetpu.log``."""

    version: str | None
    input_model: str
    output_model: str
    operators: tuple[OperatorRow, ...]


@dataclass(frozen=True)
class Diagnosis:
    """A known failure found in the compiler's output, and what to do about it."""

    problem: str
    action: str


@dataclass(frozen=True)
class CompileResult:
    """Everything one compilation produced."""

    command: list[str]
    returncode: int
    stdout: CompilerOutput
    logs: dict[str, CompilerLog]
    outputs: list[Path]
    diagnoses: list[Diagnosis]
    raw_stdout: str = ""
    raw_stderr: str = ""

    @property
    def success(self) -> bool:
        """True when the compiler exited 0, reported success and wrote a model."""
        return self.returncode == 0 and self.stdout.success and bool(self.outputs)

    @property
    def operators(self) -> list[OperatorRow]:
        """The operator table rows of every output (from the logs, else from stdout)."""
        if self.logs:
            return [row for log in self.logs.values() for row in log.operators]
        return [row for model in self.stdout.models for row in model.operators]


def parse_size(text: str) -> int:
    """Return bytes for a compiler size such as ``3.75MiB`` or ``0.00B``.

    Raises:
        ValueError: the text is not a size.
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a compiler size: {text!r}")
    return round(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def parse_stdout(text: str) -> CompilerOutput:
    """Parse the compiler's stdout (one block per output model; ``-d`` search lines)."""
    version = _version(text)
    models: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    compile_ms: int | None = None
    steps: list[int] = []
    in_table = False
    for line in text.splitlines():
        stripped = line.strip()
        if match := re.match(r"Model compiled successfully in (\d+) ms", stripped):
            compile_ms = int(match.group(1))
            continue
        if match := re.match(r"Try to compile segment with (\d+) ops", stripped):
            steps.append(int(match.group(1)))
            continue
        if stripped.startswith("Operator") and "Count" in stripped and "Status" in stripped:
            in_table = current is not None
            continue
        field_match = next(((prefix, spec) for prefix, spec in _FIELDS.items()
                            if stripped.startswith(prefix)), None)
        if field_match:
            in_table = False
            prefix, (name, kind) = field_match
            value = stripped[len(prefix):].strip()
            if name == "input_model" or current is None:
                current = {"compile_ms": compile_ms, "operators": []}
                models.append(current)
            current[name] = (parse_size(value) if kind == "size"
                             else int(value) if kind == "int" else value)
            continue
        if in_table and current is not None and (row := _table_row(stripped)):
            current["operators"].append(row)
        elif in_table and stripped and not _table_row(stripped):
            in_table = False
    lines = [line.strip() for line in text.splitlines()]
    error_at = [i for i, line in enumerate(lines) if _is_error(line)]
    compiled_at = [i for i, line in enumerate(lines) if line.startswith("Model compiled success")]
    stats = tuple(ModelStats(**{**m, "operators": tuple(m["operators"])}) for m in models)
    # with -d, failed attempts come before the one that compiled
    success = bool(stats) and bool(compiled_at) and not any(i > compiled_at[-1]
                                                            for i in error_at)
    errors = tuple(lines[i] for i in error_at)
    return CompilerOutput(version, success, stats, tuple(steps), errors)


def parse_log(text: str) -> CompilerLog:
    """Parse a ``NAME_edgetpu.log`` file's text."""
    def value(prefix: str) -> str:
        match = re.search(rf"^{prefix}:\s*(.+)$", text, re.M)
        return match.group(1).strip() if match else ""

    rows = []
    in_table = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Operator") and "Status" in stripped:
            in_table = True
        elif in_table and (row := _table_row(stripped)):
            rows.append(row)
    return CompilerLog(_version(text), value("Input"), value("Output"), tuple(rows))


def diagnose(text: str) -> list[Diagnosis]:
    """Return the known failures found in compiler (or runtime) output, with actions."""
    found = []
    for pattern, problem, action in KNOWN_FAILURES:
        match = pattern.search(text)
        if match:
            groups = match.groups()
            found.append(Diagnosis(problem.format(*groups), action.format(*groups)))
    return found


def cpu_ops_from_table(rows: list[OperatorRow]) -> Counter[str]:
    """Multiset of operators the compiler did not map (``CUSTOM`` for custom ops)."""
    counts: Counter[str] = Counter()
    for row in rows:
        if not row.mapped:
            counts[row.operator] += row.count
    return counts


def compare_with_prediction(predicted: Counter[str], actual: Counter[str]) -> list[str]:
    """Return human lines for each difference between predicted and real CPU op counts."""
    lines = []
    for op in sorted(set(predicted) | set(actual)):
        if predicted[op] != actual[op]:
            lines.append(f"{op}: predicted {predicted[op]} on the CPU, the compiler put "
                         f"{actual[op]} there")
    return lines


def find_compiler(explicit: str | Path | None = None) -> list[str] | None:
    """Return the compiler command (``[path]``), or None when it is not installed.

    Order: ``explicit``, ``$EDGETPU_COMPILER``, ``edgetpu_compiler`` on ``PATH``.

    Raises:
        BadInputError: an explicit or ``$EDGETPU_COMPILER`` path is not an executable file.
    """
    for source, candidate in (("--compiler", explicit),
                              ("$EDGETPU_COMPILER", os.environ.get("EDGETPU_COMPILER"))):
        if candidate:
            path = Path(candidate).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise BadInputError(f"{source} {path}: not an executable file; give the path "
                                    "of edgetpu_compiler")
            return [str(path)]
    found = shutil.which(COMPILER_NAME)
    return [found] if found else None


def docker_command(image: str = DOCKER_IMAGE) -> list[str]:
    """Return the ``docker run`` prefix for the compiler image (mounts added by the runner).

    Raises:
        MissingToolError: docker is not installed or the image is not built.
    """
    docker = shutil.which("docker")
    if not docker:
        raise MissingToolError("--docker needs Docker (https://docs.docker.com/get-docker/); "
                               "or install edgetpu_compiler itself (see compile-edgetpu --help)")
    probe = subprocess.run([docker, "image", "inspect", image], capture_output=True, check=False)
    if probe.returncode != 0:
        raise MissingToolError(f"Docker image {image!r} not found; build it with: docker build "
                               f"-t {image} -f {DOCKERFILE} scripts")
    return [docker, "run", "--rm", "--platform", "linux/amd64"]


def run_compiler(command: list[str], model: str | Path, options: CompilerOptions,
                 out_dir: str | Path, *, docker_image: str | None = None,
                 sidecars: Callable[[CompileResult], list[tuple[Path, bytes]]] | None = None,
                 ) -> CompileResult:
    """Compile ``model`` into ``out_dir``; models appear there only when all compiled.

    The compiler writes into a temporary folder; its models and logs, and the files that
    ``sidecars`` returns, are then written to ``out_dir`` as one group
    (:func:`edgeq.outputs.atomic_write_all`): all of them or, after Ctrl-C, a kill or a full
    disk, none.

    Args:
        command: the compiler (from :func:`find_compiler`) or, with ``docker_image``, the
            ``docker run`` prefix (from :func:`docker_command`).
        model: the ``.tflite`` to compile.
        options: compiler flags.
        out_dir: where ``*_edgetpu.tflite`` and ``*_edgetpu.log`` go.
        docker_image: run ``edgetpu_compiler`` inside this image (paths are mounted).
        sidecars: given the result (its ``outputs`` already name the final paths), returns
            more ``(path, bytes)`` to write with the models, e.g. a parsed report.

    Returns:
        A :class:`CompileResult` (also for a failed compilation).

    Raises:
        MissingToolError: the compiler could not be started.
        BadInputError: the outputs cannot be written (full disk, permissions).
    """
    model = Path(model).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=temp_prefix("compile")) as tmp:
        work = str(Path(tmp).resolve())  # the compiler runs in it; Docker mounts need it absolute
        if docker_image:
            uid = f"{os.getuid()}:{os.getgid()}" if hasattr(os, "getuid") else "0:0"
            argv = command + ["--user", uid, "-v", f"{model.parent}:/in:ro", "-v",
                              f"{work}:/out", docker_image, COMPILER_NAME,
                              *options.args("/out"), f"/in/{model.name}"]
        else:
            argv = command + options.args(work) + [str(model)]
        timeout = (options.timeout_sec or 180) + 120
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                                  timeout=timeout, cwd=work)
        except FileNotFoundError as exc:
            raise MissingToolError(f"could not start {argv[0]}: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise MissingToolError(f"{argv[0]} did not finish within {timeout} s") from exc
        parsed = parse_stdout(proc.stdout)
        produced = sorted(Path(work).glob("*_edgetpu.*"))
        logs = {p.name: parse_log(p.read_text(errors="replace"))
                for p in produced if p.suffix == ".log"}
        # a failed run (e.g. -n with one segment too large) keeps its logs, never its models
        keep = produced if proc.returncode == 0 and parsed.success else [
            p for p in produced if p.suffix == ".log"]
        result = CompileResult(argv, proc.returncode, parsed, logs,
                               [out_dir / p.name for p in keep if p.suffix == ".tflite"],
                               diagnose(proc.stdout + "\n" + proc.stderr), proc.stdout,
                               proc.stderr)
        files = [(out_dir / p.name, p.read_bytes()) for p in keep]
        atomic_write_all(files + (sidecars(result) if sidecars else []))
    return result


def _is_error(line: str) -> bool:
    return (line.startswith(("ERROR", "Invalid model", "Model not quantized",
                             "Model could not be parsed", "Compilation failed"))
            or "Internal compiler error" in line)


def _version(text: str) -> str | None:
    match = re.search(r"Edge TPU Compiler version (\S+)", text)
    return match.group(1) if match else None


def _table_row(line: str) -> OperatorRow | None:
    match = _TABLE_ROW.match(line)
    if not match or match.group(1) == "Operator":
        return None
    return OperatorRow(match.group(1), int(match.group(2)), match.group(3))
