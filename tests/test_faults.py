"""Faults: Ctrl-C or a kill mid-run leaves no partial output, and concurrent runs do not mix.

The real commands run in subprocesses (``python -m quant``, ``python -m edgetpu compile``)
in their own process group, as a shell runs them. Ctrl-C is SIGINT sent to that group; a
kill is SIGKILL to the group (so no orphan is left behind). After SIGINT the command exits
130 with one line and leaves no temporary file; after either signal no final output exists
and the next run to the same ``--out`` succeeds. A kill can leave a temporary file (nothing
runs to remove it), never a final one.

Full disks are covered by ``test_bad_input_matrix.py``; a connection cut mid-download by
``test_fetch.py``. Here the download is interrupted by a signal while the server stalls.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from random_images import write_random_pngs

from edgeq import outputs

ROOT = Path(__file__).parents[1]
COMPILER_STDOUT = Path(__file__).parent / "data" / "compiler" / "success_stdout.txt"
QUANTIZE = [sys.executable, "-m", "quant"]
COMPILE = [sys.executable, "-m", "edgetpu", "compile"]
INTERRUPTED = r"^{prog}: interrupted; no partial output was kept$"
WAIT_S = 120

pytestmark = pytest.mark.skipif(sys.platform == "win32",
                                reason="process groups, SIGKILL and fcntl locks are POSIX")


class _Run:
    """A command in its own process group; stderr is collected by a thread as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=env, start_new_session=True)
        self.stderr = b""
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):
            self.stderr += chunk

    def wait_until(self, ready: Callable[[_Run], bool], what: str) -> None:
        """Poll ``ready(self)`` until true; fail if the command ends or takes too long first."""
        deadline = time.monotonic() + WAIT_S
        while not ready(self):
            assert self.proc.poll() is None, f"ended before {what}: {self.text()}"
            assert time.monotonic() < deadline, f"no {what} within {WAIT_S} s: {self.text()}"
            time.sleep(0.05)

    def stop(self, sig: signal.Signals) -> int:
        """Send ``sig`` to the process group; return the exit status."""
        os.killpg(self.proc.pid, sig)
        return self.proc.wait(WAIT_S)

    def kill(self) -> None:
        """Kill whatever is left of the process group; wait until its stderr is read."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(WAIT_S)
        self.thread.join(WAIT_S)

    def text(self) -> str:
        """Return stderr so far, progress-bar redraws split into lines."""
        return self.stderr.decode(errors="replace").replace("\r", "\n")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "EDGEQ_CACHE": str(tmp_path / "cache"),
            **extra}


def _interrupt(argv: list[str], env: dict[str, str], ready: Callable[[_Run], bool],
               what: str, sig: signal.Signals, delay: float = 0.0) -> tuple[int, str]:
    """Start ``argv``, wait for ``ready``, then ``delay`` s, send ``sig``; return status, stderr."""
    run = _Run(argv, env)
    try:
        run.wait_until(ready, what)
        time.sleep(delay)
        code = run.stop(sig)
    finally:
        run.kill()
    return code, run.text()


def _check_stopped(sig: signal.Signals, code: int, err: str, prog: str) -> None:
    """SIGINT: exit 130 and ``prog``'s one-line message last; SIGKILL: killed by the signal."""
    if sig == signal.SIGINT:
        assert code == 130, err
        assert re.match(INTERRUPTED.format(prog=prog), err.strip().splitlines()[-1].strip()), err
        assert "Traceback" not in err, err
    else:
        assert code == -signal.SIGKILL, err


def _leftovers(out: Path) -> list[str]:
    """Return every name under ``out`` (temporary ones included), relative to it."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.exists() else []


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small Keras classifier and a folder of 160 calibration images."""
    from edgeq._tensorflow import keras

    folder = tmp_path_factory.mktemp("tiny")
    inputs = keras.Input((64, 64, 3))  # enough work that calibrating takes a second or two
    x = keras.layers.Conv2D(32, 3, activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(4)(x)).save(folder / "tiny.keras")
    return folder / "tiny.keras", write_random_pngs(folder / "images", 160, 32)


