"""The one place that imports TensorFlow.

``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is first imported so that
``tf.keras`` is tf-keras (Keras 2): tensorflow-model-optimization and the int8 TFLite
QAT path only work with it. Every module that needs TensorFlow imports it from here.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras"]
