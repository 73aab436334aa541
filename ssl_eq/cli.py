"""`ssl-eq` command line: a thin dispatcher over each sub-package's `commands.register`."""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from collections.abc import Iterable

# each module defines COMMANDS (name -> one-line help) and register(subparsers), which adds its commands' options;
# register's imports (torch, torchmetrics, ...: ~4 s) are paid only for the command being run
COMMAND_MODULES = (
    "ssl_eq.renderers.commands",
    "ssl_eq.datasets.commands",
    "ssl_eq.methods.commands",
    "ssl_eq.probes.commands",
    "ssl_eq.reports.commands",
    "ssl_eq.orbit.commands",
    "ssl_eq.checkpoints.commands",
    "ssl_eq.demo",
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows every option's default, unless it is unset (None), the option is a flag or the help names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0 or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """ArgumentParser with HelpFormatter; sub-command parsers inherit the class (add_subparsers' parser_class)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The `ssl-eq` parser with every command's options, or, given `commands`, only those commands' options (the
    others are listed with their one-line help, enough for `ssl-eq --help` and for naming a mistyped command)."""
    parser = Parser(
        prog="ssl-eq",
        description="Invariant / equivariant self-supervised learning: render 3DIEBench-style data, "
        "pretrain, probe and report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = None if commands is None else set(commands)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real missing dependency, not a sub-package still to come
                raise
            continue
        if wanted is None or wanted & set(module.COMMANDS):
            module.register(sub)
        else:
            for command, line in module.COMMANDS.items():
                sub.add_parser(command, help=line)
    return parser


class ConsoleHandler(logging.Handler):
    """How the CLI shows the library's log records (logger "ssl_eq"): INFO on stdout, warnings and errors on stderr
    as "warning: ..." / "error: ...", always on the current sys.stdout / sys.stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            print(f"{record.levelname.lower()}: {self.format(record)}", file=sys.stderr, flush=True)
        else:
            print(self.format(record), flush=True)


def show_library_logs() -> None:
    """Send the library's INFO-and-above records to the console (once per process)."""
    logger = logging.getLogger("ssl_eq")
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
        logger.setLevel(logging.INFO)


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """A command that parses its own command line (`own_argv`, e.g. the Hydra app `pretrain`) gets the words
    after its name as args.argv; the others are parsed here (key=value words as args.overrides if accepted)."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    sub = commands.get(argv[0]) if argv else None
    if sub is not None and sub.get_default("own_argv"):
        return argparse.Namespace(command=argv[0], func=sub.get_default("func"), argv=argv[1:],
                                  debug="--debug" in argv[1:])
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    return args


def main(argv: list[str] | None = None) -> int:
    show_library_logs()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[:1])  # the command is the first word
    try:  # argparse exits on --help and on bad options (2, with its message): return that code like any other
        args = parse(parser, argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    try:
        return run_command(args)
    except KeyboardInterrupt:
        print("interrupted; completed shards / checkpoints are kept, re-run the same command to resume",
              file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure becomes one actionable line; --debug shows the traceback
        if getattr(args, "debug", False):
            raise
        print(f"ssl-eq {args.command}: error: {describe_error(e)}", file=sys.stderr)
        return 2


def run_command(args: argparse.Namespace) -> int:
    """args.func(args); commands that compute on the CPU (`thread_policy` in their defaults) run under the thread
    policy (ssl_eq.utils.threads; SSL_EQ_THREADS), which is printed with what it used, and keep large freed blocks
    for reuse (ssl_eq.utils.memory; SSL_EQ_MALLOC)."""
    if not getattr(args, "thread_policy", False):
        return int(args.func(args) or 0)
    from ssl_eq.utils.memory import keep_large_blocks
    from ssl_eq.utils.threads import thread_policy

    keep_large_blocks()

    with thread_policy() as policy:
        code = int(args.func(args) or 0)
    used = ", ".join(f"{n} for {s:.0f} s" for n, s in policy.summary()["seconds_at"].items())
    logging.getLogger("ssl_eq").info("%s; used %s", policy.describe(), used)
    return code


# errno -> what to do about it
OS_ERROR_ADVICE = {
    errno.EACCES: "no permission: choose a folder you can write to, or fix its permissions",
    errno.EPERM: "no permission: choose a folder you can write to, or fix its permissions",
    errno.EROFS: "the file system is read-only: choose another output folder",
    errno.ENOSPC: "the disk is full: free space (df -h) or choose another output folder, then re-run the same "
                  "command (completed shards / checkpoints are kept)",
    errno.EDQUOT: "the disk quota is exhausted: free space or choose another output folder, then re-run the same "
                  "command (completed shards / checkpoints are kept)",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "expected a file, got a folder: check the path",
}
# exceptions whose message is written for the user (it names the file or option and what to do)
USER_ERRORS = (ValueError, KeyError, OSError)


def describe_error(e: BaseException) -> str:
    """One line for the user: the toolkit's own messages as they are, system errors with the file and advice,
    anything else marked as unexpected."""
    if isinstance(e, OSError) and e.errno is not None:
        where = f"{e.filename}: " if e.filename else ""
        cause = e.strerror or str(e)
        if not where and e.args and isinstance(e.args[-1], str) and e.args[-1] != cause:
            cause = e.args[-1]
        advice = OS_ERROR_ADVICE.get(e.errno, "check the path and the disk")
        return f"{where}{cause} ({advice}; --debug shows the traceback)"
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    if _is_yaml_error(e):
        return _describe_yaml_error(e)
    if isinstance(e, USER_ERRORS):
        return str(e)
    return (f"unexpected {type(e).__name__}: {e} (re-run with --debug for the traceback; if the input was valid, "
            f"please report it)")


def _is_yaml_error(e: BaseException) -> bool:
    yaml = sys.modules.get("yaml")  # only loaded when a YAML file was read
    return yaml is not None and isinstance(e, yaml.YAMLError)


def _describe_yaml_error(e: BaseException) -> str:
    """A YAML syntax error as `FILE, line L column C: problem (context)`, on one line."""
    mark = getattr(e, "problem_mark", None)
    if mark is None:
        return f"not valid YAML: {' '.join(str(e).split())}"
    context = f" ({e.context})" if getattr(e, "context", None) else ""
    return (f"{mark.name}, line {mark.line + 1} column {mark.column + 1}: not valid YAML: {e.problem}{context}; fix the file")


if __name__ == "__main__":
    sys.exit(main())
