"""`ssl-eq demo`: the whole pipeline on the embedded procedural objects, sized for a laptop CPU.

render (procedural, small images) -> pretrain SIE and VICReg (tiny conv net) -> probe -> report.
Every step is the public CLI command a researcher would run at full scale, printed before it runs;
re-running resumes (complete shards and finished runs are kept).
"""
from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

METHODS = ("sie", "vicreg")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="render -> pretrain SIE & VICReg -> probe -> report, on CPU in minutes",
                       description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_out", help="output folder (dataset, runs, report)")
    p.add_argument("--objects", type=int, default=480, help="procedural objects to render")
    p.add_argument("--views", type=int, default=12, help="views per object")
    p.add_argument("--size", type=int, default=32, help="image size in pixels")
    p.add_argument("--steps", type=int, default=2000, help="pretraining steps per method")
    p.add_argument("--probe-epochs", type=int, default=30, help="epochs of each probe")
    p.add_argument("--device", default="auto", help="render device: auto | cpu | cuda")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run_demo)


def _step(argv: list[str]) -> None:
    from .cli import main

    print(f"\n$ ssl-eq {shlex.join(argv)}", flush=True)
    t = time.time()
    code = main(argv)
    if code:
        raise SystemExit(f"demo step failed (exit {code}): ssl-eq {shlex.join(argv)}")
    print(f"  ({time.time() - t:.0f} s)", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    data, report = out / "data", out / "report"
    start = time.time()
    _step(["render", "--out", str(data), "--objects", str(args.objects), "--views", str(args.views),
           "--size", str(args.size), "--device", args.device, "--objects-per-shard", "60"])
    runs = []
    for method in METHODS:
        run_dir = out / "runs" / method
        _step(["pretrain", f"experiment=demo_{method}", f"data.root={data}", f"run_dir={run_dir}",
               f"trainer.max_steps={args.steps}"])
        _step(["probe", str(run_dir), "--epochs", str(args.probe_epochs)])
        runs.append(str(run_dir))
    _step(["report", *runs, "--out", str(report), "--title", "ssl_eq demo (procedural objects, CPU)"])
    print(f"\ndemo finished in {(time.time() - start) / 60:.1f} min")
    print(f"report: {report / 'report.md'} and {report / 'report.html'}")
    print(f"dataset contact sheet: {data / 'preview.png'}")
    return 0
