"""Reads every function's trigger from the FunctionApp object itself, as the Functions host indexes it,
so the dev host never keeps a second list of functions, queues or schedules in sync with the app."""
from __future__ import annotations

import importlib
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_SETTING = re.compile(r"%([^%]+)%")


class TriggerError(ValueError):
    """A trigger the dev host cannot serve (unknown type, setting missing); the message names the function."""


@dataclass(frozen=True)
class Trigger:
    function_name: str
    kind: str                          # "blob" | "queue" | "timer" | "http"
    arg_name: str                      # the parameter the trigger payload is bound to
    func: Callable[..., Any]
    binding: dict[str, Any]            # the binding as declared (settings unresolved)
    connection: str | None = None      # name of the connection setting
    # blob
    container: str | None = None
    blob_pattern: re.Pattern[str] | None = None
    source: str | None = None
    # service bus queue
    queue_name: str | None = None
    auto_complete: bool = True
    actions_arg: str | None = None     # the parameter that receives ServiceBusMessageActions, if any
    # timer
    schedule: str | None = None
    run_on_startup: bool = False
    # http
    route: re.Pattern[str] | None = None
    methods: tuple[str, ...] = ()


def resolve(value: str, env: Mapping[str, str], *, function_name: str) -> str:
    """`%SETTING%` → the setting's value, as the Functions host binds app settings into trigger names."""
    def one(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise TriggerError(f"function {function_name}: app setting {m.group(1)!r} is not set")
        return env[m.group(1)]
    return _SETTING.sub(one, value)


def load_app(spec: str) -> Any:
    """'module:attribute' (default attribute `app`) → the FunctionApp."""
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr or "app")


def discover(app: Any, env: Mapping[str, str]) -> list[Trigger]:
    triggers = []
    # get_functions() remembers the names it validated and refuses them the next time (the worker indexes
    # once per process); forget them so the app can be discovered again (tests, restarts in-process)
    app.functions_bindings = None
    for fn in app.get_functions():
        name = fn.get_function_name()
        binding = dict(fn.get_trigger().get_dict_repr())
        user_function = fn.get_user_function()
        kind = binding.get("type")
        arg = binding["name"]
        if kind == "blobTrigger":
            triggers.append(_blob(name, arg, user_function, binding, env))
        elif kind == "serviceBusTrigger":
            if binding.get("topicName"):
                raise TriggerError(f"function {name}: topic subscriptions are not served by the dev host")
            triggers.append(Trigger(
                name, "queue", arg, user_function, binding, connection=binding.get("connection"),
                queue_name=resolve(binding["queueName"], env, function_name=name),
                auto_complete=bool(binding.get("autoCompleteMessages", True)),   # the host's default is true
                actions_arg=_actions_parameter(user_function, arg)))
        elif kind == "timerTrigger":
            triggers.append(Trigger(name, "timer", arg, user_function, binding,
                                    schedule=resolve(binding["schedule"], env, function_name=name),
                                    run_on_startup=bool(binding.get("runOnStartup", False))))
        elif kind == "httpTrigger":
            triggers.append(Trigger(name, "http", arg, user_function, binding,
                                    route=route_pattern(binding.get("route") or name),
                                    methods=tuple(str(getattr(m, "value", m)).upper() for m in binding.get("methods") or ("GET", "POST"))))
        else:
            raise TriggerError(f"function {name}: trigger type {kind!r} is not served by the dev host")
    return triggers


def route_pattern(template: str) -> re.Pattern[str]:
    """`runs/{run_id}/approve` → a pattern binding one path segment per parameter (`{*rest}`: the rest)."""
    def part(p: str) -> str:
        if p.startswith("{*"):
            return f"(?P<{p[2:-1]}>.+)"
        if p.startswith("{"):
            return f"(?P<{p[1:-1].split(':')[0].rstrip('?')}>[^/]+)"
        return re.escape(p)
    return re.compile("".join(part(p) for p in re.split(r"(\{[^}]+\})", template.strip("/")) if p) + r"\Z",
                      re.IGNORECASE)


def _blob(name: str, arg: str, user_function: Callable[..., Any], binding: dict[str, Any],
          env: Mapping[str, str]) -> Trigger:
    path = resolve(binding["path"], env, function_name=name)
    container, _, blob_path = path.partition("/")
    # `{name}` binds the rest of the blob path (slashes included), as the blob trigger does
    pattern = re.compile("".join(
        f"(?P<{part[1:-1]}>.+)" if part.startswith("{") else re.escape(part)
        for part in re.split(r"(\{[^}]+\})", blob_path or "{name}") if part) + r"\Z")
    return Trigger(name, "blob", arg, user_function, binding, connection=binding.get("connection"),
                   container=container, blob_pattern=pattern, source=binding.get("source"))


def _actions_parameter(user_function: Callable[..., Any], trigger_arg: str) -> str | None:
    """The worker injects ServiceBusMessageActions into the parameter annotated with it (not a binding)."""
    try:
        hints = typing.get_type_hints(user_function)
    except (NameError, TypeError):   # unresolvable string annotations: fall back to their text
        hints = {}
    for pname, param in inspect.signature(user_function).parameters.items():
        if pname == trigger_arg:
            continue
        annotation = hints.get(pname, param.annotation)
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        if "ServiceBusMessageActions" in str(text):
            return pname
    return None
