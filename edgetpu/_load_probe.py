"""Child process of :func:`edgetpu.runtime.check_loads`: load, allocate and invoke once.

``python -m edgetpu._load_probe MODEL BACKEND THREADS PRESERVE`` exits 0 when the model
loads, allocates and runs on zeros; on a Python error it prints ``stage: Type: message`` and
exits 1; a native crash ends it with the signal, which the parent reports.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Check the model named in ``argv``; return the exit status."""
    import numpy as np

    from edgetpu.runtime import get_backend, interpreter_kwargs

    path, backend_name, threads, preserve = argv
    backend = get_backend(backend_name)
    stage = "load"
    try:
        interpreter = backend.interpreter_class(**interpreter_kwargs(
            backend, Path(path), int(threads) or None, preserve == "1"))
        stage = "allocate_tensors"
        interpreter.allocate_tensors()
        stage = "invoke"
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
    except Exception as exc:
        message = " ".join(str(exc).split())[:300]
        print(f"{stage}: {type(exc).__name__}: {message}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