def _quantize_args(model: Path, images: Path, out: Path) -> list[str]:
    return [*QUANTIZE, "--model", str(model), "--input-range=-1,1", "--calib-dir", str(images),
            "--calib-size", "150", "--drift-images", "4", "--out", str(out)]


FINAL = ("tiny_int8.tflite", "tiny_int8.json", "tiny_int8.md")


@pytest.mark.parametrize("sig", [
    signal.SIGINT,
    pytest.param(signal.SIGKILL, marks=pytest.mark.slow),  # 17 s; the suite stays < 10 min
], ids=["sigint", "sigkill"])
def test_quantize_interrupted_during_calibration(tiny, tmp_path, sig):
    model, images = tiny
    out = tmp_path / "out"
    argv = _quantize_args(model, images, out)
    code, err = _interrupt(argv, _env(tmp_path), lambda run: "calibration images" in run.text(),
                           "calibration", sig, delay=0.5)  # calibrating takes seconds
    _check_stopped(sig, code, err, "quantize")
    left = _leftovers(out)
    assert not set(FINAL) & set(left), left
    if sig == signal.SIGINT:
        assert left == [], left
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(tmp_path),
                          timeout=WAIT_S, check=False)
    assert done.returncode == 0, done.stderr
    assert _leftovers(out) == sorted(FINAL)  # and no temporary file


def test_sigint_between_renames_completes_the_group(tmp_path, monkeypatch):
    """Ctrl-C after the model is renamed waits until its sidecar and summary are too."""
    files = [(tmp_path / name, name.encode()) for name in FINAL]
    replace = os.replace

    def replace_then_interrupt(source: str, target: Path) -> None:
        replace(source, target)
        if target == files[0][0]:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        outputs.atomic_write_all(files)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FINAL)
    assert all(path.read_bytes() == payload for path, payload in files)


