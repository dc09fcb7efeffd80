"""Turn whatever the user names as a model into a float Keras model and its preprocessing.

Accepted sources: a zoo name (``mobilenet_v2_1.0_224``) with an optional local
``--checkpoint``; a URL, ``.tgz`` / ``.tar.gz``, folder or checkpoint prefix whose name is a
zoo name; a Keras file (``.keras``, ``.h5``); a SavedModel folder. A float ``.tflite`` is
refused here (it cannot be re-quantized with full accuracy): point to the original model.
"""

from __future__ import annotations

from pathlib import Path

from edgeq.errors import BadInputError
from quant import zoo
from quant.fetch import ARCHIVE_SUFFIXES, is_url, locate_checkpoint
from quant.float_model import FloatModel
from quant.preprocess import PreprocessOptions

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_float_model(source: str, checkpoint: str | None = None,
                     preprocess: PreprocessOptions | None = None) -> FloatModel:
    """Load the float model named by ``source`` (see the module docstring).

    Args:
        source: zoo name, URL, archive, folder, checkpoint prefix, Keras file or SavedModel.
        checkpoint: a local checkpoint for a zoo name (replaces the download).
        preprocess: preprocessing options for models that do not carry it.

    Raises:
        BadInputError: the source is not usable; the message says what to pass instead.
        MissingToolError: a download is needed and the network is unreachable.
    """
    options = preprocess or PreprocessOptions()
    if zoo.is_model(source):
        spec = zoo.get_model(source)
        return _from_zoo(spec, checkpoint or spec.url, source, options)
    path = Path(source).expanduser()
    if path.suffix == ".tflite":
        raise BadInputError(
            f"{source}: a .tflite model cannot be quantized again; pass the model it was "
            "converted from (zoo name, checkpoint, .keras/.h5 file or SavedModel folder)"
        )
    if path.suffix in KERAS_SUFFIXES or (path / "saved_model.pb").is_file():
        if checkpoint:
            raise BadInputError(f"--checkpoint applies to zoo models, not to {source}")
        return _from_keras(path, source, options)
    spec = _spec_from_name(source)
    if spec is not None:
        return _from_zoo(spec, checkpoint or source, source, options)
    if not path.exists() and not is_url(source):
        close = zoo.suggest(source)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise BadInputError(f"{source}: not a zoo model name nor an existing path{hint}")
    raise BadInputError(
        f"{source}: cannot tell which architecture this checkpoint is; pass "
        "--model ZOO_NAME --checkpoint PATH (see quantize --list)"
    )


def _spec_from_name(source: str) -> zoo.ModelSpec | None:
    """Return the zoo entry a URL / archive / folder / prefix is named after, if any."""
    stem = Path(source.rstrip("/")).name
    for suffix in (*ARCHIVE_SUFFIXES, ".ckpt", ".index"):
        stem = stem.removesuffix(suffix)
    return zoo.get_model(stem) if zoo.is_model(stem) else None


def _from_zoo(spec: zoo.ModelSpec, checkpoint: str, source: str,
              options: PreprocessOptions) -> FloatModel:
    from quant.checkpoints import load_weights
    from quant.models import build_classifier

    if spec.task != "classify":
        from quant.detection.sources import load_detection_model

        return load_detection_model(spec, checkpoint, source)
    files = locate_checkpoint(checkpoint, expected_prefix=spec.checkpoint_prefix)
    model = build_classifier(spec.family, spec.input_size, spec.depth_multiplier,
                             spec.num_classes)
    load_weights(model, files.prefix)
    preprocess = (options.build(spec.input_size, spec.input_size) if options.given()
                  else spec.preprocess)
    return FloatModel(
        model=model, preprocess=preprocess, name=spec.name, task=spec.task, source=source,
        source_file=Path(checkpoint) if Path(checkpoint).exists() else files.prefix,
        spec=spec,
        bundled_tflite=files.tflite_files[0] if len(files.tflite_files) == 1 else None,
    )


