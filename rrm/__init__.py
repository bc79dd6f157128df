"""rrm: the training layer of the RRM toolkit (data, models, metrics, training CLIs).

This package never imports the compiled kernels at import time; only the parts that need
them (mining, losses, training) do.
"""
