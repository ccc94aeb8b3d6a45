"""What serving changes in the interpreter: the collector and the GIL's switch interval."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from gridgate.server import tune_for_serving


@pytest.fixture
def restored() -> Iterator[None]:
    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)


@pytest.mark.usefixtures("restored")
def test_start_up_objects_are_frozen_and_threads_yield_the_gil_within_a_millisecond() -> None:
    made_at_start = [object() for _ in range(10)]
    tune_for_serving()
    assert gc.get_freeze_count() >= len(made_at_start)
    assert gc.get_threshold()[0] == 50_000
    assert sys.getswitchinterval() == pytest.approx(0.001)
