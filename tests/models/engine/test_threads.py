"""on_fresh_thread runs work on a thread of its own and hands back its result or its exception."""
from __future__ import annotations

import threading

import pytest

from models.engine.threads import on_fresh_thread


def test_the_work_runs_on_another_thread_that_is_gone_after() -> None:
    seen: list[threading.Thread] = []

    def work() -> int:
        seen.append(threading.current_thread())
        return 42

    assert on_fresh_thread(work) == 42
    assert seen[0] is not threading.current_thread()
    assert not seen[0].is_alive()


def test_the_works_exception_reaches_the_caller() -> None:
    def work() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        on_fresh_thread(work)
