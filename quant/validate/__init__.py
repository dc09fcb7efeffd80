"""Accuracy drift, per-layer error, detection mAP and latency of an int8 model vs its float one.

Modules: :mod:`data` (images, labels, decoding once), :mod:`runners` (TFLite / Keras
inference on shared pixels), :mod:`reference` (``--float`` resolution), :mod:`metrics`,
:mod:`layers`, :mod:`detection`, :mod:`latency`, :mod:`pipeline` (the run) and
:mod:`report` (Markdown, JSON, plots).
"""
