"""Training: the model file (spec), the recorded training loop of a profile (loop), and what every run from the
same start shares (rng, progress)."""
