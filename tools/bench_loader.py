"""Loader benchmark: views/s of the original 3DIEBench layout vs native raw / JPEG shards (same data, one run).

(a) original layout via ThreeDIEBenchFolder (PIL open + np.load per view, like the reference loader),
(b) native raw shards (memory-mapped), (c) native JPEG shards decoded on the CPU in the workers, and
(d) native JPEG shards decoded in batches on the GPU (only when CUDA is available).
All read every view once through a DataLoader of ViewDataset items with the same batch size and workers;
(d) decodes whole batches in the main process. Prints a Markdown table (machine + date).

    python tools/bench_loader.py [--objects 48 --views 50 --size 128 --batch-size 64 --workers 2]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader


def _time_loader(dataset: Any, batch_size: int, workers: int, passes: int) -> float:
    """Best views/s over `passes` passes of one DataLoader (persistent workers; the first batch, i.e.
    worker start-up, is not timed)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=True,
                        persistent_workers=workers > 0)
    best = 0.0
    for p in range(passes):
        it = iter(loader)
        if p == 0:
            next(it)
        start, n = time.perf_counter(), 0
        for batch in it:
            n += batch["images"].shape[0]
        best = max(best, n / max(time.perf_counter() - start, 1e-9))
    return best


def _time_gpu_decode(root: Path, batch_size: int) -> float:
    from ssl_eq.datasets import NativeDataset

    ds = NativeDataset(root, decode_device="cuda")
    objs, views = np.divmod(np.random.default_rng(0).permutation(len(ds) * ds.views), ds.views)
    ds.read_views(objs[:batch_size], views[:batch_size])  # warm-up (CUDA / nvjpeg init)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(batch_size, len(objs), batch_size):
        ds.read_views(objs[i:i + batch_size], views[i:i + batch_size])
    torch.cuda.synchronize()
    return (len(objs) - batch_size) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int, default=48)
    p.add_argument("--views", type=int, default=50)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--passes", type=int, default=3, help="passes per loader; the best is reported")
    p.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = p.parse_args(argv)

    from ssl_eq.datasets import NativeDataset, ThreeDIEBenchFolder, ViewDataset, make_synthetic_dataset
    from ssl_eq.datasets.threedie import export_3diebench, import_3diebench

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench_loader-"))
    t0 = time.perf_counter()
    src = make_synthetic_dataset(work / "synthetic", num_objects=args.objects, views=args.views, size=args.size,
                                 objects_per_shard=16)
    orig = export_3diebench(src, work / "orig", workers=args.workers, progress=False)
    roots = {enc: import_3diebench(orig, work / f"native-{enc}", encoding=enc, workers=args.workers,
                                   objects_per_shard=16, progress=False) for enc in ("raw", "jpeg")}
    setup_s = time.perf_counter() - t0

    cases: list[tuple[str, Callable[[], float]]] = [
        ("(a) original layout, ThreeDIEBenchFolder (PIL + np.load per view)",
         lambda: _time_loader(ViewDataset(ThreeDIEBenchFolder(orig), split=None), args.batch_size, args.workers,
                                  args.passes)),
        ("(b) native raw shards (mmap)",
         lambda: _time_loader(ViewDataset(NativeDataset(roots["raw"]), split=None), args.batch_size, args.workers,
                                  args.passes)),
        ("(c) native JPEG shards, CPU decode_jpeg",
         lambda: _time_loader(ViewDataset(NativeDataset(roots["jpeg"]), split=None), args.batch_size, args.workers,
                                  args.passes)),
    ]
    if torch.cuda.is_available():
        cases.append(("(d) native JPEG shards, GPU batched decode_jpeg", lambda: _time_gpu_decode(roots["jpeg"],
                                                                                              args.batch_size)))
    results = [(name, fn()) for name, fn in cases]
    base = results[0][1]

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"Loader benchmark, {datetime.datetime.now().isoformat(timespec='minutes')}; machine: "
          f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPUs, GPU {gpu}; "
          f"torch {torch.__version__}")
    print(f"{args.objects} objects x {args.views} views at {args.size} px ({args.objects * args.views} views), "
          f"batch {args.batch_size}, {args.workers} workers, best of {args.passes} passes; setup {setup_s:.0f} s\n")
    print("| loader | views/s | vs (a) |\n|---|---:|---:|")
    for name, rate in results:
        print(f"| {name} | {rate:,.0f} | {rate / base:.1f}x |")


if __name__ == "__main__":
    main()
