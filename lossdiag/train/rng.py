"""Save and restore every random number generator a training run touches."""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without disturbing Python's, NumPy's and torch's (CPU and CUDA) generators."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that repeated runs from one initial state match."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
