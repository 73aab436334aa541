"""Up-front estimates of memory, disk and time for render / pretrain / orbit.

What cannot fit is refused in one line naming the options, the estimate and the limit, before any work; a render
that fits but is larger than LARGE_RENDER_IMAGES asks for `--yes`. Estimates count the dominant buffers only
(they are lower bounds, so a refusal is certain, not a guess).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

LARGE_RENDER_IMAGES = 5_000_000      # a render above this needs --yes (3DIEBench: 52,472 x 50 = 2.6 M images)
GPU_RENDER_IMAGES_PER_S = 1000.0     # one H100 at 256 px (BENCHMARKS.md); used for the time estimate
JPEG_BYTES_PER_PIXEL = 0.25          # a 3DIEBench-like JPEG at quality 95 is ~0.3-0.5 bytes / pixel: a lower bound
FLOAT_BYTES = 4


def human(n: float) -> str:
    """Bytes as a short string: '5.7 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """'~40 s', '~12 min', '~2.8 h'."""
    if seconds < 120:
        return f"~{seconds:.0f} s"
    return f"~{seconds / 60:.0f} min" if seconds < 7200 else f"~{seconds / 3600:.1f} h"


def available_memory() -> int:
    """Bytes of memory the kernel can give this process now (MemAvailable), else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def free_disk(path: str | os.PathLike) -> int:
    """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def require(need: float, have: float, what: str, limit: str, advice: str) -> None:
    """Refuse (ValueError, one line) when `need` bytes exceed the `have` bytes of `limit`."""
    if need > have:
        raise ValueError(f"{what}: at least {human(need)} needed, but {limit} has {human(have)}; {advice}")


def check_render(*, objects: int, views: int, size: int, objects_per_shard: int, encoding: str,
                 out: str | os.PathLike, yes: bool) -> str:
    """Refuse a render whose shard does not fit in memory or whose images do not fit on disk; ask for `yes`
    above LARGE_RENDER_IMAGES. `objects` is an upper bound (a mesh source may hold fewer) -> the estimate line."""
    per_image = size * size * 3
    shard = min(objects, objects_per_shard) * views * per_image
    require(shard, available_memory(), f"one shard ({min(objects, objects_per_shard)} objects x --views {views} x "
            f"{size}x{size} px)", "memory", "lower --views, --objects-per-shard or --size")
    images = objects * views
    on_disk = images * (per_image if encoding == "raw" else size * size * JPEG_BYTES_PER_PIXEL)
    require(on_disk, free_disk(out), f"--objects {objects} x --views {views} = {images:,} images "
            f"({encoding}, {size} px)", f"the disk of {out}", "free space, choose another --out, or render fewer "
            "--objects / --views")
    estimate = (f"{images:,} images, >= {human(on_disk)} on disk, {duration(images / GPU_RENDER_IMAGES_PER_S)} at "
                f"{GPU_RENDER_IMAGES_PER_S:g} img/s (one GPU; a CPU is ~100x slower)")
    if images > LARGE_RENDER_IMAGES and not yes:
        raise ValueError(f"--objects {objects} x --views {views}: {estimate}, above {LARGE_RENDER_IMAGES:,} images; "
                         f"pass --yes to render it")
    return estimate


def check_train_batch(*, batch_size: int, views: int, image_size: int) -> None:
    """Refuse a pretraining batch whose input tensor alone exceeds the memory (activations come on top)."""
    need = batch_size * views * 3 * image_size * image_size * FLOAT_BYTES
    require(need, available_memory(), f"one batch (data.batch_size {batch_size} x {views} views x 3 x "
            f"{image_size}x{image_size} float32)", "memory", "lower data.image_size or data.batch_size")


def check_orbit(*, objects: int, steps: int, image_size: int) -> None:
    """Refuse an orbit whose frames (uint8, held for every run) do not fit in memory."""
    need = objects * steps * image_size * image_size * 3
    require(need, available_memory(), f"orbit frames (--objects {objects} x --steps {steps} x "
            f"{image_size}x{image_size} px)", "memory", "lower --steps or --objects")
