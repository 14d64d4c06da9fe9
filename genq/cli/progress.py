"""A one-line progress bar for a batch being waited on (drawn only on a terminal: see client_commands)."""
from __future__ import annotations

from typing import Any, TextIO

FINISHED = ("succeeded", "failed", "canceled", "expired")


class ProgressBar:
    """`update(batch)` redraws `[#####-----] 12/40 jobs done (2 failed)` in place on `out`."""

    def __init__(self, out: TextIO, width: int = 30):
        self._out, self._width, self._drawn = out, width, False

    def update(self, batch: dict[str, Any]) -> None:
        counts: dict[str, int] = batch.get("counts") or {}
        total = counts.get("total", 0)  # the batch's counts: "total" and one per status
        done = sum(counts.get(s, 0) for s in FINISHED)
        filled = self._width * done // total if total else self._width
        failed = sum(counts.get(s, 0) for s in FINISHED if s != "succeeded")
        tail = f" ({failed} not succeeded)" if failed else ""
        self._out.write(f"\r[{'#' * filled}{'-' * (self._width - filled)}] {done}/{total} jobs done{tail}")
        self._out.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._out.write("\n")
            self._out.flush()
