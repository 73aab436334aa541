"""Training throughput per method: images/s, fp32 vs AMP (bf16) + channels_last, data-wait fraction.

Runs the methods' real training step (on-device augmentation, forward, loss, backward, optimiser) fed
by SSLDataModule from a synthetic native dataset rendered at the benchmark size. Images/s counts
views (2 per pair; M + 1 per seq-JEPA sequence, M = method.seq_len = 3). Data wait = time blocked on the
loader / (wait + step time).

EquiCaps (`--equicaps`): resnet18_sie at 256 px, 3×3 and 4×4 (3DIEBench-T data), fp32, routing activation
checkpointing off vs on; each run in its own process so its peak memory is its own: CUDA max allocated, or on
CPU the process's peak RSS (ru_maxrss) minus its RSS before the first step.

    python tools/bench_train.py                    # CPU (and GPU when available), ResNet-18, 128 px
    python tools/bench_train.py --device cuda --batch-size 256 --steps 20
    python tools/bench_train.py --equicaps --steps 2 --batch-size 4
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ssl_eq.datasets import SSLDataModule, make_synthetic_dataset
from ssl_eq.methods import build_method, compose_config, get_method

MODES = {  # name -> (autocast dtype or None, channels_last)
    "fp32": (None, False),
    "bf16+channels_last": (torch.bfloat16, True),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# EquiCaps runs: (label, method config, dataset variant), each with routing checkpointing off and on
EQUICAPS = (("equicaps 3x3", "equicaps_3x3", "3diebench"), ("equicaps 4x4", "equicaps_4x4", "3diebench-t"))
EQUICAPS_SIZE, EQUICAPS_BACKBONE = 256, "resnet18_sie"


def rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(method: str, mode: str, data_root: Path, args: argparse.Namespace, device: torch.device,
          overrides: tuple[str, ...] = ()) -> dict:
    dtype, channels_last = MODES[mode]
    cfg = compose_config([f"method={method}", f"backbone={args.backbone}", f"data.root={data_root}",
                          f"data.image_size={args.size}", f"trainer.channels_last={channels_last}", *overrides])
    method_cls = get_method(cfg.method.name)
    dm = SSLDataModule(data_root, kind=method_cls.batch_kind, batch_size=args.batch_size, num_workers=args.workers,
                       num_views=method_cls.item_views(cfg.data, cfg.method), pin_memory=device.type == "cuda",
                       persistent_workers=False)
    info = dm.info
    cfg.data.num_classes, cfg.data.latent_schema = info["num_classes"], info["latent_schema"]
    torch.manual_seed(0)
    model = build_method(OmegaConf.to_container(cfg, resolve=True)).to(device)
    model.setup("fit")  # the layout `ssl-eq pretrain` uses: inputs and weights in trainer.channels_last's format
    model.total_steps = args.steps + args.warmup
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    wait = compute = 0.0
    images = steps = 0
    loader = iter(dm.train_dataloader())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = rss_mib()
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        try:
            batch = next(loader)
        except StopIteration:
            loader = iter(dm.train_dataloader())
            batch = next(loader)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        sync(device)
        t1 = time.perf_counter()
        with autocast:
            views, action = model.augment_views(batch["images"])
            out = model.step_loss(views, {**batch, "aug_action": action})
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sync(device)
        t2 = time.perf_counter()
        if i >= args.warmup:
            wait, compute = wait + t1 - t0, compute + t2 - t1
            images += batch["images"].shape[0] * batch["images"].shape[1]
            steps += 1
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda"
            else rss_mib() - rss_before)
    return {"method": method, "mode": mode, "device": str(device), "images_per_s": images / (wait + compute),
            "step_ms": 1000 * (wait + compute) / steps, "data_wait": wait / (wait + compute), "peak_mib": peak}


def _bench_child(queue: multiprocessing.Queue, *bench_args) -> None:
    queue.put(bench(*bench_args))


def bench_isolated(*bench_args) -> dict:
    """`bench` in a fresh process (spawn), so the CPU peak RSS belongs to that run alone."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_bench_child, args=(queue, *bench_args))
    proc.start()
    row = queue.get()
    proc.join()
    return row


