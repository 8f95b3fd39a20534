"""lossdiag: why one term of your loss drowns the others, measured, and what to do about it."""
from lossdiag._version import __version__
from lossdiag.api import ProfileResult, profile
from lossdiag.errors import SpecError
from lossdiag.monitor import Monitor

__all__ = ["Monitor", "ProfileResult", "SpecError", "__version__", "profile"]
