"""`ssl-eq pretrain`: registered with the `ssl-eq` dispatcher; its command line is the Hydra app's (methods/app.py)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain", help="self-supervised pretraining (SIE, VICReg, SimCLR, BYOL, ...); a Hydra app: "
                         "ssl-eq pretrain --help", add_help=False)
    p.set_defaults(func=run, own_argv=True)


def run(args: argparse.Namespace) -> int:
    from ssl_eq.methods.app import main

    return main(args.argv)