def test_repeated_ctrl_c_keeps_exit_130_and_one_line(tmp_path):
    """A second Ctrl-C while the stopped command exits changes neither its status nor its
    last line (a user presses it twice; a terminal may send it to the group twice)."""
    code = textwrap.dedent("""
        import os, signal, sys
        from edgeq.errors import cli_entry

        @cli_entry("demo")
        def main(argv):
            raise KeyboardInterrupt

        status = main([])
        os.kill(os.getpid(), signal.SIGINT)
        sys.exit(status)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(tmp_path), timeout=WAIT_S)
    _check_stopped(signal.SIGINT, run.returncode, run.stderr, "demo")


_COMPILER = r'''
import os, sys, time
from pathlib import Path

args = sys.argv[1:]
out, model = Path(args[args.index("-o") + 1]), Path(args[-1])
data = model.read_bytes()
with open(out / (model.stem + "_edgetpu.tflite"), "wb") as stream:
    stream.write(data[: len(data) // 2])
    stream.flush()
    time.sleep(float(os.environ.get("DOUBLE_SLEEP", "0")))
    stream.write(data[len(data) // 2:])
(out / (model.stem + "_edgetpu.log")).write_text("")
print(Path(sys.argv[0]).with_name("stdout.txt").read_text())
'''


@pytest.fixture(scope="module")
def int8_model(tiny, tmp_path_factory) -> Path:
    """The tiny model quantized (in this process), to compile."""
    from quant.cli.quantize import main

    model, images = tiny
    out = tmp_path_factory.mktemp("int8")
    assert main(["--model", str(model), "--input-range=-1,1", "--calib-dir", str(images),
                 "--calib-size", "4", "--drift-images", "0", "--out", str(out)]) == 0
    return out / "tiny_int8.tflite"


@pytest.fixture
def compiler(tmp_path: Path) -> Path:
    """A stand-in edgetpu_compiler that writes half its model, sleeps DOUBLE_SLEEP, finishes."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "stdout.txt").write_text(
        COMPILER_STDOUT.read_text().replace("mobilenet_v1_0.25_128_quant", "tiny_int8"))
    script = folder / "edgetpu_compiler"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(_COMPILER))
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_compile_interrupted_mid_compile(int8_model, compiler, tmp_path, sig):
    out = tmp_path / "out"
    argv = [*COMPILE, str(int8_model), "--compiler", str(compiler), "--out", str(out)]

    def compiling(_run: _Run) -> bool:  # the half-written model is in the compiler's folder
        return bool(list(out.glob(".compile.edgeq-*/tiny_int8_edgetpu.tflite")))

    code, err = _interrupt(argv, _env(tmp_path, DOUBLE_SLEEP="60"), compiling, "compilation",
                           sig)
    _check_stopped(sig, code, err, "compile-edgetpu")
    left = _leftovers(out)
    assert not [name for name in left if "/" not in name and name.endswith(
        ("_edgetpu.tflite", "_edgetpu.json"))], left
    if sig == signal.SIGINT:
        assert left == [], left
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(tmp_path),
                          timeout=WAIT_S, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "tiny_int8_edgetpu.tflite").read_bytes() == int8_model.read_bytes()
    # the killed run's compiler folder is gone: the rerun removed it
    assert _leftovers(out) == [f"tiny_int8_edgetpu.{ext}" for ext in ("json", "log", "tflite")]


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``payload`` with Range support; the first answer stalls after ``stall`` bytes.

    The stalled answer waits on ``release`` (set at teardown) and then closes.
    """

    url = ""
    payload = b""
    stall = 0
    release = threading.Event()
    requests: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802
        cls = type(self)
        wanted = self.headers.get("Range")
        cls.requests.append(wanted)
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted else 0
        body = cls.payload[start:]
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Length", str(len(body)))
        if wanted:
            self.send_header("Content-Range",
                             f"bytes {start}-{len(cls.payload) - 1}/{len(cls.payload)}")
        self.end_headers()
        if len(cls.requests) == 1:
            self.wfile.write(body[:cls.stall])
            self.wfile.flush()
            cls.release.wait(WAIT_S)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stalling_server() -> Iterator[type[_StallingHandler]]:
    """A loopback server; set ``payload`` and ``stall`` on the yielded class, then GET."""
    _StallingHandler.requests = []
    _StallingHandler.release = threading.Event()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StallingHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _StallingHandler.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield _StallingHandler
    _StallingHandler.release.set()
    httpd.shutdown()
    httpd.server_close()


def _part_has(part: Path, size: int) -> Callable[[_Run], bool]:
    """Return a readiness check for :func:`_interrupt`: ``part`` holds ``size`` bytes."""
    return lambda _run: part.exists() and part.stat().st_size >= size


def test_killed_download_keeps_its_part_and_resumes(stalling_server, tmp_path, monkeypatch):
    """fetch.download in a child killed mid-body: the .part is a prefix, resumed next time."""
    from quant import fetch

    payload = np.random.default_rng(0).bytes(3 << 20)
    stalling_server.payload, stalling_server.stall = payload, 3 << 19  # 1.5 MiB, then stall
    url = f"{stalling_server.url}/model.tgz"
    part = tmp_path / "cache" / "downloads" / "model.tgz.part"
    argv = [sys.executable, "-c",
            "import sys; from quant.fetch import download; download(sys.argv[1])", url]
    code, err = _interrupt(argv, _env(tmp_path), _part_has(part, 1 << 20), "partial download",
                           signal.SIGKILL)
    assert code == -signal.SIGKILL, err
    kept = part.stat().st_size
    assert payload.startswith(part.read_bytes()) and kept >= 1 << 20
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "cache"))
    path = fetch.download(url, progress=False)
    assert stalling_server.requests == [None, f"bytes={kept}-"]
    assert path.read_bytes() == payload and not part.exists()
    assert fetch.sha256_of(path) == hashlib.sha256(payload).hexdigest()


@pytest.fixture(scope="module")
def checkpoint_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic TF-slim checkpoint of the smallest zoo MobileNetV1, as a .tgz."""
    from slim_checkpoints import slim_variables, write_checkpoint

    from quant.models import build_classifier

    folder = tmp_path_factory.mktemp("ckpt")
    prefix = write_checkpoint(folder / "mobilenet_v1_0.25_128.ckpt",
                              slim_variables(build_classifier("mobilenet_v1", 128, 0.25)))
    archive = folder / "mobilenet_v1_0.25_128.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in prefix.parent.glob(f"{prefix.name}.*"):
            tar.add(path, arcname=path.name)
    return archive


