"""The base both ``edgetpu`` and ``quant`` build on: errors and exit codes, atomic output
writing, paths, image listing and decoding, the text-format parser, and the one place that
imports TensorFlow. It imports nothing from either package.
"""
