"""Loss-block cost: the VICReg covariance term, lightly's masked form (before) vs ssl_eq's (after).

Forward + backward of one call on (B, D) embeddings, CPU time of this process (robust to other jobs on a
shared CPU), one torch thread, repeats interleaved (before, after, before, after, ...); the median is reported
with the ratio from the same run.
Usage: python tools/bench_losses.py [--batch 64] [--dims 512 2048 8192] [--repeats 7]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch
from lightly.loss.vicreg_loss import covariance_loss

from ssl_eq.methods.blocks.losses import covariance_term


def cpu_seconds(fn, z: torch.Tensor) -> float:
    x = z.clone().requires_grad_(True)
    t0 = time.process_time()
    fn(x).backward()
    return time.process_time() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dims", type=int, nargs="+", default=[512, 2048, 8192])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"# covariance term — {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"`python tools/bench_losses.py --batch {args.batch} --repeats {args.repeats}`: fwd + bwd, CPU ms, "
          "1 thread, median of interleaved repeats\n")
    print("| B | D | lightly covariance_loss ms | ssl_eq covariance_term ms | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|")
    for d in args.dims:
        z = torch.randn(args.batch, d, generator=torch.Generator().manual_seed(d))
        before, after = [], []
        for fn in (covariance_loss, covariance_term):  # warm-up
            cpu_seconds(fn, z)
        for _ in range(args.repeats):
            before.append(cpu_seconds(covariance_loss, z))
            after.append(cpu_seconds(covariance_term, z))
        diff = (covariance_loss(z) - covariance_term(z)).abs().item()
        b, a = statistics.median(before) * 1e3, statistics.median(after) * 1e3
        print(f"| {args.batch} | {d} | {b:.1f} | {a:.1f} | **{b / a:.2f}x** | {diff:.1e} |")


if __name__ == "__main__":
    main()
