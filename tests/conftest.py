"""Test settings: one torch thread (the suite runs on 2 cores), and paths to the shared fixtures."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from paths import EXAMPLES, FIXTURES  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def examples() -> Path:
    return EXAMPLES
