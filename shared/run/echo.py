"""What ftops shows of outside input (keys, roles, ids, parser errors): bounded, secrets masked.

Reports, run errors, audit records and events all quote input back to people; a 200 KB key holding an
account key must come back as a short, masked excerpt, never whole.
"""

from __future__ import annotations

import re

ECHO_CHARS = 80
# Secrets named by their key in free text (exception messages, URLs, connection strings), whatever
# their length or shape; the privacy patterns below catch the unnamed ones by their form.
_NAMED_SECRET = re.compile(r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|sig|api[-_]?key|password|"
                           r"pwd|client_secret|access_token)\s*[=:]\s*(\"[^\"]*\"|[^;&\s,'\"]+)")


def mask_secrets(text: str) -> str:
    """`text` with secrets and personal data masked, the rest as it was."""
    from shared.run.privacy import mask  # imported on error paths only (cold start)

    return _NAMED_SECRET.sub(lambda m: f"{m.group(1)}=****", mask(text))


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """`value` as text of at most `limit` characters (plus a length marker), secrets and PII masked."""
    text = str(value)
    shown = mask_secrets(text[: limit * 4])  # masked before it is cut: a secret across the cut still shows
    if len(text) <= limit and len(shown) <= limit:
        return shown
    return f"{shown[:limit]}… ({len(text):,} chars)"