def _from_keras(path: Path, source: str, options: PreprocessOptions) -> FloatModel:
    from edgeq._tensorflow import keras

    if not path.exists():
        raise BadInputError(f"{path}: no such file or folder")
    try:
        str(path).encode()
    except UnicodeEncodeError as exc:
        raise BadInputError(f"{path}: TensorFlow cannot open a file name that is not valid "
                            "UTF-8; rename the file") from exc
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        raise BadInputError(f"{path}: a folder without saved_model.pb; pass a .keras/.h5 file "
                            "or a SavedModel folder (model.export(path) or tf.saved_model.save)")
    try:
        model = keras.models.load_model(str(path), compile=False)
    except (OSError, ValueError, ImportError, TypeError, KeyError) as exc:
        if not path.is_dir():
            raise BadInputError(
                f"{path}: not a readable Keras model ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); save it again with "
                "model.save('model.keras')"
            ) from exc
        model = _wrap_saved_model(_load_saved_model(path), path)
    model = _with_batch_one(model, path)
    _, height, width, _ = model.inputs[0].shape
    if not options.given():
        raise BadInputError(
            f"{path}: cannot infer its preprocessing; pass --input-range=LOW,HIGH "
            "(e.g. -1,1 or 0,1), --mean/--std, or --preprocess FILE.json"
        )
    return FloatModel(
        model=model, preprocess=options.build(height, width), name=path.stem or path.name,
        task="classify", source=source, source_file=path,
    )


def _load_saved_model(path: Path):
    """Return ``tf.saved_model.load(path)``.

    Raises:
        BadInputError: the folder is not a readable SavedModel.
    """
    from edgeq._tensorflow import tf

    try:
        return tf.saved_model.load(str(path))
    except (OSError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"{path}: not a readable SavedModel ({message}); export it "
                            "again") from exc


def _wrap_saved_model(loaded, path: Path):
    """Wrap a non-Keras SavedModel's serving signature (TF Hub style) in a Keras model."""
    from edgeq._tensorflow import keras, tf

    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise BadInputError(f"{path}: SavedModel has no 'serving_default' signature")
    (input_name, spec), = signature.structured_input_signature[1].items()
    shape = list(spec.shape)
    if len(shape) != 4 or None in shape[1:]:
        raise BadInputError(
            f"{path}: input {input_name} has shape {shape}; a static NHWC image shape is needed"
        )
    output_name = sorted(signature.structured_outputs)[0]

    class SavedModelLayer(keras.layers.Layer):
        def call(self, inputs):
            return signature(**{input_name: tf.cast(inputs, spec.dtype)})[output_name]

    inputs = keras.Input(shape[1:], batch_size=1, name="input")
    layer = SavedModelLayer(name="saved_model")
    layer._saved_model = loaded  # keep the variables alive
    return keras.Model(inputs, layer(inputs), name=path.name)


def _with_batch_one(model, path: Path):
    """Return ``model`` with a static batch-1 input (rebuilt around its layers if needed)."""
    from edgeq._tensorflow import keras

    if len(model.inputs) != 1:
        raise BadInputError(f"{path}: models with {len(model.inputs)} inputs are not supported")
    shape = model.inputs[0].shape
    if len(shape) != 4 or None in tuple(shape[1:]):
        raise BadInputError(
            f"{path}: input shape {tuple(shape)} is not a static NHWC image; "
            "re-export the model with a fixed input size"
        )
    if shape[0] == 1:
        return model
    inputs = keras.Input(tuple(shape[1:]), batch_size=1, name="input")
    try:  # same layers, flat (tfmot cannot wrap a nested model)
        copy = keras.models.clone_model(model, input_tensors=inputs)
        copy.set_weights(model.get_weights())
        return copy
    except (ValueError, TypeError):  # subclassed or wrapped models: nest them
        return keras.Model(inputs, model(inputs), name=model.name)


def max_abs_diff_with_tflite(float_model: FloatModel, tflite_path: Path, samples: int = 3,
                             seed: int = 0) -> float:
    """Run the Keras model and a float ``.tflite`` on random inputs; return the largest gap.

    Used to check a loaded checkpoint against the float ``.tflite`` its archive bundles.
    """
    import numpy as np

    from edgetpu.runtime import make_interpreter

    interpreter = make_interpreter(tflite_path)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    expected = tuple(float_model.model.inputs[0].shape[1:])
    if tuple(inp["shape"][1:]) != expected:
        raise BadInputError(
            f"{tflite_path}: input shape {tuple(inp['shape'])} differs from the model's {expected}"
        )
    low, high = float_model.preprocess.input_range
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(samples):
        x = rng.uniform(low, high, (1, *expected)).astype(np.float32)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        reference = interpreter.get_tensor(out["index"])
        worst = max(worst, float(np.abs(float_model.model(x).numpy() - reference).max()))
    return worst
