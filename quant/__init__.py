"""edgetpu-quant: float MobileNet / SSD models to int8 TensorFlow Lite for the Coral Edge TPU.

The ``quant`` package builds float models and quantizes them; ``edgetpu`` compiles,
analyses and runs the results. TensorFlow is imported lazily, through
:mod:`edgeq._tensorflow`, so that light commands (``quantize --list``) start fast.
"""

__version__ = "0.1.0"
