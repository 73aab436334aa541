"""glibc malloc settings of the long commands (pretrain, render, probe, orbit).

glibc serves every block above M_MMAP_THRESHOLD (dynamic, at most 32 MiB) with its own mmap and returns it to the
OS on free, so a tensor of that size allocated every step (EquiCaps' 38 MB routing votes at the demo's batch,
seq-JEPA's activations) page-faults its memory in again on every step: 18 % of a demo EquiCaps step's CPU time,
5 % of seq-JEPA's (BENCHMARKS.md). Raising the threshold keeps such blocks in the heap for reuse; the trim
threshold bounds how much freed memory the process holds before giving it back.

Setting: SSL_EQ_MALLOC=0 leaves glibc's defaults; MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in the
environment (glibc's own variables) win over ours. Nothing happens outside glibc (macOS, musl).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("ssl_eq")

ENV = "SSL_EQ_MALLOC"
# mallopt parameters (malloc.h) -> (value, glibc's environment variable for the same setting)
SETTINGS = {
    -3: (256 << 20, "MALLOC_MMAP_THRESHOLD_"),   # M_MMAP_THRESHOLD: blocks below this come from the heap
    -1: (512 << 20, "MALLOC_TRIM_THRESHOLD_"),   # M_TRIM_THRESHOLD: freed heap kept before trimming
}


def keep_large_blocks() -> dict[str, int]:
    """Apply SETTINGS with mallopt unless disabled or set in the environment; returns {variable: value} applied."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return {}
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:  # not glibc
        return {}
    applied = {}
    for param, (value, variable) in SETTINGS.items():
        if variable not in os.environ and mallopt(param, value) == 1:
            applied[variable] = value
    log.debug("malloc: %s", applied or "glibc defaults")
    return applied
