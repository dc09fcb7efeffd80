"""Command-line entry points of the edgetpu package."""
