"""`ssl-eq probe RUN_DIR`: probes on a trained run's frozen features."""
from __future__ import annotations

import argparse


# name -> the one line `ssl-eq --help` shows (read without calling register, which imports more)
COMMANDS = {
    "probe": "probe a run's frozen features (linear, rotation, colour, translation, predictor)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from ssl_eq.config import group_options

    p = subparsers.add_parser(
        "probe", help=COMMANDS["probe"],
        description="Extract frozen features of RUN_DIR's checkpoint (cached in RUN_DIR/probe/), train the probes "
                    "of a protocol (ssl_eq/configs/probe/<protocol>.yaml) and write RUN_DIR/probe/probe.json, TensorBoard "
                    "scalars and PNGs. After training a run on, re-run this command: `ssl-eq report` marks probe results "
                    "computed on an older checkpoint as stale.")
    p.add_argument("run_dir", help="run folder with config.yaml and checkpoints/last.ckpt")
    p.epilog = ("KEY=VALUE overrides of the protocol's config (any number, Hydra syntax), e.g. "
                "probes.linear.epochs=5 extraction.batch_size=64 probes.rotation.hidden=[256]")
    p.add_argument("--data", help="dataset folder (default: the one named in RUN_DIR/config.yaml)")
    p.add_argument("--probes", default="all",
                   help="'all' or a comma-separated list of: linear, rotation, view_rotation, colour, translation, "
                        "predictor")
    p.add_argument("--epochs", type=int, help="override every probe's training epochs (quick runs)")
    p.add_argument("--device", default="cpu", help="cpu | cuda[:N] | auto: device for extraction and probe heads")
    p.add_argument("--protocol", help="probe protocol preset in ssl_eq/configs/probe/, one of "
                                      f"{group_options('probe')}: default (fresh pairs, held-out epoch selection) or "
                                      "sie_reference (the SIE / EquiCaps papers' protocol); default: default")
    p.add_argument("--config", help="probe config YAML file (instead of --protocol)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=_run, accepts_overrides=True, thread_policy=True)


def _run(args: argparse.Namespace) -> int:
    from ssl_eq.probes.runner import format_summary, run_probes
    from ssl_eq.utils.device import resolve_device

    device = str(resolve_device(args.device))  # a missing GPU is refused before any work
    report = run_probes(args.run_dir, data=args.data, probes=args.probes, epochs=args.epochs, device=device,
                        config=args.config, protocol=args.protocol, overrides=args.overrides)
    print(format_summary(report))
    return 0
