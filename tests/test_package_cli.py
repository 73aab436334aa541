"""CLI help that answers: every option of every command says what it does, its default and its valid values."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from ssl_eq.cli import COMMAND_MODULES, build_parser, main


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(name, parser) of every (sub-)command, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from commands(sub, (*prefix, name))


ALL = dict(commands(build_parser()))


@pytest.mark.parametrize("name", sorted(" ".join(k) for k in ALL))
def test_every_option_shows_its_help_default_and_choices(name):
    parser = ALL[tuple(name.split())]
    text = " ".join(parser.format_help().split())  # unwrapped
    for action in parser._actions:
        if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"ssl-eq {name} {action.option_strings[0]}: no help"
        if action.default is not None and action.nargs != 0:  # flags are off unless given
            shown = f"(default: {action.default})" in text or "default" in action.help
            assert shown, f"ssl-eq {name} {action.option_strings[0]}: default {action.default!r} not shown"
        if action.choices:
            assert "{" + ",".join(map(str, action.choices)) + "}" in text


@pytest.mark.parametrize("option, values", [("--source", {"procedural", "mesh-folder", "shapenet"}),
                                            ("--variant", {"3diebench", "3diebench-t"}),
                                            ("--encoding", {"raw", "jpeg"}),
                                            ("--camera", {"3diebench", "closeup"})])
def test_render_options_with_a_fixed_set_of_values_list_them(option, values):
    action = next(a for a in ALL[("render",)]._actions if option in a.option_strings)
    assert set(action.choices) == values


def test_render_help_says_what_the_defaults_cost(capsys):
    assert main(["render", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "200 objects x 50 views = 10,000 images of 128 px" in text and "CPU-minutes" in text
    assert "(default: 200)" in text and "(default: procedural)" in text


def test_a_bad_choice_is_one_clear_line_and_exit_code_2(capsys, tmp_path):
    assert main(["render", "--out", str(tmp_path), "--encoding", "png"]) == 2
    err = capsys.readouterr().err
    assert "argument --encoding: invalid choice: 'png'" in err and not (tmp_path / "manifest.json").exists()


def test_each_modules_command_table_is_what_it_registers():
    """`ssl-eq --help` lists COMMANDS without calling register: the two must name the same commands, same help."""
    full = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    listed = {}
    for name in COMMAND_MODULES:
        listed.update(importlib.import_module(name).COMMANDS)
    assert listed == {c.dest: c.help for c in full._choices_actions}


def test_top_level_help_and_a_mistyped_command_import_no_torch():
    code = ("import sys; from ssl_eq.cli import main; a = main(['--help']); b = main(['rendr']); "
            "print(a, b, sorted({'torch', 'torchmetrics', 'lightning'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "0 2 []"
    assert "invalid choice: 'rendr'" in out.stderr and "import-checkpoint" in out.stdout


@pytest.mark.parametrize("command", sorted(" ".join(k) for k in ALL if len(k) == 1 and k != ("pretrain",)))
def test_each_command_parses_with_only_its_own_options_built(command, capsys):
    assert main([command, "--help"]) == 0
    assert " ".join(capsys.readouterr().out.split()).startswith(f"usage: ssl-eq {command}")
