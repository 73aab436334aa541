"""`ssl-eq orbit RUN_DIR [RUN_DIR ...] --out DIR`: invariance / equivariance along orbits of one latent."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ssl_eq.config import apply_overrides
from ssl_eq.orbit.latents import LATENT_ORBITS, RANGES


# name -> the one line `ssl-eq --help` shows (read without calling register, which imports more)
COMMANDS = {
    "orbit": "render objects along an orbit of one latent and measure each run's (in/equi)variance",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from ssl_eq.renderers.sources import SOURCES

    p = subparsers.add_parser(
        "orbit", help=COMMANDS["orbit"],
        description="Render val objects of each run's dataset (same source and scene) along a one-parameter orbit "
                    "of one latent, every other latent at the object's view 0; encode every frame with each run and "
                    "plot the invariance error, the predictor's equivariance error and Hit@1, the rotation probe's "
                    "error and capsule pose errors along it. Writes RUN/orbit/orbit.json + PNGs and comparison PNGs "
                    "in --out.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders")
    p.add_argument("--out", required=True, help="folder for the figures comparing the runs")
    p.add_argument("--latent", action="append", default=None,
                   help=f"latent to sweep (repeat for several orbits; default: every latent of each run's dataset); "
                        f"two comma-separated latents (e.g. rot_z,spot_hue) sweep a --steps x --steps grid, shown "
                        f"as heatmaps: {', '.join(LATENT_ORBITS)}")
    p.add_argument("--range", default="full", choices=RANGES,
                   help="full: the whole circle for angles and hues (extrapolation); dataset: the training range")
    p.add_argument("--steps", type=int, default=24, help="frames along each orbit (>= 2)")
    p.add_argument("--objects", type=int, default=8, help="objects (class-balanced val objects of the dataset)")
    p.add_argument("--source", default=None, choices=sorted(SOURCES),
                   help="render objects of another source instead (default: the run's dataset's)")
    p.add_argument("--source-root", default=None, help="root folder of --source mesh-folder / shapenet")
    p.add_argument("--data", default=None, help="dataset folder of the runs, when it moved since training "
                                                "(default: the one each RUN_DIR/config.yaml names)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (rendering and encoding)")
    p.add_argument("--batch-size", type=int, default=128, help="frames per renderer / encoder call")
    p.add_argument("--html", action="store_true",
                   help="also write OUT/orbit_explorer.html: an interactive, self-contained explorer (slider over Δ, "
                        "frames, per-object curves, runs overlaid)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.epilog = ("KEY=VALUE overrides of the orbit options (Hydra syntax), e.g. steps=12 objects=4 range=dataset "
                "latents=[rot_x,floor_hue]")
    p.set_defaults(func=_run, accepts_overrides=True, thread_policy=True)


def _run(args: argparse.Namespace) -> int:
    from ssl_eq.orbit.runner import OrbitOptions, analyse

    latents = [",".join(n.strip() for n in item.split(",")) for item in args.latent] if args.latent else None
    opts = OrbitOptions(latents=latents, range=args.range, steps=args.steps, objects=args.objects,
                        source=args.source, source_root=args.source_root, data=args.data, device=args.device,
                        batch_size=args.batch_size, html=args.html)
    words = [*args.run_dirs, *args.overrides]  # a run folder may contain "=" (a sweep job's folder): it exists
    run_dirs = [w for w in words if "=" not in w or Path(w).exists()]
    overrides = [w for w in words if w not in run_dirs]
    opts = OrbitOptions(**apply_overrides(dataclasses.asdict(opts), overrides, "ssl-eq orbit's options"))
    return analyse(run_dirs, args.out, opts, debug=args.debug)
