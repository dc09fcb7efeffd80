"""The one place that imports TensorFlow.

``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is first imported so that
``tf.keras`` is tf-keras (Keras 2): tensorflow-model-optimization and the int8 TFLite
QAT path only work with it. Every module that needs TensorFlow imports it from here, also
the TFLite parts used directly: the converter's quantizer (``lite_convert``), the flatbuffer
schema's object model (``lite_schema``) and ``flatbuffer_utils``. (Imports for type
annotations only, under ``TYPE_CHECKING``, name TensorFlow's modules directly: they never
run.)

Its start-up lines (absl, CUDA probing on a machine without a GPU) are hidden unless
``--verbose`` (:mod:`edgeq.logs`): the import and the GPU probe, which prints them once, run
with native stderr pointed at ``/dev/null``.
"""

import os

from edgeq.logs import native_stderr_hidden, verbose

os.environ["TF_USE_LEGACY_KERAS"] = "1"
if not verbose():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

with native_stderr_hidden():
    import tensorflow as tf

    tf.config.list_physical_devices("GPU")
import tf_keras as keras  # noqa: E402
from tensorflow.lite.python import convert as lite_convert  # noqa: E402
from tensorflow.lite.python import schema_py_generated as lite_schema  # noqa: E402
from tensorflow.lite.tools import flatbuffer_utils  # noqa: E402

__all__ = ["tf", "keras", "lite_convert", "lite_schema", "flatbuffer_utils"]
