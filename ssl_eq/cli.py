"""`ssl-eq` command line: a thin dispatcher over each sub-package's `commands.register`."""
from __future__ import annotations

import argparse
import importlib
import sys

# each module defines register(subparsers); heavy imports stay inside the handlers
COMMAND_MODULES = (
    "ssl_eq.renderers.commands",
    "ssl_eq.datasets.commands",
    "ssl_eq.methods.commands",
    "ssl_eq.probes.commands",
    "ssl_eq.reports.commands",
    "ssl_eq.orbit.commands",
    "ssl_eq.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssl-eq",
        description="Invariant / equivariant self-supervised learning: render 3DIEBench-style data, "
        "pretrain, probe and report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real missing dependency, not a sub-package still to come
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; completed shards / checkpoints are kept, re-run the same command to resume",
              file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, KeyError) as e:
        if getattr(args, "debug", False):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ssl-eq {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
