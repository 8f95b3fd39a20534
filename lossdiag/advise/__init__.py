"""Advice: what to train with, judged by measured progress rather than by gradient norms alone."""
from lossdiag.advise.probe import Probe, draw_probe, relative_progress

__all__ = ["Probe", "draw_probe", "relative_progress"]
