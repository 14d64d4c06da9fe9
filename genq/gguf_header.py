"""Read a few metadata values from a GGUF file's header without torch or reading its tensors.

The API lists served models with their context length; loading models.gguf would import torch into the
API process, so this reads the header directly, stopping as soon as the wanted keys are found.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

_MAGIC = b"GGUF"
# GGUF metadata value types → struct format (8: string, 9: array are variable-length)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFHeaderError(ValueError):
    """The file is not a GGUF file this reader understands."""


def read_metadata(path: str | Path, keys: set[str]) -> dict[str, Any]:
    """The values of `keys` found in the header (missing keys are absent; array values are skipped)."""
    found: dict[str, Any] = {}
    with open(path, "rb") as f:
        if f.read(4) != _MAGIC:
            raise GGUFHeaderError(f"{path} is not a GGUF file")
        version = _unpack(f, "<I")
        if version not in (2, 3):
            raise GGUFHeaderError(f"GGUF version {version} is not supported")
        _unpack(f, "<Q")  # tensor count
        n_kv = _unpack(f, "<Q")
        for _ in range(n_kv):
            key = _string(f)
            vtype = _unpack(f, "<I")
            if key in keys and vtype != _ARRAY:
                found[key] = _value(f, vtype)
                if len(found) == len(keys):
                    break
            else:
                _skip(f, vtype)
    return found


def _unpack(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise GGUFHeaderError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _string(f: BinaryIO) -> str:
    n = _unpack(f, "<Q")
    return f.read(n).decode("utf-8", errors="replace")


def _value(f: BinaryIO, vtype: int) -> Any:
    if vtype == _STRING:
        return _string(f)
    if vtype in _SCALARS:
        return _unpack(f, _SCALARS[vtype])
    raise GGUFHeaderError(f"unknown GGUF value type {vtype}")


def _skip(f: BinaryIO, vtype: int) -> None:
    if vtype == _STRING:
        f.seek(_unpack(f, "<Q"), 1)
    elif vtype == _ARRAY:
        itype, count = _unpack(f, "<I"), _unpack(f, "<Q")
        if itype in _SCALARS:
            f.seek(struct.calcsize(_SCALARS[itype]) * count, 1)
        else:
            for _ in range(count):
                _skip(f, itype)
    elif vtype in _SCALARS:
        f.seek(struct.calcsize(_SCALARS[vtype]), 1)
    else:
        raise GGUFHeaderError(f"unknown GGUF value type {vtype}")
