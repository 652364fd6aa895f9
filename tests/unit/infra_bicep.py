"""Reading infra/ for the infra tests: the Bicep files as pycep-parser's JSON, the few Bicep expressions the
tests need resolved (string literals, variables, parameter defaults, `var.property`), and the app side of the
contract (its trigger bindings, the environment the Bicep gives it)."""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@functools.cache
def parsed(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def resources(path: Path) -> dict[str, dict[str, Any]]:
    return parsed(path).get("resources", {})


def resource_body(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource's object, whether it is declared once, conditionally or in a loop."""
    config = resource["config"]
    while isinstance(config, dict) and "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config


def variables(path: Path) -> dict[str, Any]:
    return {name: v["value"] for name, v in parsed(path).get("variables", {}).items()}


def resolve(value: Any, vars_: dict[str, Any]) -> Any:
    """A literal as is; a variable or parameter (its default) by name; `name.prop` through the variables;
    anything else (an expression computed at deployment) → None.

    pycep gives a quoted string and a bare identifier alike as str: a str naming a variable or parameter
    is taken as that identifier (no literal in our files equals one of those names)."""
    if isinstance(value, str) and value in vars_:
        return resolve(vars_[value], vars_)
    if isinstance(value, (str, int, bool)):
        return value
    op = value.get("operator", {}) if isinstance(value, dict) else {}
    if op.get("type") == "property_accessor":
        base, prop = op["operands"]["operand_1"], op["operands"]["operand_2"]
        holder = vars_.get(base) if isinstance(base, str) else None
        if isinstance(holder, dict) and isinstance(prop, str):
            return resolve(holder.get(prop), vars_)
    return None


def app_settings() -> dict[str, Any]:
    """name → value (literal or resolved) or None (computed at deployment), as main.bicep sets them."""
    params = {name: p.get("default") for name, p in parsed(MAIN).get("parameters", {}).items()}
    vars_ = {**params, **variables(MAIN)}
    return {name: resolve(value, vars_) for name, value in vars_["appSettings"].items()}


def iso_duration_minutes(text: str) -> float:
    """PT10M, PT1H, P1D, PT30S → minutes (the forms Service Bus properties use)."""
    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", text)
    if not m:
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return d * 1440 + h * 60 + mi + s / 60


SAMPLE = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]


@functools.cache
def functions() -> dict[str, list[dict]]:
    """function name → its bindings, as the host indexes them."""
    import function_app
    function_app.app.functions_bindings = None   # the worker indexes once per process; others may have already
    return {f.get_function_name(): [json.loads(b) for b in f.get_raw_bindings()]
            for f in function_app.app.get_functions()}


def bindings() -> list[dict]:
    return [b for bs in functions().values() for b in bs]


def azure_env() -> dict[str, str]:
    """The environment the app gets in Azure: the Bicep's literal values, placeholders for the computed ones."""
    env = {}
    for name, value in app_settings().items():
        if value is None:   # computed at deployment (an endpoint, an id): a value of the right shape
            value = SAMPLE.get(name) or "https://placeholder.example/"
        env[name] = str(value)
    env["SPOKES_CONFIG"] = (INFRA / "spokes.json").read_text()
    return env
