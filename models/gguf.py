"""Read GGUF files: metadata, tensor directory, and tensors dequantized to torch.

GGUF layout (little-endian): magic "GGUF", version, tensor count, metadata count; the metadata
key/value pairs; the tensor directory (name, dims innermost-first, type, offset); then, aligned to
`general.alignment` (32 by default), the tensor data. Only the formats the project meets are
dequantized (F32, F16, BF16, Q8_0, Q4_0, Q4_1); any other type is refused with its name.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch  # imported where tensors are made: the API reads tokenizers from GGUF files without torch

_MAGIC = b"GGUF"

# metadata value types
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# tensor types: id -> (name, elements per block, bytes per block)
TENSOR_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    8: ("Q8_0", 32, 34), 30: ("BF16", 1, 2),
}


class GGUFError(ValueError):
    """The file is not a GGUF file this reader can use."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order (outermost first), i.e. GGUF dims reversed
    type_id: int
    offset: int  # absolute offset in the file

    @property
    def type_name(self) -> str:
        return TENSOR_TYPES.get(self.type_id, (f"type {self.type_id}",))[0]


class _Cursor:
    def __init__(self, buf: memoryview):
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype, count = self.unpack("<I"), self.unpack("<Q")
            if itype in _SCALARS and itype != 7:
                # numeric arrays in one read: token types and scores are 49k+ entries
                dt = np.dtype(_SCALARS[itype])
                arr = np.frombuffer(self.buf, dtype=dt, count=count, offset=self.pos)
                self.pos += dt.itemsize * count
                return arr.tolist()
            return [self.value(itype) for _ in range(count)]
        raise GGUFError(f"unknown GGUF metadata value type {vtype}")


class GGUFFile:
    """A GGUF file opened read-only; tensors are read (and dequantized) on request."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        cur = _Cursor(self._data.data)  # a memoryview of the mapped file
        if bytes(self._data[:4]) != _MAGIC:
            raise GGUFError(f"{self.path} is not a GGUF file")
        cur.pos = 4
        self.version = cur.unpack("<I")
        if self.version not in (2, 3):
            raise GGUFError(f"GGUF version {self.version} is not supported (2 and 3 are)")
        n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            self.metadata[key] = cur.value(cur.unpack("<I"))
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.unpack("<I")
            dims = [cur.unpack("<Q") for _ in range(n_dims)]
            type_id, offset = cur.unpack("<I"), cur.unpack("<Q")
            infos.append((name, tuple(reversed(dims)), type_id, offset))
        align = int(self.metadata.get("general.alignment", 32))
        start = (cur.pos + align - 1) // align * align
        self.tensors: dict[str, TensorInfo] = {
            name: TensorInfo(name, shape, type_id, start + offset) for name, shape, type_id, offset in infos
        }

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def tensor(self, name: str) -> torch.Tensor:
        """The named tensor as float32 (quantized types dequantized), in torch dimension order."""
        import torch

        info = self.tensors[name]
        if info.type_id not in TENSOR_TYPES:
            raise GGUFError(f"tensor {name} has type {info.type_name}, which this reader cannot dequantize")
        _, per_block, block_bytes = TENSOR_TYPES[info.type_id]
        n = int(np.prod(info.shape)) if info.shape else 1
        size = n // per_block * block_bytes
        # read from the file, not from the mapping: every mapped page a read touches counts in the process's
        # memory while the file is open, and a model's load reads them all (93 MiB for the default model)
        raw = np.fromfile(self.path, dtype=np.uint8, count=size, offset=info.offset)
        if raw.size != size:
            raise GGUFError(f"tensor {name} ends past the end of {self.path}")
        return torch.from_numpy(dequantize(raw, info.type_id, n)).reshape(info.shape)


# elements decoded at a time: the decoding's temporaries (several float32 arrays of the chunk's size) stay a
# few MiB instead of several copies of the largest tensor (the default model's embedding is 113 MB in float32)
CHUNK_ELEMENTS = 1 << 20


def dequantize(raw: np.ndarray, type_id: int, n: int) -> np.ndarray:
    """Decode `n` elements of GGUF type `type_id` from the bytes `raw` into float32, CHUNK_ELEMENTS at a time
    into the one array returned."""
    name, per_block, block_bytes = TENSOR_TYPES[type_id]
    if n <= CHUNK_ELEMENTS:
        return _decode(raw, name, n)
    out = np.empty(n, dtype=np.float32)
    n_blocks, step = n // per_block, max(1, CHUNK_ELEMENTS // per_block)
    for b0 in range(0, n_blocks, step):
        b1 = min(n_blocks, b0 + step)
        out[b0 * per_block:b1 * per_block] = _decode(raw[b0 * block_bytes:b1 * block_bytes], name,
                                                     (b1 - b0) * per_block)
    return out


def _decode(raw: np.ndarray, name: str, n: int) -> np.ndarray:
    """`n` elements of the GGUF type called `name` from the bytes `raw`, as a new float32 array."""
    if name == "F32":
        return np.frombuffer(raw, dtype="<f4", count=n).copy()
    if name == "F16":
        return np.frombuffer(raw, dtype="<f2", count=n).astype(np.float32)
    if name == "BF16":
        bits = np.frombuffer(raw, dtype="<u2", count=n).astype(np.uint32) << 16
        return bits.view(np.float32)
    if name == "Q8_0":
        # block: f16 scale d, then 32 int8 q; x = d * q
        blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 34)
        d = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (nb, 1)
        q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)  # (nb, 32)
        return (d * q).reshape(-1)
    if name in ("Q4_0", "Q4_1"):
        # Q4_0 block: f16 d, 16 bytes of nibbles; x = d * (q - 8)
        # Q4_1 block: f16 d, f16 m, 16 bytes of nibbles; x = d * q + m
        # element j < 16 is the low nibble of byte j, element j >= 16 the high nibble of byte j - 16
        width = 18 if name == "Q4_0" else 20
        blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, width)
        d = blocks[:, :2].copy().view("<f2").astype(np.float32)
        qs = blocks[:, width - 16:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)  # (nb, 32)
        if name == "Q4_0":
            return (d * (q - 8.0)).reshape(-1)
        m = blocks[:, 2:4].copy().view("<f2").astype(np.float32)
        return (d * q + m).reshape(-1)
    raise GGUFError(f"cannot dequantize {name}")
