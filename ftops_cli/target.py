"""Which ftops the command talks to: a deployed environment's settings or the running local stack.

In order: `--env-file FILE` or `FTOPS_ENV_FILE` (an env file: the output of `azd env get-values`, whose
outputs are translated into the app's settings, or the app settings themselves as `KEY=value` lines); the
app's settings already in the environment (`DatasetStorage…`); the local stack that `ftops demo` is running
(it writes a small state file with its addresses while it runs). None of them: one line saying what to
set or run (exit 2).
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftops_cli.errors import UsageError

STORAGE_KEYS = ("DatasetStorage", "DatasetStorage__blobServiceUri")
NO_TARGET = ("no ftops to talk to: run `ftops demo --keep-running` for the local stack, or point at a deployed "
             "environment with --env-file FILE or FTOPS_ENV_FILE (e.g. `azd env get-values > ftops.env`), or set "
             "the app's settings (DatasetStorage…, and FTOPS_API_URL for the operator commands; see "
             "local.settings.sample.json)")


class NoTarget(UsageError):
    """No deployed environment and no local stack named: the message says what to set or run."""


@dataclass(frozen=True)
class Target:
    env: dict[str, str]     # settings to add to the process environment
    where: str              # for people: which ftops this is


def state_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the running local stack leaves its addresses (FTOPS_LOCAL_STATE, default ~/.ftops/)."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("FTOPS_LOCAL_STATE") or Path.home() / ".ftops" / "local-stack.json")


def resolve(env_file: str | None, environ: Mapping[str, str], *, state: Path | None = None) -> Target:
    named = env_file or environ.get("FTOPS_ENV_FILE")
    if named:
        path = Path(named)
        if not path.is_file():
            raise NoTarget(f"env file {path} not found (--env-file / FTOPS_ENV_FILE); write one with "
                           "`azd env get-values > ftops.env`")
        return Target(from_env_file(read_env_file(path)), f"the environment in {path}")
    if any(environ.get(k) for k in STORAGE_KEYS):
        return Target({}, "the settings in the environment")
    local = read_state(state or state_path(environ))
    if local is not None:
        if environ.get("FTOPS_API_URL"):   # set by the user: it wins over the stack's own API (operator commands)
            env = {k: v for k, v in local["env"].items() if k != "FTOPS_API_URL"}
            return Target(env, f"the local stack's storage, and the operator API at {environ['FTOPS_API_URL']} "
                               "(FTOPS_API_URL)")
        return Target({**local["env"], "FTOPS_API_URL": local["api_url"]}, f"the local stack ({local['console_url']})")
    raise NoTarget(NO_TARGET)


def apply(env_file: str | None) -> Target:
    """Resolve the target and put its settings into this process's environment (the file wins over
    what is already set: naming it is the more explicit choice)."""
    target = resolve(env_file, os.environ)
    os.environ.update(target.env)
    return target


def described(target: Target | None, environ: Mapping[str, str] | None = None) -> str:
    """Which ftops a command acted on, for its output: the target and the operator API it called."""
    environ = os.environ if environ is None else environ
    api = environ.get("FTOPS_API_URL")
    where = target.where if target is not None else "the settings in the environment"
    return where + (f"; operator API {api}" if api and api not in where else "")


def deps(args: Any) -> Any:
    """The app's dependencies for a command, built for its target (argument mistakes are found before)."""
    apply(getattr(args, "env_file", None))
    from shared.app.bootstrap import get_deps
    return get_deps()


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=value` / `KEY="value"` lines (azd env get-values, dotenv); comments and blank lines skipped."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip().replace("_", "").isalnum():
            raise NoTarget(f"{path}:{number}: not a KEY=value line")
        try:
            parts = shlex.split(value, posix=True) if value.strip() else [""]
        except ValueError as exc:
            raise NoTarget(f"{path}:{number}: {exc}") from None
        values[key.strip()] = parts[0] if len(parts) == 1 else value.strip()
    return values


def from_env_file(values: Mapping[str, str]) -> dict[str, str]:
    """The app's settings from azd's outputs (infra/main.bicep) where they are not given as settings."""
    env = dict(values)
    account = values.get("AZURE_STORAGE_ACCOUNT_NAME")
    if account and not any(values.get(k) for k in STORAGE_KEYS):
        for service in ("blob", "queue", "table"):
            env.setdefault(f"DatasetStorage__{service}ServiceUri", f"https://{account}.{service}.core.windows.net")
    namespace = values.get("FTOPS_SERVICEBUS_NAMESPACE")
    if namespace:
        env.setdefault("ServiceBusConnection__fullyQualifiedNamespace",
                       namespace if "." in namespace else f"{namespace}.servicebus.windows.net")
    hub = values.get("FTOPS_HUB_RESOURCE_ID")
    if hub:
        env.setdefault("HUB_RESOURCE_ID", hub)
        # infra/main.bicep outputs the endpoint; older deployments: the custom subdomain, as a rule the account name
        env.setdefault("HUB_ENDPOINT", values.get("FTOPS_HUB_ENDPOINT") or f"https://{hub.rsplit('/', 1)[-1]}.openai.azure.com")
    for container in ("DATASETS", "REPORTS"):
        if values.get(f"FTOPS_{container}_CONTAINER"):
            env.setdefault(f"{container}_CONTAINER", values[f"FTOPS_{container}_CONTAINER"])
    if values.get("AZURE_FUNCTION_APP_NAME"):
        env.setdefault("FTOPS_API_URL", f"https://{values['AZURE_FUNCTION_APP_NAME']}.azurewebsites.net/api")
    if values.get("FTOPS_OPERATOR_API_AUDIENCE"):
        env.setdefault("OPERATOR_API_AUDIENCE", values["FTOPS_OPERATOR_API_AUDIENCE"])
    if values.get("AZURE_TENANT_ID"):
        env.setdefault("OPERATOR_TENANT_ID", values["AZURE_TENANT_ID"])
    return env


# --- the local stack's state file (written by `ftops demo`) --------------------------------------------
def write_state(path: Path, *, env: Mapping[str, str], api_url: str, reports_dir: Path | None,
                pids: Mapping[str, int | None] | None = None, data_dir: Path | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"pid": os.getpid(), "api_url": api_url, "console_url": f"{api_url}/console/",
            "reports_dir": str(reports_dir) if reports_dir else None, "env": dict(env),
            "pids": dict(pids or {}), "data_dir": str(data_dir) if data_dir else None}
    # local connection strings only (Azurite's published development key); readable by this user alone
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out)


def remove_state(path: Path) -> None:
    with contextlib.suppress(OSError):
        if (read_state(path, check_alive=False) or {}).get("pid") == os.getpid():
            path.unlink()


def read_state(path: Path, *, check_alive: bool = True) -> dict[str, Any] | None:
    """The running stack's state, or None (no file, unreadable, or the demo that wrote it has exited)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("env"), dict):
        return None
    if check_alive and not _alive(int(data.get("pid") or 0)):
        return None
    return data


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
