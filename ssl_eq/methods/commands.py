"""`ssl-eq pretrain`: registered with the `ssl-eq` dispatcher; its command line is the Hydra app's (methods/app.py)."""
from __future__ import annotations

import argparse


# name -> the one line `ssl-eq --help` shows (read without calling register, which imports more)
COMMANDS = {
    "pretrain": "self-supervised pretraining (SIE, VICReg, SimCLR, BYOL, ...); a Hydra app: ssl-eq pretrain --help",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain", help=COMMANDS["pretrain"], add_help=False)
    p.set_defaults(func=run, own_argv=True)


def run(args: argparse.Namespace) -> int:
    from ssl_eq.methods.app import main

    return main(args.argv)
