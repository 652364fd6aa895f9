"""infra/scripts/register-webhook.sh, run offline against a fake `az` (its `rest` answering Learn's
webhook_endpoints REST from a JSON file) and `azd`: what it registers and stores, that running it again writes
nothing, that a lost secret means a new endpoint, and that the secret is never printed. It has not run
against a real hub (docs/deploy.md says so)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "scripts" / "register-webhook.sh"
HUB = "https://ftops-hub.openai.azure.com"
API = f"{HUB}/openai/v1/dashboard/webhook_endpoints"
URL = "https://ftops-app.azurewebsites.net/api/hub/webhooks"
EVENTS = ["fine_tuning.job.cancelled", "fine_tuning.job.failed", "fine_tuning.job.succeeded"]

FAKE = r'''
import json, os, sys, secrets
import jmespath
state_file = os.environ["FAKE_STATE"]
state = json.load(open(state_file)) if os.path.exists(state_file) else {"endpoints": [], "env": {}, "settings": {}}
argv = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\n")

def opt(name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default

def out(value):
    if "--query" in argv:
        value = jmespath.search(opt("--query"), value)
    if opt("-o", opt("--output")) == "none":
        return
    if opt("-o") == "tsv":
        items = value if isinstance(value, list) else [value]
        print("\n".join("" if v is None else str(v) for v in items))
    else:
        print(json.dumps(value))

tool, rest = argv[0], argv[1:]
if tool == "azd":
    if rest[:2] == ["env", "get-value"]:
        if rest[2] not in state["env"]:
            print(f"ERROR: key '{rest[2]}' not found", file=sys.stderr); sys.exit(1)
        print(state["env"][rest[2]])
    elif rest[:2] == ["env", "set"]:
        state["env"][rest[2]] = rest[3]
elif rest[:2] == ["functionapp", "show"]:
    out({"defaultHostName": "ftops-app.azurewebsites.net"})
elif rest[:4] == ["functionapp", "config", "appsettings", "set"]:
    key, _, value = opt("--settings").partition("=")
    state["settings"][key] = value
elif rest[0] == "rest":
    method, url = opt("--method"), opt("--url")
    auth = opt("--headers") if "--skip-authorization-header" in argv else "bearer:" + str(opt("--resource"))
    assert auth in ("api-key=key-1", "bearer:https://cognitiveservices.azure.com"), auth
    api = "https://ftops-hub.openai.azure.com/openai/v1/dashboard/webhook_endpoints"
    public = lambda e: {k: v for k, v in e.items() if k != "signing_secret"}
    if method == "get" and url == api:
        out({"object": "list", "data": [public(e) for e in state["endpoints"]]})
    elif method == "post" and url == api:
        body = json.loads(opt("--body"))
        e = {"id": "wh_" + secrets.token_hex(4), "object": "webhook.endpoint", **body,
             "signing_secret": "whsec_" + secrets.token_hex(16)}
        state["endpoints"].append(e)
        out(e)
    elif method == "post" and url.startswith(api + "/"):
        [e] = [e for e in state["endpoints"] if e["id"] == url.rsplit("/", 1)[1]]
        e.update(json.loads(opt("--body")))
        out(public(e))
    elif method == "delete" and url.startswith(api + "/"):
        state["endpoints"] = [e for e in state["endpoints"] if e["id"] != url.rsplit("/", 1)[1]]
        out({"deleted": True})
    else:
        print(f"ERROR: {method} {url}", file=sys.stderr); sys.exit(1)
else:
    print(f"ERROR: unknown {argv}", file=sys.stderr); sys.exit(1)
json.dump(state, open(state_file, "w"))
'''


class Azure:
    def __init__(self, tmp: Path) -> None:
        self.tmp, self.bin = tmp, tmp / "bin"
        self.bin.mkdir()
        (tmp / "fake.py").write_text(FAKE)
        for tool in ("az", "azd"):
            path = self.bin / tool
            path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{tmp / "fake.py"}" {tool} "$@"\n')
            path.chmod(0o755)

    def run(self, **env: str) -> tuple[str, list[list[str]]]:
        log = self.tmp / "calls.log"
        log.unlink(missing_ok=True)
        done = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=120, check=False, env={
            "PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_STATE": str(self.tmp / "state.json"), "FAKE_LOG": str(log),
            "AZURE_RESOURCE_GROUP": "rg-ftops", "AZURE_FUNCTION_APP_NAME": "ftops-app", "FTOPS_HUB_ENDPOINT": HUB,
            **env})
        assert done.returncode == 0, done.stderr
        return done.stdout, [json.loads(line) for line in log.read_text().splitlines()]

    @property
    def state(self) -> dict[str, Any]:
        return json.loads((self.tmp / "state.json").read_text())


def writes(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if ("rest" in c and c[c.index("--method") + 1] != "get")
            or "set" in c]


@pytest.fixture
def azure(tmp_path: Path) -> Azure:
    return Azure(tmp_path)


def test_it_registers_the_apps_route_for_the_three_job_events_and_stores_the_secret_unprinted(azure: Azure) -> None:
    stdout, _ = azure.run()
    [endpoint] = azure.state["endpoints"]
    assert endpoint["url"] == URL and endpoint["event_types"] == EVENTS and endpoint["name"] == "ftops"
    secret = endpoint["signing_secret"]
    assert azure.state["env"]["FTOPS_HUB_WEBHOOK_SECRET"] == secret == azure.state["settings"]["HUB_WEBHOOK_SECRET"]
    assert secret not in stdout and "registered" in stdout


def test_running_it_again_writes_nothing(azure: Azure) -> None:
    azure.run()
    before = azure.state
    stdout, calls = azure.run()
    assert writes(calls) == [] and azure.state == before and "nothing to do" in stdout


def test_event_types_changed_on_the_hub_are_put_right_without_a_new_secret(azure: Azure) -> None:
    azure.run()
    state = azure.state
    state["endpoints"][0]["event_types"] = ["fine_tuning.job.succeeded"]
    (azure.tmp / "state.json").write_text(json.dumps(state))
    _, calls = azure.run()
    assert [c[c.index("--method") + 1] for c in writes(calls)] == ["post"]
    assert azure.state["endpoints"][0]["event_types"] == EVENTS
    assert azure.state["env"]["FTOPS_HUB_WEBHOOK_SECRET"] == state["env"]["FTOPS_HUB_WEBHOOK_SECRET"]


def test_an_endpoint_whose_secret_was_lost_is_replaced(azure: Azure) -> None:
    azure.run()
    state = azure.state
    old = state["endpoints"][0]
    del state["env"]["FTOPS_HUB_WEBHOOK_SECRET"]
    (azure.tmp / "state.json").write_text(json.dumps(state))
    stdout, _ = azure.run()
    [new] = azure.state["endpoints"]
    assert new["id"] != old["id"] and new["signing_secret"] != old["signing_secret"]
    assert azure.state["settings"]["HUB_WEBHOOK_SECRET"] == new["signing_secret"] and "deleted" in stdout


def test_an_api_key_is_used_when_given_and_an_entra_token_otherwise(azure: Azure) -> None:
    _, calls = azure.run(AZURE_OPENAI_API_KEY="key-1")
    rest = [c for c in calls if "rest" in c]
    assert rest and all("--skip-authorization-header" in c and "--resource" not in c for c in rest)
    _, calls = azure.run()
    assert all("--resource" in c for c in calls if "rest" in c)
