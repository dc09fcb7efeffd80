"""Wrap a float Keras model with tfmot's default 8-bit scheme, ready for fine-tuning.

tfmot's default scheme keeps each BatchNormalization after its convolution and puts the
fake-quant after Conv + BatchNorm (+ ReLU), so the converter folds BatchNorm into the
convolution at export; during fine-tuning BatchNorm uses its moving statistics (frozen), as
recommended for short quantization-aware fine-tuning with small batches. Layers the scheme
cannot wrap (a hard-swish ``Activation`` with a Python function, raw TensorFlow ops that
Keras records as ``TFOpLambda``, custom layers) are refused up front with one clear message.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeq import _tensorflow  # noqa: F401  (sets up TensorFlow before tfmot imports it)
from edgeq.errors import BadInputError, first_of


def _registry():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    return default_8bit_quantize_registry.Default8BitQuantizeRegistry()


def _activation_name(layer) -> str:
    function = getattr(layer, "activation", None)
    return getattr(function, "__name__", str(function))


def unsupported_layers(model) -> list[str]:
    """Return ``"name (Class)"`` for each layer tfmot's default 8-bit scheme cannot wrap."""
    from edgeq._tensorflow import keras

    registry = _registry()
    problems = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.InputLayer, keras.layers.BatchNormalization)):
            continue  # BatchNorm is handled by the scheme's Conv + BatchNorm transforms
        kind = type(layer).__name__
        if not registry.supports(layer):
            what = getattr(layer, "symbol", None) or kind
            problems.append(f"{layer.name} ({kind} {what})" if what != kind
                            else f"{layer.name} ({kind})")
        elif isinstance(layer, keras.layers.Activation):
            name = _activation_name(layer)
            try:
                keras.activations.get(name)
            except ValueError:
                problems.append(f"{layer.name} (Activation {name})")
    return problems


def check_quantizable(model, name: str) -> None:
    """Refuse a model with layers tfmot cannot wrap.

    Raises:
        BadInputError: naming the layers, why, and what to do instead.
    """
    problems = unsupported_layers(model)
    if problems:
        raise BadInputError(
            f"{name}: quantization-aware training cannot wrap {first_of(problems, 4)}: "
            "tfmot's 8-bit scheme "
            "supports standard Keras layers (Conv2D, DepthwiseConv2D, Dense, "
            "BatchNormalization, ReLU/ReLU6, Add, pooling, Reshape...), not custom "
            "activations such as hard-swish nor raw TensorFlow ops; use --method ptq, or a "
            "model built from supported layers (MobileNet v1/v2, MobileNet EdgeTPU)"
        )


def with_batch(model, batch_size: int | None):
    """Return a copy of functional ``model`` whose input has batch ``batch_size``, same weights."""
    from edgeq._tensorflow import keras

    inputs = keras.Input(tuple(model.inputs[0].shape[1:]), batch_size=batch_size,
                         name=model.inputs[0].name.split(":")[0])
    clone = keras.models.clone_model(model, input_tensors=inputs)
    clone.set_weights(model.get_weights())
    return clone


