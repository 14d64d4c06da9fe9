"""The KV-cache budget an engine takes when its configuration names none: half the memory still available
on its device once the weights are loaded, so the default fits the machine and the model it runs."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path
from typing import Any

import torch

DEFAULT_KV_FRACTION = 0.5


def available_bytes(device: torch.device | str) -> int:
    """Memory a new allocation on `device` can still get: free device memory on CUDA; on the CPU the
    kernel's MemAvailable, or less where this process's cgroup (a container) allows less."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    available = _meminfo_available()
    limit = _cgroup_headroom()
    return min(available, limit) if limit is not None else available


def default_kv_budget(device: torch.device | str) -> int:
    """Bytes of KV cache to plan for: DEFAULT_KV_FRACTION of what `device` has available now."""
    return int(available_bytes(device) * DEFAULT_KV_FRACTION)


def release_freed_heap() -> None:
    """Hand the C heap's freed pages back to the OS (glibc's malloc_trim; elsewhere nothing). Loading a model
    frees temporaries (the file's tensors, their dequantized float32 copies) that glibc otherwise keeps in the
    loading thread's arena: about 480 MiB for the default 135M model, more than its weights."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """libc's malloc_trim, looked up once (find_library runs ldconfig; the engine trims each time it idles)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # free pages: less than available


# (limit, usage) files of this process's memory cgroup as a container sees it: cgroup v2, then v1
_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _cgroup_headroom() -> int | None:
    """The memory cgroup's limit minus its usage; None when it has no limit or there is none to read."""
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 1 << 60:  # v1 writes "no limit" as a number near 2**63
            return None
        return max(0, int(limit) - usage)
    return None
