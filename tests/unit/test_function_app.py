"""The app indexes the way the Functions host will read it: every stage, bound to settings, not literals."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MINIMAL_APP = ROOT / "benchmarks" / "minimal_app"


@pytest.fixture(scope="module")
def functions() -> list:
    from function_app import app
    app.functions_bindings = None   # the worker indexes once per process; other tests may have indexed already
    return app.get_functions()


@pytest.fixture(scope="module")
def bindings(functions) -> dict[str, list[dict]]:
    return {fn.get_function_name(): [json.loads(b) if isinstance(b, str) else b for b in
                                     json.loads(fn.get_function_json())["bindings"]]
            for fn in functions}


def trigger(bindings: dict[str, list[dict]], name: str) -> dict:
    return next(b for b in bindings[name] if b["type"].endswith("Trigger"))


def test_every_stage_is_registered(bindings):
    assert set(bindings) == {"intake", "training", "polling", "outbox", "evaluation", "deployment", "keepalive", "reconcile",
                             "harvest", "drift",
                             "commands", "poll_job", "hub_webhook",
                             "operator_list_runs", "operator_start_run", "operator_get_run", "operator_list_deployments",
                             "operator_history",
                             "operator_run_command", "operator_environment_command",
                             "console_runs", "console_sign_in", "console_sign_in_entra", "console_sign_in_callback", "console_sign_out", "console_deployments",
                             "console_asset", "console_run", "console_report", "console_act", "console_rollback"}


def test_the_operator_api_is_anonymous_at_the_host_because_the_app_verifies_the_token(bindings):
    routes = {name: trigger(bindings, name) for name in bindings if name.startswith("operator_")}
    assert {(t["route"], tuple(t["methods"])) for t in routes.values()} == {
        ("runs", ("GET",)), ("runs", ("POST",)), ("runs/{run_id}", ("GET",)), ("deployments", ("GET",)),
        ("history/{environment}", ("GET",)),
        ("runs/{run_id}/{action}", ("POST",)), ("environments/{environment}/{action}", ("POST",))}
    assert all(t["type"] == "httpTrigger" and t["authLevel"] == "ANONYMOUS" for t in routes.values())


def _could_match_the_same_path(a: str, b: str) -> bool:
    """Two route templates (no catch-all) match a common path: as many segments, each pair equal literals
    (the host compares them ignoring case) or one of them a parameter."""
    sa, sb = a.strip("/").split("/"), b.strip("/").split("/")
    return len(sa) == len(sb) and all(x.lower() == y.lower() or "{" in x or "{" in y for x, y in zip(sa, sb))


def test_no_two_http_routes_take_the_same_request(bindings):
    # the host does not promise that a literal segment wins over a parameter (it has tried routes in the
    # order of function names), so no request may depend on which of two matching routes it picks
    http = [(name, trigger(bindings, name)) for name in bindings if trigger(bindings, name)["type"] == "httpTrigger"]
    assert not any("{*" in t["route"] for _, t in http), "a catch-all route would overlap; check it by hand"
    clashes = [(n1, n2) for i, (n1, t1) in enumerate(http) for n2, t2 in http[i + 1:]
               if {m.upper() for m in t1["methods"]} & {m.upper() for m in t2["methods"]}
               and _could_match_the_same_path(t1["route"], t2["route"])]
    assert clashes == []


def test_the_hub_webhook_is_one_anonymous_post_route_because_the_app_checks_its_signature(bindings):
    hook = trigger(bindings, "hub_webhook")
    assert (hook["type"], hook["route"], hook["methods"], hook["authLevel"]) == (
        "httpTrigger", "hub/webhooks", ["POST"], "ANONYMOUS")


def test_the_console_is_served_under_its_own_prefix_anonymous_at_the_host(bindings):
    # the console signs people in and reads/acts through the operator API's own token checks
    routes = [trigger(bindings, name) for name in bindings if name.startswith("console_")]
    assert all(t["route"].startswith("console") and t["authLevel"] == "ANONYMOUS" for t in routes)
    posts = {t["route"] for t in routes if "POST" in t["methods"]}
    assert posts == {"console/signin", "console/signout", "console/runs/{run_id}/{action}",
                     "console/environments/{environment}/rollback"}


def test_the_blob_trigger_uses_event_grid_and_a_setting_for_the_container(bindings):
    blob = trigger(bindings, "intake")
    assert blob["type"] == "blobTrigger" and blob["source"] == "EventGrid"
    assert blob["path"] == "%DATASETS_CONTAINER%/{name}" and blob["connection"] == "DatasetStorage"


@pytest.mark.parametrize("name, queue", [("training", "%TRAIN_QUEUE%"), ("evaluation", "%EVALUATE_QUEUE%"),
                                         ("deployment", "%DEPLOY_QUEUE%"), ("commands", "%COMMANDS_QUEUE%"),
                                         ("poll_job", "%POLL_QUEUE%")])
def test_queue_triggers_settle_their_own_messages(bindings, name, queue):
    sb = trigger(bindings, name)
    assert sb["type"] == "serviceBusTrigger" and sb["queueName"] == queue
    assert sb["connection"] == "ServiceBusConnection" and sb["autoCompleteMessages"] is False


@pytest.mark.parametrize("name, schedule", [("polling", "%POLL_SCHEDULE%"), ("keepalive", "%KEEPALIVE_SCHEDULE%"),
                                            ("outbox", "%OUTBOX_SCHEDULE%"),
                                            ("reconcile", "%RECONCILE_SCHEDULE%"),
                                            ("harvest", "%HARVEST_SCHEDULE%"), ("drift", "%DRIFT_SCHEDULE%")])
def test_timers_read_their_schedule_from_settings(bindings, name, schedule):
    timer = trigger(bindings, name)
    assert timer["type"] == "timerTrigger" and timer["schedule"] == schedule and timer["runOnStartup"] is False


def test_the_real_python_worker_accepts_every_function_with_sdk_type_bindings(functions):
    """azure-functions-runtime (the worker the host runs) indexes each function as it would in Azure: the
    blob and Service Bus parameters bind as SDK types, and `actions` is the settlement client."""
    from types import SimpleNamespace

    from azure_functions_runtime.bindings import meta
    from azure_functions_runtime.functions import Registry

    meta.load_binding_registry()
    registry = Registry()
    protos = SimpleNamespace(BindingInfo=SimpleNamespace(inout=2, out=1, undefined=0))   # enum values only
    infos = {fn.get_function_name(): registry.add_indexed_function(function=fn, protos=protos)
             for fn in functions}
    assert infos["intake"].input_types["client"].deferred_bindings_enabled
    for name in ("training", "evaluation", "deployment", "commands", "poll_job"):
        assert infos[name].input_types["message"].deferred_bindings_enabled
        assert infos[name].settlement_client_arg == "actions"


HEAVY = ("azure.servicebus", "openai", "numpy", "jwt", "rouge_score", "nltk", "rapidfuzz", "tiktoken", "pydantic",
         "azure.data.tables", "azure.identity", "azure.mgmt", "shared.run", "shared.store", "shared.azure",
         "shared.validation", "shared.evaluation", "shared.stages", "shared.operator", "shared.app.bootstrap")


def _heavy_loaded(app_dir: Path) -> set[str]:
    """The listed modules a fresh interpreter holds after `import function_app` from `app_dir`."""
    code = ("import function_app, sys; print(' '.join(h for h in sys.argv[1:] "
            "if any(m == h or m.startswith(h + '.') for m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, *HEAVY], cwd=app_dir, check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(app_dir)}).stdout
    return set(out.split())


def test_loading_the_app_imports_no_heavy_module_of_its_own():
    # Each trigger imports its handler (and so the SDKs and our rooms) when it first runs, not when the host
    # loads the app. The binding extensions themselves import the Service Bus SDK (for their message types):
    # the minimal app with the same bindings loads it too, so only what it does not load counts against us.
    minimal = _heavy_loaded(MINIMAL_APP)
    ours = _heavy_loaded(ROOT)
    assert ours - minimal == set()
    # Of our own code only what function_app.py itself needs (shared.app.telemetry: which process sets up the
    # exporter; standard library only).
    assert not ours & {"openai", "numpy", "jwt", "rouge_score", "nltk", "rapidfuzz"}
    assert not {m for m in ours if m.startswith("shared.")}


def test_the_minimal_app_of_the_cold_start_benchmark_has_the_same_bindings(bindings):
    spec = importlib.util.spec_from_file_location("minimal_function_app", MINIMAL_APP / "function_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    minimal = {fn.get_function_name(): [json.loads(b) if isinstance(b, str) else b for b in
                                        json.loads(fn.get_function_json())["bindings"]]
               for fn in module.app.get_functions()}
    assert minimal == bindings


def test_the_operator_routes_are_the_command_tables():
    from functions import operator
    from shared.run.command_table import COMMAND_ROUTES
    assert (operator.RUN_COMMAND, operator.ENVIRONMENT_COMMAND, operator.START_RUN) == COMMAND_ROUTES
