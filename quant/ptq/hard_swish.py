"""Lower HARD_SWISH into ops the Edge TPU runs: ``x * relu6(x + 3) * (1 / 6)``.

The converter fuses MobileNet v3's ``x * relu6(x + 3) / 6`` into one HARD_SWISH op, which the
Edge TPU compiler does not map: the first one sends the rest of the network to the CPU
(measured with our analyzer: 2 of 159 ops mapped in SSDLite MobileNet v3 small). In the
calibrated float model each HARD_SWISH becomes an ADD of 3 with a fused ReLU6, a MUL by
``x`` and a MUL by 1/6 (exact in float), with calibrated ranges derived from the op's:
``[0, 6]`` for the gate and six times the output range for the product (the same relative
step as the output), so the quantizer gives them int8 parameters like any other op.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tflite

from quant.tflite_edit import (
    add_tensor,
    builtin_code,
    new_operator,
    range_quantization,
    tensor_name,
)

if TYPE_CHECKING:
    from tensorflow.lite.python.schema_py_generated import ModelT


def lower_hard_swish(model: ModelT) -> ModelT:
    """Lower every HARD_SWISH of the calibrated ``model``; return ``model`` (edited in place)."""
    graph = model.subgraphs[0]
    positions = [i for i, op in enumerate(graph.operators)
                 if builtin_code(model, op) == tflite.BuiltinOperator.HARD_SWISH]
    if not positions:
        return model
    three = add_tensor(model, "hard_swish/three", [1], np.float32([3.0]).tobytes())
    sixth = add_tensor(model, "hard_swish/one_sixth", [1], np.float32([1.0 / 6.0]).tobytes())
    for position in reversed(positions):
        op = graph.operators[position]
        x, y = int(op.inputs[0]), int(op.outputs[0])
        low, high = graph.tensors[y].quantization.min[0], graph.tensors[y].quantization.max[0]
        name, shape = tensor_name(graph.tensors[y]), graph.tensors[x].shape
        gate = add_tensor(model, f"{name}/gate", shape,
                          quantization=range_quantization(0.0, 6.0))
        product = add_tensor(model, f"{name}/times_6", shape,
                             quantization=range_quantization(6.0 * low, 6.0 * high))
        graph.operators[position:position + 1] = [
            new_operator(model, tflite.BuiltinOperator.ADD, [x, three], [gate], "AddOptions",
                         fusedActivationFunction=tflite.ActivationFunctionType.RELU6),
            new_operator(model, tflite.BuiltinOperator.MUL, [x, gate], [product], "MulOptions"),
            new_operator(model, tflite.BuiltinOperator.MUL, [product, sixth], [y],
                         "MulOptions"),
        ]
    return model
