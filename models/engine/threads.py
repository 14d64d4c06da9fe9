"""Keep an engine's torch work off long-lived threads other than its own loop.

Torch's CPU kernels run on OpenMP, and libgomp keeps a team of worker threads for every thread that has
run a parallel region, for as long as that thread lives. When the teams together hold more threads than
the machine has cores, libgomp shortens its spin-wait ("throttled" spinning): the workers sleep between
two kernels and the engine loop's matmuls leave cores idle. On a 2-core machine, a model loaded on the
main thread and then decoded on the engine thread ran each batch-64 step about 40% slower (283 ms against
199 ms, 1.6 cores busy instead of 2.0).

So loading happens on a short-lived thread: when it ends, its team goes with it, and the engine loop's
team is the only one left.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def on_fresh_thread(fn: Callable[[], T], name: str = "genq-load") -> T:
    """Run fn on a new thread, wait for it, and return its result (or raise its exception)."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # handed to the caller below
            box["error"] = e

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]
