"""The C kernels of the q4 / q8 modes (qdot.c: the quantized products; layer_ops.c: the layer's other operators,
fused), compiled for this CPU on first use and loaded with ctypes.

The library is built by the C compiler (`$CC`, else `cc`) with the instruction sets this CPU reports (AVX2, FMA
and F16C, and AVX-VNNI and AVX512-VNNI where present; none: the portable scalar path, which gives the same
bits) into a cache directory (`$GENQ_NATIVE_CACHE`, else `~/.cache/genq/native`), named by a hash of the
sources, the flags and the compiler's version, so a rebuilt source or another CPU gets its own file. OpenMP
comes from the libgomp torch has already loaded, so the kernels share torch's threads (`torch.set_num_threads`).

No compiler, or a build that fails: `NativeUnavailable` (a QuantizationError) saying why, when the mode is
chosen; never a silent fallback to another mode's numbers.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from models.quant.errors import QuantizationError

SOURCES = tuple(Path(__file__).with_name(name) for name in ("qdot.c", "layer_ops.c"))
HEADERS = (Path(__file__).with_name("bf16.h"),)
BASE_FLAGS = ("-O3", "-std=c11", "-shared", "-fPIC", "-ffp-contract=off", "-fopenmp")
ISA_NAMES = {0: "scalar", 1: "avx2", 2: "avx2+avx-vnni", 3: "avx512-vnni"}
ISA_LEVELS = ("scalar", "avx2", "avx-vnni", "auto")


class NativeUnavailable(QuantizationError):
    """The q4 / q8 kernels cannot be built or loaded here."""


def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def isa_flags(isa: str = "auto") -> tuple[str, ...]:
    """Compiler flags for `isa`: "auto" (all this CPU has), "scalar" (the portable path), or "avx2" /
    "avx-vnni" (no more than that, for tests comparing the paths on a CPU that has more)."""
    if isa == "scalar":
        return ("-DGENQ_SCALAR",)
    if isa not in ISA_LEVELS:
        raise ValueError(f"isa must be one of {', '.join(ISA_LEVELS)}, not {isa!r}")
    flags = cpu_flags()
    if not {"avx2", "fma", "f16c"} <= flags:
        return ()
    chosen: tuple[str, ...] = ("-mavx2", "-mfma", "-mf16c")
    if isa == "avx2":
        return chosen
    if "avx_vnni" in flags:
        chosen += ("-mavxvnni",)
    if isa == "auto" and {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= flags:
        chosen += ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni")
    return chosen


def cache_dir() -> Path:
    return Path(os.environ.get("GENQ_NATIVE_CACHE") or Path.home() / ".cache" / "genq" / "native")


def build(isa: str = "auto") -> Path:
    """The shared library for `isa`, compiled unless the cache has it."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise NativeUnavailable("the q4 / q8 modes compile their kernels on first use and need a C compiler "
                                "(cc, or $CC); none was found")
    flags = BASE_FLAGS + isa_flags(isa)
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    texts = [s.read_text() for s in (*SOURCES, *HEADERS)]
    key = hashlib.sha256("\0".join([*texts, *flags, version]).encode()).hexdigest()[:16]
    target = cache_dir() / f"qdot-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        done = subprocess.run([compiler, *flags, *map(str, SOURCES), "-o", str(out), "-lm"], capture_output=True,
                              text=True)
        if done.returncode:
            names = ", ".join(s.name for s in SOURCES)
            raise NativeUnavailable(f"compiling {names} failed ({compiler}): {done.stderr.strip()[-800:]}")
        os.replace(out, target)  # atomic: a concurrent build of the same key writes the same bytes
    return target


@functools.cache
def library(isa: str = "auto") -> ctypes.CDLL:
    """The loaded kernels (built if needed) for `isa`."""
    torch.get_num_threads()  # torch (and its libgomp) is loaded before the library, which then shares it
    lib = ctypes.CDLL(str(build(isa)))
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.genq_qdot_linear.argtypes = [p, i32, i64, i64, i32, p, p, p, i64, p, i32]
    lib.genq_qdot_linear.restype = i32
    lib.genq_qdot_isa.restype = i32
    f32 = ctypes.c_float
    lib.genq_add_rms_norm.argtypes = [p, p, i64, i64, p, f32, p]
    lib.genq_add_rms_norm.restype = None
    lib.genq_silu_mul.argtypes = [p, i64, i64, p]
    lib.genq_silu_mul.restype = None
    lib.genq_rope_write.argtypes = [p, i64, i64, i64, i64, p, p, p, p, p, i64, i32, p]
    lib.genq_rope_write.restype = i32
    lib.genq_decode_attention.argtypes = [p, i64, i64, i64, i64, p, p, i32, i64, i64, p, i64, p, i64, f32, p]
    lib.genq_decode_attention.restype = i32
    lib.genq_kv_store.argtypes = [p, i32, i64, i64, i64, i64, p, p, i64, i32]
    lib.genq_kv_store.restype = i32
    lib.genq_kv_gather.argtypes = [p, i64, i64, i64, i32, p, i64, i64, p, i32]
    lib.genq_kv_gather.restype = i32
    lib.genq_decode_layers.argtypes = [p, i64, p, p]
    lib.genq_decode_layers.restype = i32
    return lib


def isa_name(lib: ctypes.CDLL) -> str:
    return ISA_NAMES.get(int(lib.genq_qdot_isa()), "unknown")
