"""lossdiag: why one term of your loss drowns the others, measured, and what to do about it."""
from lossdiag._version import __version__
from lossdiag.api import ProfileResult, profile
from lossdiag.errors import SpecError
from lossdiag.monitor import Monitor
from lossdiag.sweep.api import SweepResult, sweep

__all__ = ["Monitor", "ProfileResult", "SpecError", "SweepResult", "__version__", "profile", "sweep"]
