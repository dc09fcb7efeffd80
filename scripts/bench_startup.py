"""Start-up on a Coral host: from command start to the first detection, by stage.

Runs ``edgetpu-detect`` on one image of ``../shared/data`` in fresh processes of the given
Python (``--python``: the base install's virtual environment, without TensorFlow, is what a
Coral host has) and times: the whole command (process start to exit, the user's wait), the
imports of the detection command, and the interpreter creation, which includes the
child-process load check every model a user gives goes through. Prints a table and writes
JSON::

    python scripts/bench_startup.py --python .venv-base/bin/python --json out/startup.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeq.outputs import write_json  # noqa: E402
from edgeq.paths import shared_data_dir  # noqa: E402

MODEL = "models/ssd_mobilenet_v1_0.75_depth_quant_postprocess.tflite"
IMAGE = "coral/kite_and_cold.jpg"

_STAGES = """
import json, sys, time
start = time.perf_counter()
from edgetpu.cli.detect import main
imported = time.perf_counter()
from edgetpu.runtime import make_interpreter
make_interpreter(sys.argv[1]).allocate_tensors()
loaded = time.perf_counter()
heavy = [name for name in ("tensorflow", "tf_keras", "matplotlib") if name in sys.modules]
print(json.dumps({"import_s": imported - start, "interpreter_s": loaded - imported,
                  "heavy_modules": heavy}))
"""


def time_stages(python: str, model: Path) -> dict:
    """Import and interpreter (with load check) seconds, in a fresh process."""
    result = subprocess.run([python, "-c", _STAGES, str(model)], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_command(python: str, model: Path, image: Path) -> float:
    """Seconds from process start to exit of ``edgetpu-detect`` on one image."""
    start = time.perf_counter()
    subprocess.run([python, "-m", "edgetpu", "detect", "--model", str(model), "--image",
                    str(image), "--json"], capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable,
                        help="the Python of the install to time (default: this one)")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    model, image = shared_data_dir() / MODEL, shared_data_dir() / IMAGE
    time_command(args.python, model, image)  # warm the file cache
    stages = [time_stages(args.python, model) for _ in range(args.runs)]
    commands = [time_command(args.python, model, image) for _ in range(args.runs)]
    result = {
        "python": args.python, "runs": args.runs, "model": MODEL, "image": IMAGE,
        "first_detection_s": round(statistics.median(commands), 3),
        "import_s": round(statistics.median(s["import_s"] for s in stages), 3),
        "interpreter_with_load_check_s": round(
            statistics.median(s["interpreter_s"] for s in stages), 3),
        "heavy_modules_imported": sorted({m for s in stages for m in s["heavy_modules"]}),
    }
    print(f"{'stage':<40} {'median s':>9}")
    for key in ("import_s", "interpreter_with_load_check_s", "first_detection_s"):
        print(f"{key:<40} {result[key]:>9.3f}")
    print(f"heavy modules imported: {result['heavy_modules_imported'] or 'none'}")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
