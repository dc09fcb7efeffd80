"""edgetpu_compiler releases and what each can map: Edge TPU runtime versions, op versions.

The compiler names the Edge TPU runtime a compiled model needs (``-m`` /
``--min_runtime_version``, by default the newest runtime the compiler knows); an op that the
target runtime lacks stays on the CPU ("Operation not supported", as compiler 14.1 reports
TRANSPOSE: google-coral/edgetpu issue 242, "TRANSPOSE 42 Operation not supported").

Sources: google-coral/edgetpu ``CHANGES.md`` (releases 1.0 to 14.1 and the ops runtime 13
added), coral.ai "Compiler and runtime versions" (16.0 -> runtime 14, confirmed by the
"Package requires runtime version (14), which is newer than this runtime version (13)" reports
and the maintainers' ``-m 13`` fix, issues 435 and 464), and the compiler logs in
``../shared/data/coral_wild`` (compilers 2.0, 15.0, 16.0).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeq.errors import BadInputError


@dataclass(frozen=True)
class CompilerRelease:
    """One ``edgetpu_compiler`` release: its version and the newest runtime it compiles for."""

    version: str
    build: str
    released: str
    runtime: int


#: Releases, oldest first ("seen": logs of 2.0.291256449, 15.0.340273435, 16.0.384591198).
RELEASES: tuple[CompilerRelease, ...] = (
    CompilerRelease("1.0", "1.0", "2019-05", 10),
    CompilerRelease("2.0", "2.0.291256449", "2020-01", 13),  # 2.0.267685300 (2019): runtime 12
    CompilerRelease("2.1", "2.1.302470888", "2020-03", 13),
    CompilerRelease("14.1", "14.1.317412892", "2020-07", 13),
    CompilerRelease("15.0", "15.0.340273435", "2020-11", 13),
    CompilerRelease("16.0", "16.0.384591198", "2021-07", 14),
)
CURRENT = RELEASES[-1]

#: Lowest Edge TPU runtime version that runs each op (Coral's supported-operations table;
#: ops not listed run on every runtime). Runtime 13 came with compiler 2.0.291256449, which
#: "Added support for ops: ExpandDims, Pack, Quantize, Sum, and TransposeConv" (CHANGES.md);
#: runtime 14 came with compiler 16.0 ("Compiler version 16 supports 'Transpose' operations",
#: a maintainer in google-coral/edgetpu issue 193; compiler 14.1 reported TRANSPOSE as not
#: supported, issue 242). The other runtime-14 rows (LSTM, ReduceMax / ReduceMin, Rsqrt,
#: SquaredDifference) and PReLU at 13 follow Coral's table as remembered, not a log: inferred.
OP_MIN_RUNTIME: dict[str, int] = {
    "EXPAND_DIMS": 13, "PACK": 13, "QUANTIZE": 13, "SUM": 13, "TRANSPOSE_CONV": 13,
    "PRELU": 13, "TRANSPOSE": 14, "LSTM": 14, "UNIDIRECTIONAL_SEQUENCE_LSTM": 14,
    "REDUCE_MAX": 14, "REDUCE_MIN": 14, "RSQRT": 14, "SQUARED_DIFFERENCE": 14,
}
#: Ops whose runtime row above comes from a release note or a real compile ("seen").
OP_MIN_RUNTIME_SEEN = frozenset({"EXPAND_DIMS", "PACK", "QUANTIZE", "SUM", "TRANSPOSE_CONV",
                                 "TRANSPOSE"})

#: Signed int8 tensors need runtime 12 or later: compiler 2.0 with runtime 12 "Added support
#: for models built with full integer post-training quantization" (CHANGES.md), and a TF 2.3
#: int8 model compiled with -m 10 or -m 11 maps nothing ("CONV_2D 70 Operation is working on
#: an unsupported data type", google-coral/edgetpu issue 222).
INT8_MIN_RUNTIME = 12
#: The oldest runtime the compiler accepts for -m.
OLDEST_RUNTIME = 10


def find_release(version: str | None) -> CompilerRelease:
    """Return the release named by ``version`` ("16", "16.0", "16.0.384591198", "2.1", ...).

    Raises:
        BadInputError: no known release has that version.
    """
    if version is None:
        return CURRENT
    text = str(version).strip()
    for release in RELEASES:
        if text in (release.version, release.build, release.version.split(".")[0]) or (
                text.startswith(release.version + ".")):
            return release
    known = ", ".join(r.version for r in RELEASES)
    raise BadInputError(f"unknown edgetpu_compiler version {text!r}; use one of {known} "
                        "(edgetpu_compiler --version prints it)")


def target_runtime(release: CompilerRelease, min_runtime_version: int | None) -> int:
    """The runtime a compilation targets: ``-m`` when given, else the release's newest.

    Raises:
        BadInputError: ``-m`` is older than runtime 10 or newer than the release knows.
    """
    if min_runtime_version is None:
        return release.runtime
    if not OLDEST_RUNTIME <= min_runtime_version <= release.runtime:
        raise BadInputError(f"-m/--min-runtime-version {min_runtime_version}: compiler "
                            f"{release.version} compiles for Edge TPU runtime {OLDEST_RUNTIME} "
                            f"to {release.runtime}")
    return min_runtime_version


#: Highest version of each builtin op that the TFLite parser inside edgetpu_compiler
#: 16.0.384591198 knows; a higher version, or a builtin op missing here, makes the whole
#: compilation fail ("Didn't find op for builtin opcode 'CONV_2D' version '6'", "Model could
#: not be parsed"). The table holds, for every op, the highest version that TensorFlow 2.5.0
#: reads: TFLite's op-version -> runtime-version map
#: (tensorflow/lite/tools/versioning/runtime_version.cc), entries up to runtime "2.5.0".
#: Why TF 2.5: every public report of compiler 16.0 rejects a version added in TF 2.7 or later
#: (google-coral/edgetpu issues 631: CONV_2D 6 = TF 2.9; 879: QUANTIZE 3 = TF 2.7; 845:
#: TRANSPOSE_CONV 4; libedgetpu 71: EXP 2), compiler 15.0 already rejected TF 2.5 additions
#: (issues 384: RSQRT 2, 340: REVERSE_V2 3), and Coral's compiled pairs in the shared data
#: use FULLY_CONNECTED 4, SOFTMAX 2, CONV_2D 3, DEPTHWISE_CONV_2D 3, ADD 2, MEAN 2,
#: QUANTIZE 1, RESHAPE 1. Versions added in TF 2.6 (ADD 4, MUL 5, PAD 4, PADV2 4,
#: STRIDED_SLICE 6, ABS 4, REDUCE_PROD 2) are left out: no report settles them, and they
#: are int16 / int64 / string variants that an 8-bit model never uses. TF 2.21's full-integer
#: converter writes CONV_2D 3, DEPTHWISE_CONV_2D 3, FULLY_CONNECTED 4 (per-channel or not),
#: ADD 2, MUL 2, MEAN 2, PAD 2, CONCATENATION 2, pools 2, LOGISTIC 2, SOFTMAX 2,
#: RESIZE_BILINEAR 3, TRANSPOSE_CONV 2, QUANTIZE 1 (checked here), all within the table.
COMPILER_MAX_OP_VERSIONS: dict[str, int] = {
    "ABS": 3, "ADD": 3, "ADD_N": 1, "ARG_MAX": 2, "ARG_MIN": 2, "AVERAGE_POOL_2D": 3,
    "BATCH_MATMUL": 4, "BATCH_TO_SPACE_ND": 3, "BIDIRECTIONAL_SEQUENCE_LSTM": 3,
    "BIDIRECTIONAL_SEQUENCE_RNN": 3, "BROADCAST_TO": 3, "CALL_ONCE": 1, "CAST": 1, "CEIL": 1,
    "COMPLEX_ABS": 1, "CONCATENATION": 3, "CONV_2D": 5, "CONV_3D": 1, "COS": 1, "CUMSUM": 1,
    "DENSIFY": 1, "DEPTH_TO_SPACE": 2, "DEPTHWISE_CONV_2D": 6, "DEQUANTIZE": 4, "DIV": 2,
    "ELU": 1, "EMBEDDING_LOOKUP": 3, "EMBEDDING_LOOKUP_SPARSE": 1, "EQUAL": 3, "EXP": 1,
    "EXPAND_DIMS": 1, "FAKE_QUANT": 2, "FILL": 3, "FLOOR": 1, "FLOOR_DIV": 2, "FLOOR_MOD": 1,
    "FULLY_CONNECTED": 9, "GATHER": 5, "GATHER_ND": 3, "GREATER": 2, "GREATER_EQUAL": 2,
    "HARD_SWISH": 1, "HASHTABLE": 1, "HASHTABLE_FIND": 1, "HASHTABLE_IMPORT": 1,
    "HASHTABLE_LOOKUP": 1, "HASHTABLE_SIZE": 1, "IF": 1, "IMAG": 1, "L2_NORMALIZATION": 2,
    "L2_POOL_2D": 1, "LEAKY_RELU": 2, "LESS": 2, "LESS_EQUAL": 2,
    "LOCAL_RESPONSE_NORMALIZATION": 1, "LOG": 1, "LOG_SOFTMAX": 2, "LOGICAL_AND": 1,
    "LOGICAL_NOT": 1, "LOGICAL_OR": 1, "LOGISTIC": 3, "LSH_PROJECTION": 1, "LSTM": 4,
    "MATRIX_DIAG": 1, "MATRIX_SET_DIAG": 1, "MAX_POOL_2D": 3, "MAXIMUM": 4, "MEAN": 3,
    "MINIMUM": 4, "MIRROR_PAD": 2, "MUL": 4, "NEG": 1, "NON_MAX_SUPPRESSION_V4": 1,
    "NON_MAX_SUPPRESSION_V5": 1, "NOT_EQUAL": 3, "ONE_HOT": 1, "PACK": 3, "PAD": 3, "PADV2": 3,
    "POW": 1, "PRELU": 1, "QUANTIZE": 2, "RANGE": 1, "RANK": 1, "REAL": 1, "REDUCE_ANY": 1,
    "REDUCE_MAX": 3, "REDUCE_MIN": 3, "REDUCE_PROD": 1, "RELU": 3, "RELU6": 3,
    "RELU_N1_TO_1": 1, "RESHAPE": 1, "RESIZE_BILINEAR": 4, "RESIZE_NEAREST_NEIGHBOR": 4,
    "REVERSE_SEQUENCE": 1, "REVERSE_V2": 3, "RFFT2D": 1, "RNN": 3, "ROUND": 1, "RSQRT": 2,
    "SCATTER_ND": 1, "SEGMENT_SUM": 1, "SELECT": 2, "SELECT_V2": 1, "SHAPE": 1, "SIN": 1,
    "SKIP_GRAM": 1, "SLICE": 5, "SOFTMAX": 3, "SPACE_TO_BATCH_ND": 3, "SPACE_TO_DEPTH": 2,
    "SPARSE_TO_DENSE": 3, "SPLIT": 4, "SPLIT_V": 2, "SQRT": 1, "SQUARE": 1,
    "SQUARED_DIFFERENCE": 2, "SQUEEZE": 2, "STRIDED_SLICE": 5, "SUB": 5, "SUM": 2, "SVDF": 4,
    "TANH": 3, "TILE": 2, "TOPK_V2": 2, "TRANSPOSE": 5, "TRANSPOSE_CONV": 3,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 3, "UNIDIRECTIONAL_SEQUENCE_RNN": 3, "UNIQUE": 1,
    "UNPACK": 4, "WHERE": 1, "WHILE": 1, "ZEROS_LIKE": 1,
}

