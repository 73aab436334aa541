"""Loader benchmark: views/s of the original 3DIEBench layout vs native raw / JPEG shards (same data, one run).

(a)  the original per-file layout read the way the reference code (SIE) does: per view a PIL open +
     convert("RGB") + torchvision Resize / ToTensor / Normalize, and an np.load of the latent, then
     torch's default collate of float32 images;
(a2) the same files through our `ThreeDIEBenchFolder` (PIL + np.load per view, uint8 out);
(b)  native raw shards (memory-mapped, one copy per view into the batch) through `ThreadLoader`
     (ssl_eq's default loader: worker threads), and (b2) through torch's worker processes;
(c)  native JPEG shards decoded with torchvision's `decode_jpeg`, threads, and (c2) worker processes;
(d)  native JPEG shards decoded in batches on the GPU in the main process (only when CUDA is available).
(a)-(c2) read the same objects with the same batch size, number of workers and random order.
`--kind pair` reads SIE-style pairs (2 random views + the relative rotation) instead of single views.
`--normalize` times only (b), warm, with its images left as uint8 or made float32 (ImageNet mean / std) in the
worker threads: converted only, into a reused buffer (the least any float32 output costs); the plain formula
(x.float() / 255 - mean) / std; `ThreadLoader(normalize=...)` (`ssl_eq.datasets.normalize`); and uint8 batches
normalised by the consumer (what `preprocess` pays on a CPU device). Passes are interleaved, so load from other
jobs hits every row alike; ratios are to the uint8 row.

Image content: `--content render` (default) renders a few procedural objects with our PyTorch3D renderer at
`--size` and builds every view from them (rolled / flipped), so JPEG decode costs what a real render costs;
`--content synthetic` uses the flat-coloured test images (cheap to decode). Cache state: `warm` reads files
that are in the page cache; `cold` evicts every dataset file (posix_fadvise DONTNEED) before each pass and
restarts the workers, as for a dataset larger than RAM. Prints Markdown tables (machine + date).

    python tools/bench_loader.py [--objects 48 --views 50 --size 256 --batch-size 64 --workers 2]
"""
from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ReferenceStyle(Dataset):
    """The original layout read like SIE's loader: items are views (or pairs of random distinct views) of
    the listed objects; per view PIL open + convert + Resize/ToTensor/Normalize and one np.load."""

    def __init__(self, root: Path, views: int, size: int, pairs: bool):
        from torchvision import transforms

        self.root, self.views, self.pairs = root, views, pairs
        self.samples = [str(p) for split in ("train", "val") for p in np.load(root / f"{split}_images.npy")]
        self.transform = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                                             transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.samples) * (1 if self.pairs else self.views)

    def _view(self, obj: int, k: int) -> tuple[torch.Tensor, np.ndarray]:
        from PIL import Image

        folder = f"{self.root}{self.samples[obj]}"
        with open(f"{folder}/image_{k}.jpg", "rb") as f:
            img = self.transform(Image.open(f).convert("RGB"))
        return img, np.load(f"{folder}/latent_{k}.npy").astype(np.float32)

    def __getitem__(self, i: int) -> Any:
        if not self.pairs:
            img, lat = self._view(i // self.views, i % self.views)
            return img, torch.from_numpy(lat)
        from scipy.spatial.transform import Rotation

        v1, v2 = np.random.choice(self.views, 2, replace=False)
        (img1, lat1), (img2, lat2) = self._view(i, v1), self._view(i, v2)
        rel = (Rotation.from_euler("xyz", lat1[:3]).inv() * Rotation.from_euler("xyz", lat2[:3])).as_quat()
        return img1, img2, torch.from_numpy(np.concatenate([rel, lat2[3:] - lat1[3:]]).astype(np.float32))


def _batch_views(batch: Any) -> int:
    """Number of views in a collated batch (dict of ours or tuple of the reference loader)."""
    if isinstance(batch, dict):
        return batch["images"].shape[0] * (batch["images"].shape[1] if batch["images"].ndim == 5 else 1)
    return sum(t.shape[0] for t in batch if t.ndim == 4)


def _evict(root: Path) -> None:
    """Drop every file under `root` from the page cache (no root rights needed)."""
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _time_loader(make_loader: Callable[[], Iterable], root: Path, passes: int, cold: bool) -> float:
    """Best views/s over `passes` passes. Warm: one loader (persistent workers), each timed pass after a full
    untimed one. Cold: the files are evicted and a new loader (new workers, new memory maps) made before each
    pass. The first batch of a pass (worker start-up) is never timed."""
    loader, best = make_loader(), 0.0
    if not cold:
        for _ in loader:
            pass
    for _ in range(passes):
        if cold:  # unmap the old loader's files (mapped pages cannot be evicted), then evict
            loader = it = None
            gc.collect()
            _evict(root)
            loader = make_loader()
        it = iter(loader)
        next(it)
        start, n = time.perf_counter(), 0
        for batch in it:
            n += _batch_views(batch)
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


def _time_interleaved(loaders: dict[str, Iterable], passes: int) -> dict[str, tuple[float, float]]:
    """Per loader: the best views/s over `passes` timed passes and the process CPU microseconds per view of that
    pass. One untimed pass of each first; then pass k of every loader before pass k + 1 of any."""
    for loader in loaders.values():
        for _ in loader:
            pass
    best: dict[str, tuple[float, float]] = {}
    for _ in range(passes):
        for name, loader in loaders.items():
            it = iter(loader)
            next(it)
            start, cpu, n = time.perf_counter(), time.process_time(), 0
            for batch in it:
                n += _batch_views(batch)
            rate = n / max(time.perf_counter() - start, 1e-9)
            if rate > best.get(name, (0.0, 0.0))[0]:
                best[name] = (rate, (time.process_time() - cpu) / n * 1e6)
    return best


class _NormalizedByConsumer:
    """`loader`'s uint8 batches, normalised in the consuming thread as `preprocess` does on a CPU device."""

    def __init__(self, loader: Iterable[dict[str, Any]]):
        from ssl_eq.datasets.normalize import Normalize

        self.loader, self.normalize = loader, Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return ({**batch, "images": self.normalize(batch["images"])} for batch in self.loader)


def _normalize_table(root: Path, args: argparse.Namespace) -> None:
    """Print views/s of ThreadLoader over raw shards with uint8 vs normalised float32 batches (`--normalize`)."""
    from ssl_eq.datasets import NativeDataset, PairDataset, ThreadLoader, ViewDataset, collate

    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    local = threading.local()

    def convert(items: Any) -> dict[str, Any]:
        """One conversion pass into this thread's float32 buffer, written over by its next batch."""
        batch = collate(items)
        if getattr(local, "out", None) is None or local.out.shape != batch["images"].shape:
            local.out = torch.empty_like(batch["images"], dtype=torch.float32)
        batch["images"] = local.out.copy_(batch["images"])
        return batch

    def plain(items: Any) -> dict[str, Any]:
        """The formula the reference loader's Normalize and, before Normalize, `preprocess` computed."""
        batch = collate(items)
        batch["images"] = (batch["images"].float() / 255.0 - mean) / std
        return batch

    def loader(**kw: Any) -> ThreadLoader:
        ds = NativeDataset(root)
        items = PairDataset(ds, split=None) if args.kind == "pair" else ViewDataset(ds, split=None)
        return ThreadLoader(items, batch_size=args.batch_size, num_workers=args.workers, shuffle=True, **kw)

    rows = _time_interleaved({
        "raw uint8 (as read)": loader(),
        "float32, convert only, into a reused buffer (floor)": loader(collate_fn=convert),
        "normalised float32, before: (x.float() / 255 - mean) / std": loader(collate_fn=plain),
        "**normalised float32, after: ThreadLoader(normalize=(mean, std))**": loader(normalize=(IMAGENET_MEAN,
                                                                                               IMAGENET_STD)),
        "uint8, normalised by the consumer (preprocess on a CPU device)": _NormalizedByConsumer(loader()),
    }, args.passes)
    raw_rate, raw_cpu = next(iter(rows.values()))
    print("| batches | views/s | time / raw | CPU us / view | CPU / raw |")
    print("|---|---:|---:|---:|---:|")
    for name, (rate, cpu) in rows.items():
        print(f"| {name} | {rate:,.0f} | {raw_rate / rate:.2f}x | {cpu:.1f} | {cpu / raw_cpu:.2f}x |")


def _rendered_content(work: Path, size: int) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """An `image_fn` for make_synthetic_dataset whose views are 16 PyTorch3D renders, each rolled / flipped."""
    from ssl_eq.datasets import NativeDataset
    from ssl_eq.renderers.job import RenderConfig, RenderJob

    out = work / "content"
    RenderJob(RenderConfig(out=str(out), objects=8, views=2, size=size, val_fraction=0.0, progress=False)).run()
    ds = NativeDataset(out)
    objs, views = np.divmod(np.arange(len(ds) * ds.views), ds.views)
    renders = ds.read_views(objs, views).permute(0, 2, 3, 1).contiguous()  # (16, H, W, 3)

    def image_fn(latents: torch.Tensor, labels: torch.Tensor, size: int) -> torch.Tensor:
        n = latents.shape[0]
        idx = torch.arange(n)
        imgs = renders[idx % len(renders)]
        shift = (idx * 7919) % size
        imgs = torch.stack([torch.roll(im, int(s), dims=1) for im, s in zip(imgs, shift)])
        flip = idx % 2 == 1
        imgs[flip] = imgs[flip].flip(2)
        return imgs
    return image_fn


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int, default=48)
    p.add_argument("--views", type=int, default=50)
    p.add_argument("--size", type=int, default=256, help="image size (3DIEBench: 256)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kind", choices=("view", "pair"), default="view")
    p.add_argument("--content", choices=("render", "synthetic"), default="render")
    p.add_argument("--cache", choices=("warm", "cold", "both"), default="both")
    p.add_argument("--passes", type=int, default=3, help="timed passes per loader; the best is reported")
    p.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    p.add_argument("--normalize", action="store_true",
                   help="only the raw-shard ThreadLoader, uint8 vs normalised float32 batches (warm)")
    args = p.parse_args(argv)
    items_per_pass = args.objects * (1 if args.kind == "pair" else args.views)
    if items_per_pass < 3 * args.batch_size:
        p.error(f"a pass has {items_per_pass} {args.kind}s, fewer than 3 batches of {args.batch_size}: raise --objects"
                + (" (a pair item is one object)" if args.kind == "pair" else " or --views"))

    from ssl_eq.datasets import (NativeDataset, PairDataset, ThreadLoader, ThreeDIEBenchFolder, ViewDataset,
                                 collate, make_synthetic_dataset)
    from ssl_eq.datasets.synthetic import render_synthetic
    from ssl_eq.datasets.threedie import export_3diebench, import_3diebench

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench_loader-"))
    t0 = time.perf_counter()
    image_fn = _rendered_content(work, args.size) if args.content == "render" else render_synthetic
    src = make_synthetic_dataset(work / "synthetic", num_objects=args.objects, views=args.views, size=args.size,
                                 objects_per_shard=16, image_fn=image_fn, val_fraction=0.25)
    if args.normalize:
        from ssl_eq.utils.memory import keep_large_blocks
        malloc = keep_large_blocks() or "glibc defaults"  # as the toolkit's commands set it (SSL_EQ_MALLOC=0: off)
        print(f"Loader normalisation, {datetime.datetime.now().isoformat(timespec='minutes')}; machine: "
              f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.1f}; torch {torch.__version__} ({torch.get_num_threads()} threads); malloc {malloc}")
        print(f"{args.kind}s of {args.objects} objects x {args.views} views at {args.size} px, raw shards, batch "
              f"{args.batch_size}, {args.workers} worker threads, warm, best of {args.passes} interleaved passes\n")
        return _normalize_table(src, args)
    orig = export_3diebench(src, work / "orig", workers=args.workers, progress=False)
    roots = {enc: import_3diebench(orig, work / f"native-{enc}", encoding=enc, workers=args.workers,
                                   objects_per_shard=16, progress=False) for enc in ("raw", "jpeg")}
    setup_s = time.perf_counter() - t0
    pairs = args.kind == "pair"
    items = (lambda src_: PairDataset(src_, split=None)) if pairs else (lambda src_: ViewDataset(src_, split=None))
    bs, nw = args.batch_size, args.workers

    def processes(make_dataset: Callable[[], Dataset], root: Path, **kw: Any) -> Callable[[bool], float]:
        """Timer of torch DataLoader worker processes over a fresh dataset (persistent unless cold)."""
        return lambda cold: _time_loader(lambda: DataLoader(make_dataset(), batch_size=bs, num_workers=nw,
                                                            shuffle=True, persistent_workers=not cold, **kw),
                                         root, args.passes, cold)

    def threads(make_dataset: Callable[[], Dataset], root: Path) -> Callable[[bool], float]:
        """Timer of ThreadLoader worker threads over a fresh dataset."""
        return lambda cold: _time_loader(lambda: ThreadLoader(make_dataset(), batch_size=bs, num_workers=nw,
                                                              shuffle=True), root, args.passes, cold)

    native = {enc: (lambda enc=enc: items(NativeDataset(roots[enc]))) for enc in roots}
    cases: list[tuple[str, Callable[[bool], float]]] = [
        ("(a) original layout, reference-style (PIL + transforms + np.load per view), processes",
         processes(lambda: ReferenceStyle(orig, args.views, args.size, pairs), orig)),
        ("(a2) original layout, ThreeDIEBenchFolder (PIL + np.load per view, uint8), processes",
         processes(lambda: items(ThreeDIEBenchFolder(orig)), orig, collate_fn=collate)),
        ("(b) native raw shards (mmap), ThreadLoader", threads(native["raw"], roots["raw"])),
        ("(b2) native raw shards (mmap), processes", processes(native["raw"], roots["raw"], collate_fn=collate)),
        ("(c) native JPEG shards, CPU decode_jpeg, ThreadLoader", threads(native["jpeg"], roots["jpeg"])),
        ("(c2) native JPEG shards, CPU decode_jpeg, processes",
         processes(native["jpeg"], roots["jpeg"], collate_fn=collate)),
    ]
    caches = ("warm", "cold") if args.cache == "both" else (args.cache,)
    results = {name: {c: fn(c == "cold") for c in caches} for name, fn in cases}
    if torch.cuda.is_available() and not pairs:
        results["(d) native JPEG shards, GPU batched decode_jpeg (main process)"] = {
            "warm": _time_gpu_decode(roots["jpeg"], args.batch_size)}

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    sizes = {k: sum(f.stat().st_size for f in r.rglob("*") if f.is_file()) / 2**20
             for k, r in (("original", orig), ("raw", roots["raw"]), ("jpeg", roots["jpeg"]))}
    print(f"Loader benchmark, {datetime.datetime.now().isoformat(timespec='minutes')}; machine: "
          f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPUs, GPU {gpu}; "
          f"torch {torch.__version__}")
    print(f"{args.kind}s of {args.objects} objects x {args.views} views at {args.size} px ({args.content} content; "
          f"on disk MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in sizes.items()) + f"), batch {args.batch_size}, "
          f"{args.workers} workers, best of {args.passes} passes; setup {setup_s:.0f} s\n")
    print("| loader | " + " | ".join(f"{c} views/s | {c} vs (a)" for c in caches) + " |")
    print("|---|" + "---:|---:|" * len(caches))
    base = results[cases[0][0]]
    for name, rates in results.items():
        cells = [f"{rates[c]:,.0f} | {rates[c] / base[c]:.1f}x" if c in rates else "- | -" for c in caches]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