def bench_equicaps(args: argparse.Namespace, devices: list[str], tmp: Path) -> None:
    """EquiCaps 3×3 / 4×4 at 256 px: routing checkpointing off vs on (images/s, peak memory)."""
    rows = []
    run_args = argparse.Namespace(**{**vars(args), "size": EQUICAPS_SIZE, "backbone": EQUICAPS_BACKBONE})
    for dev in devices:
        device = torch.device(dev)
        bs = args.batch_size or (256 if device.type == "cuda" else 4)
        run_args.batch_size = bs
        for label, method, variant in EQUICAPS:
            root = tmp / f"equicaps_{variant}_{bs}"
            if not root.exists():
                make_synthetic_dataset(root, num_objects=args.objects or 4 * bs * 4 // 3 + 4, views=4,
                                       size=EQUICAPS_SIZE, num_classes=5, variant=variant)
            pair = [bench_isolated(method, "fp32", root, run_args, device, (f"method.routing.checkpoint={c}",))
                    for c in (False, True)]
            rows.append((label, device, pair))
            print(f"{dev:5s} {label}: " + ", ".join(
                f"checkpoint {c}: {r['images_per_s']:.2f} img/s, peak {r['peak_mib']:.0f} MiB"
                for c, r in zip(("off", "on"), pair)), flush=True)
    print(f"\n{EQUICAPS_BACKBONE}, {EQUICAPS_SIZE} px, fp32, images = views (2 per pair)\n")
    print("| device | method | img/s (no ckpt) | img/s (ckpt) | ckpt / no ckpt | peak MiB (no ckpt) | peak MiB (ckpt) "
          "| ckpt / no ckpt |")
    print("|---|---|---|---|---|---|---|---|")
    for label, device, (a, b) in rows:
        print(f"| {device} | {label} | {a['images_per_s']:.2f} | {b['images_per_s']:.2f} | "
              f"{b['images_per_s'] / a['images_per_s']:.2f}x | {a['peak_mib']:.0f} | {b['peak_mib']:.0f} | "
              f"{b['peak_mib'] / a['peak_mib']:.2f}x |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["vicreg", "simclr", "byol", "sie", "seqjepa", "equimod", "augself"])
    p.add_argument("--equicaps", action="store_true", help="only the EquiCaps 256 px checkpointing comparison")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--device", nargs="+", default=None, help="default: cpu, plus cuda when available")
    p.add_argument("--batch-size", type=int, default=None,
                   help="pairs / sequences per step (default 4 on CPU, 256 on GPU)")
    p.add_argument("--steps", type=int, default=2, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--objects", type=int, default=None, help="synthetic objects (default: 4 batches' worth)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args()
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    if args.equicaps:
        with tempfile.TemporaryDirectory() as tmp:
            bench_equicaps(args, devices, Path(tmp))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for dev in devices:
            device = torch.device(dev)
            bs = args.batch_size or (256 if device.type == "cuda" else 4)
            root = Path(tmp) / f"data_{bs}"
            if not root.exists():
                n = args.objects or 4 * bs * 4 // 3 + 4  # the train split keeps ~3/4 of the objects
                make_synthetic_dataset(root, num_objects=n, views=4, size=args.size, num_classes=5)
            run_args = argparse.Namespace(**{**vars(args), "batch_size": bs})
            for method in args.methods:
                for mode in MODES:
                    rows.append(bench(method, mode, root, run_args, device))
                    r = rows[-1]
                    print(f"{r['device']:5s} {method:8s} {mode:20s} {r['images_per_s']:8.1f} img/s "
                          f"{r['step_ms']:8.1f} ms/step  data wait {100 * r['data_wait']:5.1f} %", flush=True)
    print(f"\n{args.backbone}, {args.size} px, images = views (2 per pair, 4 per seq-JEPA sequence)\n")
    print("| device | method | fp32 img/s | bf16+CL img/s | speed-up | data wait fp32 / bf16+CL |")
    print("|---|---|---|---|---|---|")
    for i in range(0, len(rows), 2):
        a, b = rows[i], rows[i + 1]
        print(f"| {a['device']} | {a['method']} | {a['images_per_s']:.1f} | {b['images_per_s']:.1f} | "
              f"{b['images_per_s'] / a['images_per_s']:.2f}x | {100 * a['data_wait']:.1f} % / "
              f"{100 * b['data_wait']:.1f} % |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
