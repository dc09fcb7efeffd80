"""Command-line entry points of the quant package."""
