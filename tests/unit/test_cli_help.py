"""Every command and every argument of `ftops` explains itself, and the README's command table lists
every command."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from ftops_cli import demo, operate, report, status, validate, webhooks

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="ftops")
    sub = parser.add_subparsers(dest="command")
    for module in (validate, demo, status, report, operate, webhooks):
        module.add_parser(sub)
    return dict(sub.choices)


def test_every_command_and_argument_has_help() -> None:
    missing = []
    for name, parser in _commands().items():
        if not parser.description:
            missing.append(f"{name}: description")
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
                missing.append(f"{name}: {action.dest}")
    assert missing == []


def test_the_readme_command_table_lists_every_command() -> None:
    table = "\n".join(line for line in README.splitlines() if line.startswith("| `ftops "))
    listed = set(re.findall(r"(?:`ftops |, `|\\\|)([a-z]+)", table))
    assert set(_commands()) - listed == set()
