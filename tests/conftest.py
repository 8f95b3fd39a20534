"""Test settings: one torch thread (the suite runs on 2 cores), every test under tests/e2e/ marked slow, paths to the
shared fixtures, and the `architecture` fixture over the shared small models."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from models import ARCHITECTURES, Architecture  # noqa: E402
from paths import EXAMPLES, FIXTURES, TESTS  # noqa: E402

torch.set_num_threads(1)

E2E = TESTS / "e2e"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """An end-to-end test is slow by where it lives; before `-m` selects, so that `-m "not slow"` leaves it out."""
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def examples() -> Path:
    return EXAMPLES


@pytest.fixture(params=ARCHITECTURES, ids=[a.name for a in ARCHITECTURES])
def architecture(request: pytest.FixtureRequest) -> Architecture:
    """Each of the shared small models in turn, for a property written once and checked on all of them."""
    return request.param
