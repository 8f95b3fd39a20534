"""The sweep: short runs over a log-scale grid of weights from one start, scored by progress and the user's metrics.

`lossdiag.sweep(...)` (the function) is re-exported by the package root; this package holds the grid, the
runs, the choice of the recommended point and the records they stream.
"""
