"""Benchmark problems and peer per-term-gradient steps; not part of the lossdiag package."""
