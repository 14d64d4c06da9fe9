"""How a worker tells `genq up` it is ready: a small JSON file, written once its models are loaded (or one
failed to load), that the supervisor waits for before it says the service is up."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Readiness:
    loaded: list[str]  # the models loaded in memory
    error: str | None = None  # why one did not load; None when all did


def write_readiness(path: str | Path, loaded: list[str], error: str | None = None) -> None:
    """Write the file whole (a reader never sees half of it)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"loaded": loaded, "error": error}))
    os.replace(partial, path)


def read_readiness(path: str | Path) -> Readiness | None:
    """What the worker wrote; None while it has written nothing."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    return Readiness(list(data["loaded"]), data.get("error"))
