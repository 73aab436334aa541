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

Baseline comparison (`--baseline-commit REV`): seq-JEPA and EquiCaps whole training steps (Lightning's fit loop:
augmentation, step loss, online probes, logging, backward, Adam, seq-JEPA's EMA update) of this tree against
commit REV, checked out with `git worktree add` into a temporary folder. Both run in subprocesses (PYTHONPATH
pointing at their tree) on the same saved batches with the same seed, repeats interleaved; a step is the time
between consecutive on_train_batch_start calls (wall and process CPU), the loss column compares the two trees'
losses: step 1 (same weights and batch) within --loss-rtol, and the drift over the later steps.

    python tools/bench_train.py --baseline-commit 63d3562                     # demo + ResNet-18 set-ups
    python tools/bench_train.py --baseline-commit 63d3562 --setups demo --repeats 5
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import pytorch_lightning as pl
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


# ------------------------------------------------------------------ training step vs a baseline commit
# set-up -> (image size, batch size, method -> config overrides); the ResNet-18 size / batch follow --large-*
SETUPS = {
    "demo": (32, 64, {"seqjepa": ["experiment=demo_seqjepa"], "equicaps": ["experiment=demo_equicaps"]}),
    "resnet18": (None, None, {"seqjepa": ["method=seqjepa", "backbone=resnet18"],
                              "equicaps": ["method=equicaps_3x3", "backbone=resnet18_sie"]}),
}


class StepClock(pl.Callback):
    """Wall and process CPU time at each on_train_batch_start, and each step's returned loss."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.losses: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def fit_child(spec_path: Path, out_path: Path) -> None:
    """Run in a subprocess whose PYTHONPATH picks the tree: fit on the saved batches, write the step times."""
    import ssl_eq
    from ssl_eq.methods import build_method, compose_config
    spec = json.loads(spec_path.read_text())
    with contextlib.suppress(ImportError):  # the process set-up `ssl-eq pretrain` does (absent at older commits)
        from ssl_eq.utils.memory import keep_large_blocks
        keep_large_blocks()
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    batches = torch.load(spec["batches"])
    cfg = compose_config(spec["overrides"])
    cfg.data.num_classes, cfg.data.latent_schema = spec["num_classes"], spec["latent_schema"]
    torch.manual_seed(0)
    model = build_method(OmegaConf.to_container(cfg, resolve=True))
    clock = StepClock()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=len(batches), logger=False, callbacks=[clock],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, precision=cfg.trainer.precision,
                         log_every_n_steps=cfg.trainer.log_every_n_steps)
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    warm = spec["warmup"]  # step i lasts from its batch start to the next one's (the last batch only closes)
    wall = [1000 * (b - a) for a, b in zip(clock.wall[warm:], clock.wall[warm + 1:])]
    cpu = [1000 * (b - a) for a, b in zip(clock.cpu[warm:], clock.cpu[warm + 1:])]
    out_path.write_text(json.dumps({"wall_ms": wall, "cpu_ms": cpu, "losses": clock.losses,
                                    "ssl_eq": str(Path(ssl_eq.__file__).parent), "threads": torch.get_num_threads()}))


def save_batches(method: str, overrides: list[str], root: Path, size: int, batch: int, n: int, path: Path) -> dict:
    """n training batches of the synthetic dataset at `root` (this tree's loader) saved to `path`; the spec
    fields the children need."""
    from ssl_eq.methods import compose_config
    cfg = compose_config([*overrides, f"data.root={root}", f"data.image_size={size}"])
    method_cls = get_method(cfg.method.name)
    dm = SSLDataModule(root, kind=method_cls.batch_kind, batch_size=batch, num_workers=0,
                       num_views=method_cls.item_views(cfg.data, cfg.method), pin_memory=False,
                       persistent_workers=False)
    batches: list[dict] = []
    while len(batches) < n:
        batches += list(dm.train_dataloader())
    torch.save(batches[:n], path)
    return {"num_classes": dm.info["num_classes"], "latent_schema": list(dm.info["latent_schema"])}


def run_child(tree: Path, spec: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, __file__, "--child", str(spec), str(out)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        raise RuntimeError(f"training run in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def loss_check(base: list[float], now: list[float], rtol: float) -> str:
    """'yes' / 'NO' from step 1's loss (same weights, same batch: the computation itself), with the largest relative
    difference over the later steps (those follow optimiser updates, so float rounding compounds)."""
    rel = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(base, now)]
    return f"{'yes' if rel[0] <= rtol else 'NO'} (step 1 {rel[0]:.0e}; steps 2-{len(rel)} <= {max(rel[1:]):.0e})"


def bench_baseline(args: argparse.Namespace) -> None:
    """This tree vs `--baseline-commit` on each set-up x method; markdown table of median ms/step."""
    here = Path(__file__).resolve().parents[1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base_tree = tmp / "baseline"
        subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", str(base_tree),
                        args.baseline_commit], check=True, capture_output=True)
        try:
            for setup in args.setups:
                size, batch, method_overrides = SETUPS[setup]
                size, batch = size or args.large_size, batch or args.large_batch
                root = tmp / f"data_{setup}"
                n = args.warmup + args.steps + 1
                make_synthetic_dataset(root, num_objects=n * batch * 4 // 3 + 8, views=4, size=size, num_classes=5)
                for method in args.baseline_methods:
                    overrides = [*method_overrides[method], f"data.root={root}", f"data.image_size={size}",
                                 f"data.batch_size={batch}"]
                    spec = {"overrides": overrides, "batches": str(tmp / f"{setup}_{method}.pt"),
                            "warmup": args.warmup, "threads": args.threads}
                    spec.update(save_batches(method, overrides, root, size, batch, n, Path(spec["batches"])))
                    spec_path = tmp / f"{setup}_{method}.json"
                    spec_path.write_text(json.dumps(spec))
                    runs: dict[str, list[dict]] = {"baseline": [], "now": []}
                    for r in range(args.repeats):  # interleaved, the order alternating
                        order = ("baseline", "now") if r % 2 == 0 else ("now", "baseline")
                        for which in order:
                            tree = base_tree if which == "baseline" else here
                            runs[which].append(run_child(tree, spec_path, tmp / f"out_{which}.json"))
                    row = {"method": method, "setup": f"{setup} ({size} px, batch {batch})",
                           "threads": runs["now"][0]["threads"]}
                    for which, rs in runs.items():
                        row[which] = {k: statistics.median(statistics.median(x[k]) for x in rs)
                                      for k in ("wall_ms", "cpu_ms")}
                        row[which]["losses"] = rs[0]["losses"]
                    row["loss"] = loss_check(row["baseline"]["losses"], row["now"]["losses"], args.loss_rtol)
                    rows.append(row)
                    b, c = row["baseline"], row["now"]
                    print(f"{method:8s} {row['setup']:28s} baseline {b['wall_ms']:8.1f} ms  now {c['wall_ms']:8.1f} ms"
                          f"  x{b['wall_ms'] / c['wall_ms']:.2f} (CPU x{b['cpu_ms'] / c['cpu_ms']:.2f})"
                          f"  loss equal: {row['loss']}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(base_tree)], check=False)
    print(f"\nwhole training step (Lightning fit, fp32, CPU, {rows[0]['threads']} threads), median of "
          f"{args.repeats} interleaved runs x {args.steps} steps; baseline = {args.baseline_commit}\n")
    print("| method | set-up | baseline ms/step | now ms/step | speed-up (wall) | speed-up (CPU time) | loss equal? |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b, c = r["baseline"], r["now"]
        print(f"| {r['method']} | {r['setup']} | {b['wall_ms']:.1f} | {c['wall_ms']:.1f} | "
              f"{b['wall_ms'] / c['wall_ms']:.2f}x | {b['cpu_ms'] / c['cpu_ms']:.2f}x | {r['loss']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["vicreg", "simclr", "byol", "sie", "seqjepa", "equimod", "augself"])
    p.add_argument("--equicaps", action="store_true", help="only the EquiCaps 256 px checkpointing comparison")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--device", nargs="+", default=None, help="default: cpu, plus cuda when available")
    p.add_argument("--batch-size", type=int, default=None,
                   help="pairs / sequences per step (default 4 on CPU, 256 on GPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (after --warmup; default 2, baseline 10)")
    p.add_argument("--warmup", type=int, default=None, help="default 1, baseline comparison 3")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--objects", type=int, default=None, help="synthetic objects (default: 4 batches' worth)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    p.add_argument("--baseline-commit", default=None,
                   help="compare seq-JEPA / EquiCaps training steps of this tree with this commit (e.g. 63d3562)")
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--baseline-methods", nargs="+", default=["seqjepa", "equicaps"], choices=["seqjepa", "equicaps"])
    p.add_argument("--large-size", type=int, default=64, help="image size of the resnet18 set-up")
    p.add_argument("--large-batch", type=int, default=8, help="batch size of the resnet18 set-up")
    p.add_argument("--repeats", type=int, default=3, help="runs per tree (baseline comparison)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the baseline comparison's runs (default: torch's own, one per core)")
    p.add_argument("--loss-rtol", type=float, default=1e-5, help="relative tolerance of the step-1 loss")
    p.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        fit_child(*args.child)
        return
    if args.baseline_commit:
        args.steps, args.warmup = args.steps or 10, 3 if args.warmup is None else args.warmup
        bench_baseline(args)
        return
    args.steps, args.warmup = args.steps or 2, 1 if args.warmup is None else args.warmup
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
