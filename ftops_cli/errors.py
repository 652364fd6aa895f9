"""What the `ftops` command prints when something goes wrong: one line that says why, never a traceback.

Exit 2: the user can fix it (a setting, a path, a run id, an argument). Exit 1: something failed that is
not the user's input (a service unreachable, a bug); `-v` shows the traceback.
"""
from __future__ import annotations

import json

from shared.run.echo import mask_secrets


class UsageError(Exception):
    """A mistake at the keyboard: the message says what and how to fix it (exit 2)."""


def explain(exc: BaseException) -> tuple[str, int]:
    """(one line, exit code) for an exception that reached the top of a command; secrets masked."""
    line, code = _explain(exc)
    return mask_secrets(line), code


def _explain(exc: BaseException) -> tuple[str, int]:
    from pydantic import ValidationError

    from shared.run.config import ConfigError
    from shared.store.registry import RunNotFound
    if isinstance(exc, UsageError):
        return str(exc), 2
    if isinstance(exc, ConfigError):
        return (f"{exc} — the ftops command reads the app's settings from the environment, from --env-file / "
                "FTOPS_ENV_FILE (`azd env get-values` output) or from the local stack of `ftops demo --keep-running`"
                " (see local.settings.sample.json and the README's Configuration table)"), 2
    if isinstance(exc, RunNotFound):
        return f"{exc}; `ftops status` lists the runs", 2
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", 2
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "value"
        return f"{where}: {first['msg']}", 2
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), 2
    if _unreachable(exc):
        return (f"cannot reach a service ({type(exc).__name__}: {_first_line(exc)}); check the storage and "
                "Service Bus settings, and that Azurite or Azure is reachable"), 1
    return f"unexpected {type(exc).__name__}: {_first_line(exc)} (run with -v for the traceback)", 1


def _unreachable(exc: BaseException) -> bool:
    try:
        from azure.core.exceptions import ServiceRequestError
    except ImportError:  # pragma: no cover - azure-core is a runtime dependency
        return False
    return isinstance(exc, (ServiceRequestError, ConnectionError, TimeoutError))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