def _depthwise_config_classes():
    """Return (weights quantizer, quantize config) classes for per-channel depthwise weights.

    tfmot's default scheme quantizes a depthwise kernel [kh, kw, C, M] "per axis" over its
    last axis, i.e. per tensor when M = 1, while the converter writes per-channel (C x M)
    weights after folding BatchNorm. These classes quantize per output channel in training
    too, so the fine-tuned model matches the exported one.
    """
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    from edgeq._tensorflow import keras, tf

    class DepthwisePerChannelQuantizer(tfmot.quantization.keras.quantizers.LastValueQuantizer):
        """Symmetric narrow-range 8-bit weights, one range per depthwise output channel."""

        def __init__(self, **_):
            super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

        def build(self, tensor_shape, name, layer):
            channels = int(tensor_shape[-2]) * int(tensor_shape[-1])
            return {key: layer.add_weight(f"{name}_{key.split('_')[0]}", shape=(channels,),
                                          initializer=keras.initializers.Constant(value),
                                          trainable=False)
                    for key, value in (("min_var", -6.0), ("max_var", 6.0))}

        def __call__(self, inputs, training, weights, **kwargs):
            shape = tf.shape(inputs)
            flat = tf.reshape(inputs, tf.concat([shape[:2], [1, -1]], 0))
            quantized = quant_ops.LastValueQuantize(
                flat, weights["min_var"], weights["max_var"], is_training=training,
                num_bits=8, per_channel=True, symmetric=True, narrow_range=True)
            return tf.reshape(quantized, shape)

        def get_config(self):
            return {}

    class DepthwiseQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """Per-channel depthwise weights; output left to the BatchNorm / ReLU after it."""

        def get_weights_and_quantizers(self, layer):
            return [(layer.depthwise_kernel, DepthwisePerChannelQuantizer())]

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            layer.depthwise_kernel = quantize_weights[0]

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    return DepthwisePerChannelQuantizer, DepthwiseQuantizeConfig


def _consumers(model) -> dict[str, list]:
    consumers: dict[str, list] = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            inbound = node.inbound_layers
            for parent in inbound if isinstance(inbound, list) else [inbound]:
                consumers.setdefault(parent.name, []).append(layer)
    return consumers


def _annotate_depthwise(model):
    """Annotate each DepthwiseConv2D + BatchNorm pair with the per-channel depthwise config.

    The BatchNorm gets what tfmot's Conv + BatchNorm transforms would give it: no
    quantization before a ReLU (the ReLU's output is quantized), its output otherwise.
    """
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as configs,
    )

    from edgeq._tensorflow import keras

    _, depthwise_config = _depthwise_config_classes()
    consumers = _consumers(model)
    plans = {}
    for layer in model.layers:
        after = consumers.get(layer.name, [])
        if not (isinstance(layer, keras.layers.DepthwiseConv2D) and len(after) == 1
                and isinstance(after[0], keras.layers.BatchNormalization)
                and _activation_name(layer) == "linear"):
            continue
        batch_norm = after[0]
        following = consumers.get(batch_norm.name, [])
        relu_next = len(following) == 1 and isinstance(following[0], keras.layers.ReLU)
        plans[layer.name] = depthwise_config()
        plans[batch_norm.name] = (configs.NoOpQuantizeConfig() if relu_next
                                  else configs.Default8BitOutputQuantizeConfig())
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    annotated = keras.models.clone_model(
        model, clone_function=lambda layer: annotate(
            layer.__class__.from_config(layer.get_config()), plans[layer.name])
        if layer.name in plans else layer.__class__.from_config(layer.get_config()))
    annotated.set_weights(model.get_weights())
    return tfmot.quantization.keras.quantize_annotate_model(annotated)


def quantize_for_training(float_model, name: str):
    """Return ``float_model`` (batch None) wrapped with tfmot's default 8-bit scheme.

    Depthwise weights are quantized per channel (see :func:`_depthwise_config_classes`);
    BatchNorm layers are frozen (moving statistics, no gamma / beta updates).

    Raises:
        BadInputError: a layer cannot be wrapped.
    """
    import tensorflow_model_optimization as tfmot

    from edgeq._tensorflow import keras

    check_quantizable(float_model, name)
    quantizer, depthwise_config = _depthwise_config_classes()
    scope = {"DepthwisePerChannelQuantizer": quantizer,
             "DepthwiseQuantizeConfig": depthwise_config}
    try:
        with tfmot.quantization.keras.quantize_scope(scope):
            model = tfmot.quantization.keras.quantize_apply(_annotate_depthwise(float_model))
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{name}: tfmot cannot wrap this model for quantization-aware "
                            f"training ({first}); use --method ptq") from exc
    for layer in model.layers:
        if isinstance(getattr(layer, "layer", None), keras.layers.BatchNormalization):
            layer.trainable = False  # also makes BatchNorm use its moving statistics
    return model


