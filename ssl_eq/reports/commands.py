"""`ssl-eq report RUN_DIR [RUN_DIR ...] --out DIR`: Markdown + HTML report over run folders."""
from __future__ import annotations

import argparse


# name -> the one line `ssl-eq --help` shows (read without calling register, which imports more)
COMMANDS = {
    "report": "report.md + report.html over run folders (metrics, published numbers, curves, plots)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help=COMMANDS["report"],
        description="Collect metrics.json, probe/probe.json and TensorBoard curves of each RUN_DIR into one table "
                    "per probe (one row per run, dash when missing), beside the papers' published numbers.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders")
    p.add_argument("--out", required=True, help="output folder for report.md, report.html and assets/")
    p.add_argument("--title", default="ssl_eq report", help="report title")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ssl_eq.reports.report import write_report

    paths = write_report(args.run_dirs, args.out, title=args.title)
    print(f"wrote {paths['md']}\nwrote {paths['html']}")
    return 0
