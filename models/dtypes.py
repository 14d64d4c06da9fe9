"""Compute dtypes, and "auto": the fastest one a device computes natively.

- CUDA: bfloat16 where the GPU supports it, else float16.
- CPU: bfloat16 where the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16: oneDNN then
  runs bf16 matrix multiplies at twice the float32 rate, on half the memory traffic); float32 elsewhere,
  since emulated bf16 is slower than float32.

float32 stays the reference: the mode checked token for token against transformers. bfloat16 is the
dtype SmolLM2 and most current Llama-family checkpoints are published in.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CHOICES = ("auto", *DTYPES)
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_dtype(name: str, device: str | torch.device = "cpu") -> str:
    """The concrete dtype name for `name` (one of CHOICES) on `device`."""
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"dtype must be one of {list(CHOICES)}, got {name!r}")
        return name
    kind = torch.device(device).type
    if kind == "cuda":
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"
    if kind == "cpu":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return "float32"


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products in hardware (Linux: read from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return any(f in flags for f in _CPU_BF16_FLAGS)
    return False
