"""Edge TPU side of edgetpu-quant: compiler wrapper, offline analyzer, cost model, runtime."""
