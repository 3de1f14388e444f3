"""SGD beside the interpolant: on the same linear model (``linear``), and trained networks."""