def test_quantize_interrupted_during_download(stalling_server, checkpoint_archive, tiny,
                                              tmp_path):
    """Ctrl-C while quantize downloads its checkpoint; the next run resumes and succeeds."""
    payload = checkpoint_archive.read_bytes()
    assert len(payload) > 3 << 19
    stalling_server.payload, stalling_server.stall = payload, 3 << 19
    url = f"{stalling_server.url}/mobilenet_v1_0.25_128.tgz"
    out = tmp_path / "out"
    argv = [*QUANTIZE, "--model", url, "--calib-dir", str(tiny[1]), "--calib-size", "2",
            "--drift-images", "0", "--out", str(out)]
    part = tmp_path / "cache" / "downloads" / "mobilenet_v1_0.25_128.tgz.part"
    code, err = _interrupt(argv, _env(tmp_path), _part_has(part, 1 << 20), "partial download",
                           signal.SIGINT)
    _check_stopped(signal.SIGINT, code, err, "quantize")
    kept = part.stat().st_size
    assert payload.startswith(part.read_bytes())
    assert _leftovers(out) == []
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(tmp_path),
                          timeout=WAIT_S, check=False)
    assert done.returncode == 0, done.stderr
    assert stalling_server.requests == [None, f"bytes={kept}-"]
    assert (out / "mobilenet_v1_0.25_128_int8.tflite").is_file() and not part.exists()


_WRITER = r'''
import os, sys
from pathlib import Path
from edgeq.outputs import atomic_write_all

folder, rounds = Path(sys.argv[1]), int(sys.argv[2])
tag = str(os.getpid()).encode()
for number in range(rounds):
    atomic_write_all([(folder / name, tag + b"\n" + bytes(4096 * (1 + number % 8)))
                      for name in ("m.tflite", "m.json", "m.md")])
'''

GROUP = ("m.tflite", "m.json", "m.md")


def _tags(folder: Path) -> set[bytes]:
    """Return the writer tags of the group, read under the folder's write lock."""
    with outputs.folder_lock(folder):
        return {(folder / name).read_bytes().split(b"\n", 1)[0] for name in GROUP}


def test_concurrent_writers_never_mix_a_group(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(folder), "300"],
                                env=_env(tmp_path)) for _ in range(2)]
    seen: set[bytes] = set()
    reads = 0
    try:
        while any(writer.poll() is None for writer in writers):
            if all((folder / name).exists() for name in GROUP):
                tags = _tags(folder)
                assert len(tags) == 1, tags
                seen |= tags
                reads += 1
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
            writer.wait(WAIT_S)
    assert [writer.returncode for writer in writers] == [0, 0]
    assert len(_tags(folder)) == 1 and reads > 0
    assert seen <= {str(writer.pid).encode() for writer in writers}
    assert sorted(p.name for p in folder.iterdir()) == sorted(GROUP)  # no temp or lock file


_LEAVE_TEMPS = r'''
import sys, tempfile
from edgeq.outputs import temp_prefix
folder = sys.argv[1]
tempfile.mkstemp(prefix=temp_prefix("m.tflite"), dir=folder)
tempfile.mkdtemp(prefix=temp_prefix("compile"), dir=folder)
'''


def test_next_writer_removes_the_temporaries_of_a_dead_one(tmp_path):
    """What a killed writer left (its PID is gone) is removed; a live writer's is kept."""
    folder = tmp_path / "out"
    folder.mkdir()
    subprocess.run([sys.executable, "-c", _LEAVE_TEMPS, str(folder)], env=_env(tmp_path),
                   check=True, timeout=WAIT_S)
    dead = sorted(p.name for p in folder.iterdir())
    assert len(dead) == 2 and all(".edgeq-" in name for name in dead), dead
    live = folder / f"{outputs.temp_prefix('m.json')}abc123"  # this process: running
    live.write_bytes(b"in progress")
    (folder / ".notes.edgeq-1-x.txt").write_bytes(b"not a temporary name")
    outputs.atomic_write_all([(folder / "m.tflite", b"model")])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [live.name, ".notes.edgeq-1-x.txt", "m.tflite"])
