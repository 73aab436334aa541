"""`ssl-eq demo`: the whole pipeline on the embedded procedural objects, sized for a laptop CPU.

render (procedural, small close-up images) -> pretrain each method (tiny conv net) -> probe -> report.
Every step is the public CLI command a researcher would run at full scale, printed before it runs;
re-running resumes (complete shards and finished runs are kept). Each method `m` of --methods trains with
ssl_eq/configs/experiment/demo_<m>.yaml; the supervised method is the ceiling row of the report. With --seeds N
each method trains N times (seed=0..N-1, runs/<m>_s<k>); the report groups them (mean ± std over seeds).
"""
from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from .config import config_dir

DEFAULT_METHODS = "sie,vicreg,supervised"
# the scene of the default demo (README "What `make demo` does", BENCHMARKS.md "Quality vs budget"): rotation about
# z within ±120°, a one-parameter group that a supervised net learns across objects at this scale and that SIE's
# linear hypernetwork can follow (over a full turn the canonical quaternion wraps for half of the pairs).
# steps None: each method's demo config sets its own budget (trainer.max_steps).
DEFAULTS = dict(objects=600, views=8, size=32, steps=None, probe_epochs=30, camera="closeup", rotation_axes="z",
                rotation_range=120.0)


def demo_experiments() -> list[str]:
    """Methods that have a demo config (ssl_eq/configs/experiment/demo_<method>.yaml)."""
    return sorted(p.stem[len("demo_"):] for p in (config_dir() / "experiment").glob("demo_*.yaml"))


def parse_methods(spec: str) -> list[str]:
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    missing = [m for m in methods if m not in demo_experiments()]
    if not methods or missing:
        raise ValueError(f"--methods {spec!r}: no demo config for {missing or 'an empty list'}; expected a comma "
                         f"list of {demo_experiments()} (ssl_eq/configs/experiment/demo_<method>.yaml)")
    return methods


def register(sub: argparse._SubParsersAction) -> None:
    from .renderers.scene import CAMERA_PRESETS

    d = DEFAULTS
    p = sub.add_parser("demo", help="render -> pretrain SIE, VICReg & a supervised ceiling -> probe -> report, "
                       "on CPU", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_out", help="output folder (dataset, runs, report)")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma list of methods with a demo config (default {DEFAULT_METHODS})")
    p.add_argument("--objects", type=int, default=d["objects"], help="procedural objects to render")
    p.add_argument("--views", type=int, default=d["views"], help="views per object")
    p.add_argument("--size", type=int, default=d["size"], help="image size in pixels (rendered, trained, probed)")
    p.add_argument("--camera", default=d["camera"], choices=sorted(CAMERA_PRESETS),
                   help="camera preset of ssl-eq render")
    p.add_argument("--rotation-axes", default=d["rotation_axes"], help="Euler axes sampled (ssl-eq render)")
    p.add_argument("--rotation-range", type=float, default=d["rotation_range"],
                   help="degrees: Euler angles ~ U[-range, range] (ssl-eq render)")
    p.add_argument("--steps", type=int, default=d["steps"],
                   help="pretraining steps of every method (default: each demo config's trainer.max_steps)")
    p.add_argument("--probe-epochs", type=int, default=d["probe_epochs"], help="epochs of each probe")
    p.add_argument("--seeds", type=int, default=1,
                   help="train each method this many times (seed=0..N-1); the report shows mean ± std over seeds")
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


def render_argv(args: argparse.Namespace, data: Path) -> list[str]:
    return ["render", "--out", str(data), "--objects", str(args.objects), "--views", str(args.views),
            "--size", str(args.size), "--camera", args.camera, "--rotation-axes", args.rotation_axes,
            "--rotation-range", f"{args.rotation_range:g}", "--device", args.device, "--objects-per-shard", "60"]


def run_dirs(args: argparse.Namespace, method: str, out: Path) -> list[tuple[int, Path]]:
    """(seed, run folder) of each training of `method`: runs/<method> for one seed, runs/<method>_s<k> for more."""
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.seeds == 1:
        return [(0, out / "runs" / method)]
    return [(k, out / "runs" / f"{method}_s{k}") for k in range(args.seeds)]


def pretrain_argv(args: argparse.Namespace, method: str, data: Path, run_dir: Path, seed: int = 0) -> list[str]:
    """The model sees the rendered size (data.image_size), whatever the demo config says; --steps, when given,
    replaces every config's trainer.max_steps."""
    argv = ["pretrain", f"experiment=demo_{method}", f"data.root={data}", f"run_dir={run_dir}",
            f"data.image_size={args.size}", f"seed={seed}"]
    return argv + ([f"trainer.max_steps={args.steps}"] if args.steps is not None else [])


def run_demo(args: argparse.Namespace) -> int:
    methods = parse_methods(args.methods)
    out = Path(args.out)
    plan = [(method, seed, run_dir) for method in methods for seed, run_dir in run_dirs(args, method, out)]
    data, report = out / "data", out / "report"
    start = time.time()
    _step(render_argv(args, data))
    runs = []
    for method, seed, run_dir in plan:
        _step(pretrain_argv(args, method, data, run_dir, seed))
        _step(["probe", str(run_dir), "--epochs", str(args.probe_epochs)])
        runs.append(str(run_dir))
    _step(["report", *runs, "--out", str(report), "--title", "ssl_eq demo (procedural objects, CPU)"])
    print(f"\ndemo finished in {(time.time() - start) / 60:.1f} min")
    print(f"report: {report / 'report.md'} and {report / 'report.html'}")
    print(f"dataset contact sheet: {data / 'preview.png'}")
    return 0
