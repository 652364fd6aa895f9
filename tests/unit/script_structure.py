"""The infra scripts as their grammars see them: tree-sitter's bash and PowerShell grammars (PyPI wheels with the
grammars compiled in; nothing is downloaded at run time) parse each `.sh` and `.ps1`, so the tests can (1) refuse
a `.ps1` with a syntax error — there is no PowerShell on the machines this is built on, so nothing else would —
and (2) compare a hook's two forms call by call.

What this is not: PowerShell's own parser, nor an execution. The grammar is a community reimplementation of the
PowerShell language (airbus-cert/tree-sitter-powershell); where it and PowerShell disagree, this check is wrong,
and nothing here runs a `.ps1`. docs/deploy.md ("Hooks on Windows and POSIX") says the same.

A "call" is an invocation of `az`, `azd` or a script function that calls them, in source order, with its
positional words and its flags; argument values are normalised so that the two languages compare equal: quotes
dropped, every variable written `{name}` with its name lower-cased and without `_` (`$app_id`, `$appId`,
`${APP_ID:?}` and `$env:APP_ID` are all `{appid}`), a PowerShell `$(...)` around one variable dropped.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tree_sitter
import tree_sitter_bash
import tree_sitter_powershell

TOOLS = {"az", "azd"}
# JSON bodies: the POSIX form passes them inline, the PowerShell form as `@file` (az.cmd on Windows gets its
# arguments through cmd.exe, which strips the inner double quotes of inline JSON). Only their presence is compared.
FREE_FORM_FLAGS = {"--body", "--parameters", "--role-definition"}
AZD_NAME = re.compile(r"^(?:AZURE|FTOPS)_[A-Z0-9_]+$")


@functools.cache
def parser(suffix: str) -> tree_sitter.Parser:
    grammar = {".sh": tree_sitter_bash.language, ".ps1": tree_sitter_powershell.language}[suffix]
    return tree_sitter.Parser(tree_sitter.Language(grammar()))


def tree(path: Path) -> tree_sitter.Tree:
    return parser(path.suffix).parse(path.read_bytes())


def walk(node: tree_sitter.Node):
    yield node
    for child in node.children:
        yield from walk(child)


def syntax_errors(path: Path, source: bytes | None = None) -> list[str]:
    """`line N: …` for each place the grammar could not parse (an ERROR node, or a token it had to invent)."""
    src = path.read_bytes() if source is None else source
    root = parser(path.suffix).parse(src).root_node
    found = []
    for node in walk(root):
        if node.type == "ERROR" or node.is_missing:
            line = node.start_point[0] + 1
            text = src.splitlines()[line - 1].decode(errors="replace").strip() if src.splitlines() else ""
            what = f"missing {node.type}" if node.is_missing else "cannot parse"
            found.append(f"line {line}: {what}: {text[:100]}")
    return found


@dataclass(frozen=True)
class Call:
    command: str                                  # az, azd, or a script function (normalised name)
    words: tuple[str, ...]                        # positional words (az's subcommands, a function's arguments)
    flags: dict[str, str] = field(default_factory=dict)   # flag → normalised value ("" for a switch)

    def __str__(self) -> str:
        return " ".join([self.command, *self.words, *(f"{k} {v}".strip() for k, v in sorted(self.flags.items()))])


def name(text: str) -> str:
    return re.sub(r"[_-]", "", text).lower()


_SH_VAR = re.compile(r"\$\{([A-Za-z_]\w*|[0-9])[^}]*\}|\$([A-Za-z_]\w*|[0-9])")
_PS_VAR = re.compile(r"\$\(\s*\$(?:env:)?(\w+)\s*\)|\$\{(?:env:)?(\w+)\}|\$(?:env:)?(\w+)")


def value(text: str, suffix: str) -> str:
    pattern = _SH_VAR if suffix == ".sh" else _PS_VAR
    text = pattern.sub(lambda m: "{" + name(next(g for g in m.groups() if g)) + "}", text)
    return text.replace('"', "").replace("'", "")


def _arguments(node: tree_sitter.Node, suffix: str) -> list[str]:
    if suffix == ".sh":
        return [a.text.decode() for a in node.children_by_field_name("argument")]
    elements = node.child_by_field_name("command_elements")
    if elements is None:
        return []
    # the grammar reads a redirection such as `2>$null` as a plain token: it is not an argument either
    return [e.text.decode() for e in elements.children
            if e.type != "command_argument_sep" and not re.match(r"[0-9*]?>", e.text.decode())]


def _command_name(node: tree_sitter.Node, suffix: str) -> str:
    target = node.child_by_field_name("name" if suffix == ".sh" else "command_name")
    return target.text.decode() if target is not None else ""


def _invokes_a_tool(node: tree_sitter.Node, suffix: str) -> bool:
    return any(n.type == "command" and _command_name(n, suffix) in TOOLS for n in walk(node))


def functions(path: Path) -> set[str]:
    """The script's own functions that call az or azd (helpers that only shape text or JSON are left out: each
    language has its own)."""
    kinds = {".sh": ("function_definition", "name"), ".ps1": ("function_statement", None)}
    kind, field_name = kinds[path.suffix]
    found = set()
    for node in walk(tree(path).root_node):
        if node.type == kind and _invokes_a_tool(node, path.suffix):
            target = node.child_by_field_name(field_name) if field_name else \
                next(c for c in node.children if c.type == "function_name")
            found.add(name(target.text.decode()))
    return found


def calls(path: Path) -> list[Call]:
    suffix, own = path.suffix, functions(path)
    found = []
    for node in walk(tree(path).root_node):
        if node.type != "command":
            continue
        command = name(_command_name(node, suffix))
        if command not in TOOLS | own:
            continue
        args = [value(a, suffix) for a in _arguments(node, suffix)]
        words, flags, i = [], {}, 0
        while i < len(args):
            arg = args[i]
            if command in TOOLS and re.fullmatch(r"--?[a-z][a-z-]*", arg):
                nxt = args[i + 1] if i + 1 < len(args) else None
                takes = nxt is not None and not re.fullmatch(r"--?[a-z][a-z-]*", nxt)
                flags[arg] = "<json>" if arg in FREE_FORM_FLAGS else (nxt if takes else "")
                i += 2 if takes else 1
            else:
                words.append(arg)
                i += 1
        found.append(Call(command, tuple(words), flags))
    return found


def azd_names(path: Path) -> set[str]:
    """The azd environment names a script mentions: variables it reads (`${AZURE_X}`, `$env:AZURE_X`) and names it
    passes as words (`set_env FTOPS_X …`, `'FTOPS_X'` in a list of required names)."""
    found: set[str] = set()
    for node in walk(tree(path).root_node):
        text = node.text.decode() if node.child_count == 0 or node.type in ("string_literal", "raw_string") else ""
        if path.suffix == ".sh" and node.type == "variable_name":
            text = node.text.decode()
        if path.suffix == ".ps1" and node.type == "variable":
            text = node.text.decode().removeprefix("$").removeprefix("env:")
        text = text.strip("'\"")
        if AZD_NAME.fullmatch(text):
            found.add(text)
    return found


def describe(path: Path) -> dict[str, Any]:
    """Everything the twin comparison looks at, for a readable assertion message."""
    return {"calls": [str(c) for c in calls(path)], "azd names": sorted(azd_names(path))}
