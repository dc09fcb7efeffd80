"""Single-shot detectors: SSD builders, anchors, ``pipeline.config``, post-processing, and
the Object Detection API sources (training checkpoints and ``tflite_graph.pb`` exports)."""
