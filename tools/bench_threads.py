"""Throughput alone and beside busy processes: the thread policy (`auto`) against torch's default thread count.

Each measurement is a fresh `ssl-eq` process, run alone or while `--busy` single-threaded busy-loop processes
(started and stopped here) compete for the CPUs. "before" is today's default set-up: torch's own thread count
(one per core), fixed (SSL_EQ_THREADS=N, nothing watched); "after" is SSL_EQ_THREADS=auto. Repeats interleave
every (workload, policy, load) cell; the table shows medians.

- pretrain: `experiment=demo_sie` for --steps steps on the demo's scene; steps/s over the run's training wall time
  (metrics.json wall_s), with the thread counts the policy used (metrics.json "threads");
- render: `ssl-eq render` of --render-objects objects x 8 views at 32 px; images/s over the process's wall time;
- probe: `ssl-eq probe` of the pretrained run (a fresh copy each time: no cached features), --probe-epochs epochs;
  runs/s over the process's wall time.

    python tools/bench_threads.py                       # 2 busy processes, 3 repeats
    python tools/bench_threads.py --repeats 2 --workloads pretrain
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

POLICIES = {"before": str(torch.get_num_threads()), "after": "auto"}
LOADS = ("alone", "busy")


def ssl_eq(*argv: str, threads: str) -> float:
    """Run `ssl-eq ARGV` with SSL_EQ_THREADS=threads; its wall time in s (raises with its output on failure)."""
    env = {**os.environ, "SSL_EQ_THREADS": threads}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ssl_eq.cli", *argv], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"ssl-eq {' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-2000:]}"
                         f"{done.stderr[-2000:]}")
    return time.perf_counter() - start


class Busy:
    """`n` single-threaded busy-loop processes while the block runs."""

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def __enter__(self) -> Busy:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def pretrain(args, tmp: Path, k: int, threads: str) -> tuple[float, str]:
    run = tmp / f"run_{k}"
    ssl_eq("pretrain", "experiment=demo_sie", f"data.root={tmp / 'data'}", f"run_dir={run}", "logger=none",
           f"trainer.max_steps={args.steps}", "trainer.enable_progress_bar=false", "data.image_size=32",
           threads=threads)
    summary = json.loads((run / "metrics.json").read_text())
    used = ", ".join(f"{n}: {s:.0f} s" for n, s in summary["threads"]["seconds_at"].items())
    shutil.rmtree(run)
    return summary["global_step"] / summary["wall_s"], used


def render(args, tmp: Path, k: int, threads: str) -> tuple[float, str]:
    out = tmp / f"render_{k}"
    wall = ssl_eq("render", "--out", str(out), "--objects", str(args.render_objects), "--views", "8", "--size", "32",
                  "--camera", "closeup", "--no-preview", "--no-progress", "--yes", threads=threads)
    shutil.rmtree(out)
    return args.render_objects * 8 / wall, ""


def probe(args, tmp: Path, k: int, threads: str) -> tuple[float, str]:
    run = tmp / f"probe_{k}"
    shutil.copytree(tmp / "trained", run)
    wall = ssl_eq("probe", str(run), "--epochs", str(args.probe_epochs), "--device", "cpu", threads=threads)
    shutil.rmtree(run)
    return 1 / wall, ""


WORKLOADS = {"pretrain": (pretrain, "steps/s"), "render": (render, "images/s"), "probe": (probe, "probes/s")}


def prepare(args, tmp: Path) -> None:
    ssl_eq("render", "--out", str(tmp / "data"), "--objects", str(args.objects), "--views", "8", "--size", "32",
           "--camera", "closeup", "--rotation-axes", "z", "--rotation-range", "120", "--no-preview", "--no-progress",
           "--yes", threads="auto")
    if "probe" in args.workloads:
        ssl_eq("pretrain", "experiment=demo_sie", f"data.root={tmp / 'data'}", f"run_dir={tmp / 'trained'}",
               "logger=none", "trainer.max_steps=50", "trainer.enable_progress_bar=false", "data.image_size=32",
               threads="auto")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--busy", type=int, default=2, help="busy-loop processes beside the measured one")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--objects", type=int, default=120, help="objects of the training dataset")
    p.add_argument("--steps", type=int, default=200, help="pretrain steps per measurement")
    p.add_argument("--render-objects", type=int, default=120)
    p.add_argument("--probe-epochs", type=int, default=5)
    args = p.parse_args()

    cpus = len(os.sched_getaffinity(0))
    print(f"# thread policy — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {cpus} CPUs, "
          f"load before {os.getloadavg()[0]:.1f}, torch {torch.__version__}, before = {POLICIES['before']} threads "
          f"(torch's default), busy processes: {args.busy}, repeats: {args.repeats}\n", flush=True)
    results: dict[tuple[str, str, str], list[float]] = {}
    used: dict[tuple[str, str, str], list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as t:
        tmp = Path(t)
        prepare(args, tmp)
        k = 0
        for rep in range(args.repeats):
            for name in args.workloads:
                for policy, threads in POLICIES.items():
                    for load in LOADS:
                        with Busy(args.busy if load == "busy" else 0):
                            value, note = WORKLOADS[name][0](args, tmp, k, threads)
                        k += 1
                        results.setdefault((name, policy, load), []).append(value)
                        used.setdefault((name, policy, load), []).append(note)
                        print(f"  repeat {rep + 1}: {name} {policy} {load}: {value:.3g} {WORKLOADS[name][1]}"
                              + (f" (threads {note})" if note else ""), flush=True)
    print("\n| workload | policy | alone | beside busy | busy / alone | alone vs before alone |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.workloads:
        unit = WORKLOADS[name][1]
        base = statistics.median(results[(name, "before", "alone")])
        for policy in POLICIES:
            alone = statistics.median(results[(name, policy, "alone")])
            busy = statistics.median(results[(name, policy, "busy")])
            print(f"| {name} ({unit}) | {policy} | {alone:.3g} | {busy:.3g} | **{busy / alone:.2f}x** | "
                  f"{alone / base:.2f}x |")
    if "pretrain" in args.workloads:
        print("\nthreads the policy used (pretrain, after, busy):", "; ".join(used[("pretrain", "after", "busy")]))


if __name__ == "__main__":
    main()
