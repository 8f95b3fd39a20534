"""Recording: shared-parameter discovery, per-term gradients and the records stream."""
