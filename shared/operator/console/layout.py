"""HTML building blocks for the console. Every value is escaped unless it is already `Safe` (markup this
module or the pages built from escaped parts); nothing from a run, a report or a token reaches a page raw."""
from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from shared.run import states
from shared.run.echo import mask_secrets


class Safe(str):
    """Markup built here from escaped parts."""


def e(value: Any) -> Safe:
    if isinstance(value, Safe):
        return value
    return Safe(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[Any], sep: str = "") -> Safe:
    return Safe(sep.join(e(p) for p in parts))


def short(value: Any, limit: int = 160) -> str:
    """A bounded, secret-masked echo of something the app stored (audit details, error messages)."""
    text = mask_secrets(value if isinstance(value, str) else _json(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _json(value: Any) -> str:
    import json
    return json.dumps(value, default=str, separators=(", ", ": "))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Iterable[int] = (),
          empty: str = "none") -> Safe:
    right = set(numeric)
    head = "".join(f'<th{" class=num" if i in right else ""}>{e(h)}</th>' for i, h in enumerate(headers))
    body = ["<tr>" + "".join(f'<td{" class=num" if i in right else ""}>{e(c)}</td>' for i, c in enumerate(r)) + "</tr>"
            for r in rows]
    if not body:
        body = [f'<tr><td colspan="{len(headers)}" class="muted">{e(empty)}</td></tr>']
    return Safe(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def state_class(state: str, terminal: bool) -> str:
    kind, _ = states.split(state)
    if kind == "awaiting_approval":
        return "waiting"
    if kind == "deployed" and terminal:
        return "done"
    if terminal or kind.endswith("failed"):
        return "failed"
    return "busy"


def badge(state: str, terminal: bool) -> Safe:
    return Safe(f'<span class="state {state_class(state, terminal)}" data-state="{e(state)}">{e(state)}</span>')


def link(href: str, text: Any) -> Safe:
    return Safe(f'<a href="{e(href)}">{e(text)}</a>')


def hidden(name: str, value: Any) -> Safe:
    return Safe(f'<input type="hidden" name="{e(name)}" value="{e(value)}">')


def banner(kind: str, text: Any) -> Safe:
    return Safe(f'<div class="banner {e(kind)}" role="{"alert" if kind == "error" else "status"}">{e(text)}</div>')


def chrome(base: str, title: str, body: Any, *, who: Any = None, form_token: str | None = None) -> str:
    """The page around `body`: navigation, who is signed in (with their roles), sign-out."""
    signed = ""
    if who is not None:
        roles = ", ".join(sorted(who.roles)) or "no roles"
        signed = (f'<span class="who">{e(who.name or who.oid)} · {e(roles)}</span>'
                  f'<form method="post" action="{e(base)}/signout">{hidden("form_token", form_token or "")}'
                  f'<button type="submit">Sign out</button></form>')
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)} · ftops console</title>"
            f"<link rel=\"stylesheet\" href=\"{e(base)}/assets/console.css\"></head><body>"
            f"<header><a href=\"{e(base)}/\">ftops console</a><a href=\"{e(base)}/\">Runs</a>"
            f"<a href=\"{e(base)}/deployments\">Deployments</a>{signed}</header>"
            f"<main>{e(body)}</main></body></html>")
