"""Interpreter creation for CPU and Edge TPU, and Edge TPU device discovery.

One function, :func:`make_interpreter`, builds a TFLite interpreter for any model: plain
models run on the CPU (LiteRT with XNNPACK); models compiled by ``edgetpu_compiler`` (they
hold the custom op ``edgetpu-custom-op``) get the Edge TPU delegate. Interpreter packages
are tried in this order: ``ai-edge-litert`` (the default), ``tflite_runtime`` (when
installed; Coral users often need an older one that matches ``libedgetpu``, so it goes
first when a delegate is loaded), ``tf.lite.Interpreter`` (deprecated, last resort).

Example::

    from edgetpu.runtime import make_interpreter
    interpreter = make_interpreter("model_edgetpu.tflite", device="usb:0")
    interpreter.allocate_tensors()
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import os
import platform
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from edgeq.errors import BadInputError, MissingToolError
from edgeq.images import cpu_count
from edgeq.logs import native_stderr_hidden
from edgetpu import tflite_model
from edgetpu.tflite_model import ModelSource

EDGETPU_CUSTOM_OP = tflite_model.EDGETPU_CUSTOM_OP

#: Edge TPU runtime library per ``platform.system()``.
EDGETPU_LIBRARIES: dict[str, str] = {
    "Linux": "libedgetpu.so.1",
    "Darwin": "libedgetpu.1.dylib",
    "Windows": "edgetpu.dll",
}

#: Accepted device strings: ``:N`` (N-th device of any type), ``usb``, ``usb:N``, ``pci``,
#: ``pci:N``.
DEVICE_PATTERN = re.compile(r"^(?::\d+|(?:usb|pci)(?::\d+)?)$")

INSTALL_HINT = (
    "install the Edge TPU runtime (Debian/Ubuntu: add Coral's apt repository, then "
    "'sudo apt-get install libedgetpu1-std'; macOS/Windows: see "
    "https://coral.ai/docs/accelerator/get-started/), then plug the USB Accelerator into a "
    "USB 3 port and check that it is listed ('lsusb' shows 1a6e:089a or 18d1:9302)"
)

#: Seconds the child process of :func:`check_loads` may take to load and run a model once.
LOAD_CHECK_TIMEOUT_S = 120.0

# Interpreter packages by name, in default order: (module, attribute holding the class and
# load_delegate).
_BACKENDS: dict[str, str] = {
    "ai-edge-litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",
}

# USB ids of the Coral USB Accelerator (before / after its firmware is loaded) and the PCI id
# of the M.2 / mini-PCIe module.
_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}
_PCI_ID = ("0x1ac1", "0x089a")


_LOADED: set[tuple[Any, ...]] = set()  # models check_loads passed in this process


class EdgeTpuDevice(NamedTuple):
    """One Edge TPU found on this machine: ``type`` is ``"usb"`` or ``"pci"``."""

    type: str
    path: str


@dataclass(frozen=True)
class Backend:
    """An importable interpreter package: its name, Interpreter class and load_delegate."""

    name: str
    interpreter_class: Any
    load_delegate: Any


def validate_device(device: str) -> str:
    """Return ``device`` unchanged if it is a valid Edge TPU device string.

    Raises:
        BadInputError: the string is not one of ``:N``, ``usb``, ``usb:N``, ``pci``, ``pci:N``.
    """
    if not DEVICE_PATTERN.match(device):
        raise BadInputError(
            f"bad Edge TPU device {device!r}; use ':0' (first device of any type), 'usb', "
            "'usb:N', 'pci' or 'pci:N'"
        )
    return device


def edgetpu_library_name(system: str | None = None) -> str:
    """Return the Edge TPU runtime library file name for ``system`` (default: this one).

    Raises:
        MissingToolError: no Edge TPU runtime exists for that platform.
    """
    system = system or platform.system()
    try:
        return EDGETPU_LIBRARIES[system]
    except KeyError:
        raise MissingToolError(
            f"the Edge TPU runtime is not available on {system}; supported: "
            f"{', '.join(EDGETPU_LIBRARIES)}"
        ) from None


def available_backends() -> list[str]:
    """Return the names of the interpreter packages importable here, in default order."""
    names = []
    for name in _BACKENDS:
        try:
            _import_backend(name)
        except ImportError:
            continue
        names.append(name)
    return names


def get_backend(name: str | None = None, *, for_delegate: bool = False) -> Backend:
    """Return an interpreter package: ``name`` if given, else the first importable one.

    Args:
        name: one of ``"ai-edge-litert"``, ``"tflite_runtime"``, ``"tensorflow"``, or None.
        for_delegate: prefer ``tflite_runtime`` (built to match ``libedgetpu``) if installed.

    Raises:
        BadInputError: ``name`` is unknown.
        MissingToolError: the requested package (or every package) is missing.
    """
    if name is not None and name not in _BACKENDS:
        raise BadInputError(f"unknown interpreter {name!r}; expected one of {list(_BACKENDS)}")
    order = [name] if name else list(_BACKENDS)
    if for_delegate and not name:
        order.sort(key=lambda n: n != "tflite_runtime")
    for candidate in order:
        try:
            return _import_backend(candidate)
        except ImportError:
            continue
    raise MissingToolError(
        f"no TFLite interpreter found (tried {', '.join(order)}); run 'pip install ai-edge-litert'"
    )


def _import_backend(name: str) -> Backend:
    module_name = _BACKENDS[name]
    if name == "tensorflow":
        from edgeq._tensorflow import tf

        module = tf.lite
        return Backend(name, module.Interpreter, module.experimental.load_delegate)
    module = importlib.import_module(module_name)
    return Backend(name, module.Interpreter, module.load_delegate)


def custom_ops(model_path: ModelSource) -> list[str]:
    """Return the custom op names used by a ``.tflite`` model (e.g. ``edgetpu-custom-op``).

    Raises:
        BadInputError: the file is missing or not a TFLite flatbuffer.
    """
    return tflite_model.custom_ops(model_path)


def is_edgetpu_model(model_path: ModelSource) -> bool:
    """Return True when the model was compiled by ``edgetpu_compiler``."""
    return EDGETPU_CUSTOM_OP in custom_ops(model_path)


def load_edgetpu_delegate(device: str | None = None, backend: Backend | None = None) -> Any:
    """Load the Edge TPU delegate for ``device`` (None: the first Edge TPU found).

    Raises:
        BadInputError: the device string is malformed.
        MissingToolError: the runtime library is missing or the device is absent.
    """
    options = {"device": validate_device(device)} if device else {}
    library = edgetpu_library_name()
    backend = backend or get_backend(for_delegate=True)
    try:
        ctypes.CDLL(library)  # fails cleanly when absent (load_delegate leaves a broken object)
    except OSError as exc:
        raise MissingToolError(f"the Edge TPU runtime {library} is not installed: {INSTALL_HINT}") \
            from exc
    try:
        return backend.load_delegate(library, options)
    except (ValueError, OSError, RuntimeError) as exc:
        where = f"device {device!r}" if device else "an Edge TPU"
        raise MissingToolError(
            f"could not load the Edge TPU delegate ({library}) for {where}: {exc}; "
            f"{INSTALL_HINT}"
        ) from exc


def make_interpreter(
    model_path: ModelSource,
    *,
    num_threads: int | None = None,
    device: str | None = None,
    backend: str | None = None,
    preserve_all_tensors: bool = False,
) -> Any:
    """Create an interpreter for a ``.tflite`` model (allocated once; resizing and allocating
    again is allowed).

    Args:
        model_path: the model file, or the bytes of a model this process made.
        num_threads: CPU threads (None: all cores of this process).
        device: Edge TPU device string; the delegate is loaded when it is given or when the
            model is compiled for the Edge TPU.
        backend: interpreter package name (see :func:`get_backend`); None picks the default.
        preserve_all_tensors: keep intermediate tensors readable (no default delegates;
            slower; for per-layer comparisons).

    Returns:
        An ``Interpreter`` of the chosen package.

    The model is read by our flatbuffer reader first; a file (not a compiled one) is then
    loaded, allocated and run once in a child process (:func:`check_loads`), so a corrupt
    model is reported as bad input instead of crashing this process. Bytes skip that probe:
    they are a model this process made (the quantizer's intermediate models), not a file
    from elsewhere.

    Raises:
        BadInputError: the file is missing or invalid (the interpreter crashes or fails on it),
            or the device string is malformed.
        MissingToolError: an Edge TPU model without a loadable Edge TPU runtime or device.
    """
    path = tflite_model.source_path(model_path)
    if device is not None:
        validate_device(device)
    compiled = is_edgetpu_model(model_path)  # our reader checks the model before native code
    use_delegate = compiled or device is not None
    chosen = get_backend(backend, for_delegate=use_delegate)
    if not compiled and not isinstance(model_path, bytes):
        check_loads(path, chosen, num_threads, preserve_all_tensors)
    delegates = [load_edgetpu_delegate(device, chosen)] if use_delegate else None
    kwargs = interpreter_kwargs(chosen, model_path, num_threads, preserve_all_tensors)
    try:
        with native_stderr_hidden():  # LiteRT logs its XNNPACK delegate once, on allocation
            interpreter = chosen.interpreter_class(**kwargs, experimental_delegates=delegates)
            interpreter.allocate_tensors()
        return interpreter
    except (ValueError, RuntimeError) as exc:
        if "edgetpu-custom-op" in str(exc):
            raise MissingToolError(
                f"{path} is compiled for the Edge TPU and needs its runtime: {INSTALL_HINT}"
            ) from exc
        raise BadInputError(f"{path}: the interpreter could not load it ({exc})") from exc


def interpreter_kwargs(backend: Backend, model: ModelSource, num_threads: int | None,
                       preserve_all_tensors: bool) -> dict[str, Any]:
    """Return the ``Interpreter`` keyword arguments (without delegates) used for ``model``."""
    kwargs: dict[str, Any] = {
        # the bytes, not the path: the interpreter cannot open a file name that is not UTF-8
        "model_content": tflite_model.read_model_bytes(model),
        "num_threads": num_threads or cpu_count(),
    }
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
        resolver = getattr(backend.interpreter_class, "__module__", "")
        module = importlib.import_module(resolver) if resolver else None
        op_resolver = getattr(module, "OpResolverType", None)
        if op_resolver is not None:
            kwargs["experimental_op_resolver_type"] = (
                op_resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
    return kwargs


def check_loads(path: Path, backend: Backend, num_threads: int | None = None,
                preserve_all_tensors: bool = False,
                timeout: float = LOAD_CHECK_TIMEOUT_S) -> None:
    """Load, allocate and invoke ``path`` once in a child process, before this one does.

    A corrupt model that passes our reader can still crash the native interpreter (a
    segmentation fault in ``allocate_tensors`` or ``invoke``), which no Python code can
    catch; in a child process the crash becomes a one-line error. A success is remembered
    by the file's sha256, so each model is checked once per process.
    Compiled Edge TPU models are not checked this way (the child has no Edge TPU delegate).

    Raises:
        BadInputError: the interpreter crashed, failed or did not finish within ``timeout``.
    """
    digest = hashlib.sha256(tflite_model.read_model_bytes(path)).hexdigest()
    key = (digest, backend.name, num_threads, preserve_all_tensors)
    if key in _LOADED:
        return
    command = [sys.executable, "-m", "edgetpu._load_probe", str(path), backend.name,
               str(num_threads or 0), "1" if preserve_all_tensors else "0"]
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                env=env, check=False)
    except subprocess.TimeoutExpired:
        raise BadInputError(f"{path}: the TFLite interpreter did not load and run it within "
                            f"{timeout:.0f} s; the model is corrupt, export or copy it "
                            "again") from None
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        raise BadInputError(f"{path}: the TFLite interpreter crashed on this model ({name}); "
                            "the model is corrupt, export or copy it again")
    if result.returncode:
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {result.returncode}"
        raise BadInputError(f"{path}: the interpreter could not load it ({why})")
    _LOADED.add(key)




def list_edge_tpus() -> list[EdgeTpuDevice]:
    """Return the Edge TPUs attached here, with device strings usable by the delegate.

    The runtime library is asked first (``edgetpu_list_devices``); without it, Linux sysfs
    is scanned for the Coral USB and PCIe ids, so a device is reported even before the
    runtime is installed.
    """
    try:
        return _list_with_library()
    except OSError:
        return _list_from_sysfs()


class _DeviceStruct(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("path", ctypes.c_char_p)]


def _list_with_library() -> list[EdgeTpuDevice]:
    lib = ctypes.cdll.LoadLibrary(EDGETPU_LIBRARIES.get(platform.system(), "libedgetpu.so.1"))
    lib.edgetpu_list_devices.argtypes = [ctypes.POINTER(ctypes.c_size_t)]
    lib.edgetpu_list_devices.restype = ctypes.POINTER(_DeviceStruct)
    lib.edgetpu_free_devices.argtypes = [ctypes.POINTER(_DeviceStruct)]
    count = ctypes.c_size_t()
    devices = lib.edgetpu_list_devices(ctypes.byref(count))
    try:
        # enum edgetpu_device_type: 0 = PCI, 1 = USB.
        return [
            EdgeTpuDevice("pci" if devices[i].type == 0 else "usb", devices[i].path.decode())
            for i in range(count.value)
        ]
    finally:
        if devices:
            lib.edgetpu_free_devices(devices)


def _list_from_sysfs(root: Path = Path("/sys/bus")) -> list[EdgeTpuDevice]:
    found: list[EdgeTpuDevice] = []
    for entry in sorted((root / "usb" / "devices").glob("*")):
        ids = (_read(entry / "idVendor"), _read(entry / "idProduct"))
        if ids in _USB_IDS:
            found.append(EdgeTpuDevice("usb", entry.name))
    for entry in sorted((root / "pci" / "devices").glob("*")):
        if (_read(entry / "vendor"), _read(entry / "device")) == _PCI_ID:
            found.append(EdgeTpuDevice("pci", entry.name))
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""

