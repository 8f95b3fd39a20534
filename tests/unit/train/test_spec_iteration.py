"""The user's batches are iterated as the user's code is called: an exception (or sys.exit) raised while iterating
batches() or validation_batches() is a usage error naming the iteration; the end of one pass is not an error."""
from __future__ import annotations

import pytest

from lossdiag.errors import SpecError
from lossdiag.train.spec import batch_stream, spec_from_namespace, validation_stream


def spec_with(batches, validation=None):
    names = {"build_model": lambda: None, "batches": batches, "losses": lambda model, batch: {}}
    if validation is not None:
        names["validation_batches"] = validation
    return spec_from_namespace(names, "model.py")


def breaks_after(count: int, error: BaseException):
    def batches():
        for k in range(count):
            yield k
        raise error
    return batches


def test_an_error_while_iterating_batches_names_the_iteration():
    stream = batch_stream(spec_with(breaks_after(2, ValueError("bad shard"))))
    assert [next(stream), next(stream)] == [0, 1]
    with pytest.raises(SpecError, match=r"^model\.py: iterating batches\(\) raised ValueError: bad shard$"):
        next(stream)


def test_sys_exit_while_iterating_validation_batches_is_a_usage_error():
    spec = spec_with(lambda: iter([0]), breaks_after(1, SystemExit(3)))
    with pytest.raises(SpecError, match=r"iterating validation_batches\(\) called sys.exit\(3\)"):
        list(validation_stream(spec))


def test_one_pass_of_validation_batches_ends_without_error():
    assert list(validation_stream(spec_with(lambda: iter([0]), lambda: iter([1, 2])))) == [1, 2]
