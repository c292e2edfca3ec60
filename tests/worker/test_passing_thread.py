"""Generator work runs in a passing thread on CPU workers (worker.context.in_passing_thread)."""

from __future__ import annotations

import threading

import pytest

from worker.context import in_passing_thread


def test_returns_the_result_from_another_thread() -> None:
    assert in_passing_thread(lambda a, b: (a + b, threading.current_thread()), 2, 3)[0] == 5
    assert in_passing_thread(threading.current_thread) is not threading.current_thread()


def test_reraises_the_error_on_the_callers_thread() -> None:
    def boom() -> None:
        raise ValueError("bad photo")

    with pytest.raises(ValueError, match="bad photo"):
        in_passing_thread(boom)


def test_leaves_no_thread_behind() -> None:
    before = threading.active_count()
    in_passing_thread(sum, [1, 2])
    assert threading.active_count() == before
