"""The command line explains itself: every option has help, every command's help lists
its exit codes, and the README's command list names every command with its options."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from harness.cli import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands(group: click.Group = main, path: tuple[str, ...] = ()
              ) -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


COMMANDS = dict(_commands())


def _help(name: str) -> str:
    command = COMMANDS[name]
    return command.get_help(click.Context(command, info_name=f"harness {name}"))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_and_every_command_lists_its_exit_codes(name: str) -> None:
    command = COMMANDS[name]
    bare = [p.name for p in command.params if isinstance(p, click.Option) and not p.help]
    assert bare == [], f"harness {name}: options without help"
    assert re.search(r"Exit codes?", _help(name)), f"harness {name}: no exit codes in help"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_readme_lists_every_command_with_its_options(name: str) -> None:
    block = README.split("## Command line", 1)[1].split("```", 2)[1]
    line = next((line for line in block.splitlines() if line.startswith(f"harness {name} ")
                 or line == f"harness {name}"), None)
    assert line is not None, f"the README's command list lacks harness {name}"
    for param in COMMANDS[name].params:
        if isinstance(param, click.Option) and not param.hidden:
            assert any(option in line for option in param.opts + param.secondary_opts), \
                f"the README's line for harness {name} lacks {param.opts[-1]}"


def test_gc_all_says_it_removes_database_servers_and_baselines() -> None:
    text = " ".join(_help("gc").split())
    assert "database servers" in text and "baselines" in text
