"""What ftops shows of outside input (keys, roles, ids, parser errors): bounded, secrets masked.

Reports, run errors, audit records and events all quote input back to people; a 200 KB key holding an
account key must come back as a short, masked excerpt, never whole.
"""

from __future__ import annotations

ECHO_CHARS = 80


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """`value` as text of at most `limit` characters (plus a length marker), secrets and PII masked."""
    text = str(value)
    # Masked before it is cut, so a secret that straddles the cut is still recognised.
    from shared.validation.privacy import mask  # imported on error paths only (cold start)

    shown = mask(text[: limit * 4])
    if len(text) <= limit and len(shown) <= limit:
        return shown
    return f"{shown[:limit]}… ({len(text):,} chars)"