def local_copy(qat_model, float_model, name: str):
    """Return a copy of ``qat_model`` built outside any distribution strategy, same weights.

    The converter cannot read variables distributed over machines (reading them is a
    collective op), so a model trained on several machines is exported from this copy.
    """
    copy = quantize_for_training(with_batch(float_model, None), name)
    copy.set_weights(qat_model.get_weights())
    return copy


def trainable_variables(qat_model) -> list:
    """Return the variables to fine-tune: all trainable ones except frozen layers' (BatchNorm).

    tfmot's wrapper keeps listing a frozen layer's weights among the model's trainable
    variables, so they are filtered here.
    """
    frozen = {id(v) for layer in qat_model.layers if not layer.trainable for v in layer.weights}
    return [v for v in qat_model.trainable_variables if id(v) not in frozen]


def _range_variables(qat_model) -> dict[str, tuple[Any, Any]]:
    """Return {float layer name: (min variable, max variable)} of the activation quantizers."""
    ranges = {}
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", None)
        variables = {v.name.split("/")[-1].split(":")[0]: v for v in layer.non_trainable_weights}
        for key in ("output", "post_activation"):
            if inner is not None and f"{key}_min" in variables:
                ranges[inner.name] = (variables[f"{key}_min"], variables[f"{key}_max"])
        if type(layer).__name__ == "QuantizeLayer":
            found = [v for k, v in variables.items() if k.endswith("_min")], \
                [v for k, v in variables.items() if k.endswith("_max")]
            if found[0] and found[1]:
                ranges[""] = (found[0][0], found[1][0])
    return ranges


def calibrate_ranges(qat_model, float_model, batches,
                     input_range: tuple[float, float] | None = None) -> int:
    """Set the weight ranges and the activation ranges of ``qat_model`` from data.

    tfmot starts every activation range at [-6, 6] and moves it by 0.1% per training step,
    so a short fine-tuning would train with ranges far from the data. Here each range starts
    at the min / max of the same layer's output in ``float_model`` over ``batches`` (the
    ``""`` entry is the model input), as post-training calibration would set it.

    Call it in the scope of the strategy the models were built in (if any).

    Args:
        qat_model: the tfmot-wrapped model.
        float_model: the float model it wraps (same layer names).
        batches: an iterable of float input batches.
        input_range: the model input's range instead of the batches' (the values of pixels
            0 and 255: the uint8 input then holds the pixels, and training batches never
            widen it, so replicas under a distribution strategy keep the same range).

    Returns:
        The number of ranges set.
    """
    from edgeq._tensorflow import keras, tf

    batches = list(batches)
    def fill_weight_ranges(x):
        return qat_model(x, training=True)

    # One training-mode call sets the weight ranges (tfmot fills them only when training),
    # in a replica of the distribution strategy whose scope the caller is in, if any.
    strategy = tf.distribute.get_strategy()
    tf.function(lambda x: strategy.run(fill_weight_ranges, (x,)))(tf.constant(batches[0]))
    targets = _range_variables(qat_model)
    names = [n for n in targets if n]
    probe = keras.Model(float_model.inputs,
                        [float_model.get_layer(n).output for n in names])
    run = tf.function(lambda x: probe(x, training=False))
    low = np.full(len(names) + 1, np.inf)
    high = np.full(len(names) + 1, -np.inf)
    for batch in batches:
        outputs = run(tf.constant(batch))
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        values = [batch, *[o.numpy() for o in outputs]]
        low = np.minimum(low, [v.min() for v in values])
        high = np.maximum(high, [v.max() for v in values])
    if input_range is not None:
        low[0], high[0] = input_range
    for i, key in enumerate(["", *names]):
        if key in targets:
            minimum, maximum = targets[key]
            minimum.assign(min(float(low[i]), 0.0))
            maximum.assign(max(float(high[i]), 0.0))
    return len(targets)
