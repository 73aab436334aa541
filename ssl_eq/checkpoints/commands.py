"""`ssl-eq import-checkpoint` / `ssl-eq export-checkpoint`: reference checkpoint files <-> run folders."""
from __future__ import annotations

import argparse


# name -> the one line `ssl-eq --help` shows (read without calling register, which imports more)
COMMANDS = {
    "import-checkpoint": "a reference checkpoint (SIE, EquiCaps, seq-JEPA) as a run folder",
    "export-checkpoint": "write a run in a reference checkpoint layout",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from ssl_eq.checkpoints.base import available_formats

    formats = ", ".join(available_formats())
    p = subparsers.add_parser(
        "import-checkpoint", help=COMMANDS["import-checkpoint"],
        description="Write a run folder (config.yaml, checkpoints/last.ckpt, source.json) from a checkpoint file of "
                    "a reference code; `ssl-eq probe / orbit / report` then use it like a trained run. Every tensor "
                    "is accounted for: unknown, missing or mis-shaped tensors are refused with their names.",
        epilog="overrides: KEY=VALUE of the run config, e.g. method.aggregator.num_heads=8 (not in a seq-JEPA file) "
               "or method.frame=base (EquiCaps 4×4 trained with --base-frame)")
    p.add_argument("file", help="checkpoint file (model.pth, final_weights.pth, ckpt_wandb-..._epoch_N.pth, ...)")
    p.add_argument("--out", required=True, help="new run folder")
    p.add_argument("--format", help=f"file layout: {formats} (default: detected when unambiguous)")
    p.add_argument("--data", help="dataset folder the run is probed on (sets data.root, classes and latents)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=_import, accepts_overrides=True)

    e = subparsers.add_parser(
        "export-checkpoint", help=COMMANDS["export-checkpoint"],
        description="Write RUN's model as the reference code's file, for its evaluation scripts "
                    "(SIE --weights-file, EquiCaps --weights-file, seq-JEPA --load-path).")
    e.add_argument("run_dir", help="run folder")
    e.add_argument("--format", required=True, help=f"file layout: {formats}")
    e.add_argument("--out", required=True, help="file to write")
    e.add_argument("--debug", action="store_true", help="show tracebacks")
    e.set_defaults(func=_export)


def _import(args: argparse.Namespace) -> int:
    from ssl_eq.checkpoints import import_checkpoint

    record = import_checkpoint(args.file, args.out, fmt=args.format, data=args.data, overrides=args.overrides)
    print(f"imported {record['format']} checkpoint {args.file} (sha256 {record['sha256'][:12]}) into {args.out}"
          + "".join(f"\n  {n}" for n in record["notes"]))
    return 0


def _export(args: argparse.Namespace) -> int:
    from ssl_eq.checkpoints import export_checkpoint

    path = export_checkpoint(args.run_dir, args.format, args.out)
    print(f"wrote {args.run_dir} as {args.format} checkpoint {path}")
    return 0
