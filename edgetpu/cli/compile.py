"""compile-edgetpu: compile a .tflite for the Edge TPU with edgetpu_compiler, and explain it.

Examples::

    compile-edgetpu out/mobilenet_v2_1.0_224_int8.tflite            # -> out/*_edgetpu.tflite
    compile-edgetpu model.tflite --compiler /opt/bin/edgetpu_compiler -m 13
    compile-edgetpu model.tflite --docker                            # any OS, via Docker
    compile-edgetpu model.tflite -n 2 --json                         # 2 pipeline segments

The offline analyzer (edgetpu-check) runs first and its prediction is printed, marked as a
prediction. Then the compiler runs (``--compiler PATH``, ``$EDGETPU_COMPILER``, ``PATH``, or
``--docker`` with the image from ``scripts/Dockerfile.edgetpu-compiler``) with every flag
given here (``-s`` is always passed so the operator table is captured). Its stdout and log are
parsed into data (``--json``), compared with the prediction, and known failures are mapped to
actions. Outputs go to ``--out`` (default ``./out``): ``NAME_edgetpu.tflite``,
``NAME_edgetpu.log`` and ``NAME_edgetpu.json``: the parsed report or, when the sidecar that
quantize wrote (``NAME.json``) lies beside the model, that sidecar carried forward with the
report in a ``compile`` section (compiler version, operations mapped), so that
``validate-quant --int8 NAME_edgetpu.tflite`` finds the float reference too.

Exit codes: 0 compiled; 1 the compiler failed on this model (the actions are printed);
2 bad input; 3 no compiler (install instructions and the prediction are printed; nothing
is written).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgeq.errors import EXIT_CHECK_FAILED, BadInputError, MissingToolError, cli_entry
from edgeq.outputs import check_out_dir
from edgeq.paths import DEFAULT_OUT
from edgeq.sidecar import find_sidecar
from edgetpu import compiler
from edgetpu.cli.check import add_prediction_options, split_names

PROG = "compile-edgetpu"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``compile-edgetpu``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", type=Path, help="the quantized .tflite to compile")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (-o of the compiler; default ./out)")
    parser.add_argument("--compiler", help="path of edgetpu_compiler (default: "
                        "$EDGETPU_COMPILER, then PATH)")
    parser.add_argument("--docker", action="store_true",
                        help="run the compiler in Docker (image --docker-image)")
    parser.add_argument("--docker-image", default="edgetpu-compiler",
                        help="Docker image with edgetpu_compiler (default edgetpu-compiler)")
    parser.add_argument("-n", "--num-segments", type=int,
                        help="split into N segments for pipelining")
    add_prediction_options(parser)
    parser.add_argument("-a", "--enable-multiple-subgraphs", action="store_true",
                        help="allow several Edge TPU subgraphs (experimental)")
    parser.add_argument("-d", "--search-delegate", action="store_true",
                        help="search for the largest part that compiles")
    parser.add_argument("-k", "--delegate-search-step", type=int,
                        help="step (ops) of the -d search")
    parser.add_argument("-t", "--timeout-sec", type=int, help="compiler timeout in seconds")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    """Run ``compile-edgetpu``; see the module docstring."""
    args = build_parser().parse_args(argv)
    from edgetpu.analyze import analyze_model, compiler_table, format_report

    for name in ("num_segments", "delegate_search_step", "timeout_sec", "min_runtime_version"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BadInputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    check_out_dir(args.out)
    prediction = analyze_model(args.model, args.enable_multiple_subgraphs,
                               compiler_version=args.compiler_version,
                               min_runtime_version=args.min_runtime_version,
                               intermediate_tensors=split_names(args.intermediate_tensors))
    if prediction.compiled:
        raise BadInputError(f"{args.model} is already compiled for the Edge TPU; pass the "
                            "source .tflite")
    _check_compilable(args.model)
    sidecar = find_sidecar(args.model)
    if not args.json:
        print("PREDICTION (offline analyzer, not the compiler):")
        print(format_report(prediction))
        print()
    if args.docker:
        command = compiler.docker_command(args.docker_image)
    else:
        command = compiler.find_compiler(args.compiler)
    if command is None:
        if args.json:
            print(json.dumps({"compiled": False, "prediction": prediction.to_json()}, indent=2))
        print(compiler.INSTALL_INSTRUCTIONS, file=sys.stderr)
        raise MissingToolError("edgetpu_compiler not found; nothing was compiled (the table "
                               "above is only a prediction)")
    options = compiler.CompilerOptions(
        min_runtime_version=args.min_runtime_version,
        num_segments=args.num_segments,
        intermediate_tensors=split_names(args.intermediate_tensors),
        enable_multiple_subgraphs=args.enable_multiple_subgraphs,
        search_delegate=args.search_delegate,
        delegate_search_step=args.delegate_search_step,
        timeout_sec=args.timeout_sec,
    )
    predicted = compiler.cpu_ops_from_table(
        [compiler.OperatorRow(name, count, status)
         for name, count, status in compiler_table(prediction.ops)])
    report_path = args.out / f"{args.model.stem}_edgetpu.json"

    def report_file(result: compiler.CompileResult) -> list[tuple[Path, bytes]]:
        """The parsed report (in the model's sidecar when it has one), written together with
        the models when they compiled."""
        if not result.success:
            return []
        report = _report(args.model, result, prediction, predicted)
        data = report
        if sidecar is not None:
            data = {**sidecar, "compile": _compile_section(result, report)}
        return [(report_path, (json.dumps(data, indent=2, default=str) + "\n").encode())]

    result = compiler.run_compiler(command, args.model, options, args.out,
                                   docker_image=args.docker_image if args.docker else None,
                                   sidecars=report_file)
    report = _report(args.model, result, prediction, predicted)
    differences = report["prediction_differences"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(result, differences)
        if result.success:
            print(f"wrote {report_path} ("
                  f"{'parsed report' if sidecar is None else 'sidecar with the parsed report'})")
    return 0 if result.success else EXIT_CHECK_FAILED


def _report(model: Path, result: compiler.CompileResult, prediction: Any,
            predicted: Counter[str]) -> dict[str, Any]:
    """Return the parsed report of one compilation, with its differences from the prediction."""
    actual = compiler.cpu_ops_from_table(result.operators)
    differences = compiler.compare_with_prediction(predicted, actual) if result.success else []
    return {
        "model": str(model),
        "compiled": result.success,
        "command": result.command,
        "returncode": result.returncode,
        "compiler": asdict(result.stdout),
        "logs": {name: asdict(log) for name, log in result.logs.items()},
        "outputs": [str(p) for p in result.outputs],
        "diagnoses": [asdict(d) for d in result.diagnoses],
        "prediction": prediction.to_json()["summary"],
        "prediction_differences": differences,
    }


def _compile_section(result: compiler.CompileResult, report: dict[str, Any]) -> dict[str, Any]:
    """Return the sidecar's ``compile`` section: compiler version, operations mapped, report."""
    mapped = [stats.operations_mapped for stats in result.stdout.models]
    return {"compiler_version": result.stdout.version,
            "mapped_ops": None if None in mapped else sum(mapped), **report}


def _check_compilable(path: Path) -> None:
    """Refuse what edgetpu_compiler always rejects: float models, dynamic input shapes.

    A -1 batch of size 1 in the shape signature is not dynamic for the compiler (it compiles
    such models), unknown height, width or a batch other than 1 are.

    Raises:
        BadInputError: the model holds no quantized tensor, or an input has a dynamic shape.
    """
    from edgetpu.analyze import is_dynamic_for_compiler
    from edgetpu.tflite_model import read_model

    model = read_model(path)
    if not any(tensor.quantized for tensor in model.tensors):
        raise BadInputError(f"{path}: a float model (no quantized tensor); the Edge TPU runs "
                            "full-integer models only: quantize it first (quantize --model ...)")
    for index in model.inputs:
        tensor = model.tensors[index]
        if is_dynamic_for_compiler(tensor):
            raise BadInputError(
                f"{path}: input {tensor.name!r} has a dynamic shape {list(tensor.signature)}; "
                "convert the model again with a static input shape (batch 1)"
            )


def _print_report(result: Any, differences: list[str]) -> None:
    out = result.stdout
    print(f"COMPILER ({out.version or 'unknown version'}): "
          f"{'compiled' if result.success else 'FAILED'}")
    for stats in out.models:
        print(f"  {Path(stats.output_model).name}: {stats.operations} ops, "
              f"{stats.operations_on_cpu or 0} on the CPU, {stats.subgraphs} Edge TPU "
              f"subgraph(s); parameters {_mib(stats.on_chip_bytes)} cached on chip, "
              f"{_mib(stats.off_chip_bytes)} streamed")
    for error in out.errors:
        print(f"  {error}")
    for diagnosis in result.diagnoses:
        print(f"  problem: {diagnosis.problem}\n  action: {diagnosis.action}")
    if result.success:
        if differences:
            print("Prediction and compiler differ:")
            print("\n".join(f"  {line}" for line in differences))
        else:
            print("The compiler agrees with the prediction.")
        for path in result.outputs:
            print(f"wrote {path} (and its .log)")
    elif not result.diagnoses:
        print("  the compiler's output (stdout, stderr) follows:")
        print(result.raw_stdout + result.raw_stderr)


def _mib(size: int | None) -> str:
    return "?" if size is None else f"{size / 2**20:.2f} MiB"


if __name__ == "__main__":
    sys.exit(main())
