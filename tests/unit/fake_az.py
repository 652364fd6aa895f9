"""A fake `az` and `azd` for testing infra/scripts/app-registration.sh offline: the few commands it runs,
over a JSON file standing for the tenant and the azd environment, every call logged.

As strict as Microsoft Graph where it matters to the script: an enabled app role or scope cannot be removed
or given another id (Graph refuses: disable it first), and a pre-authorised client must name a scope that
exists. Usage: `python fake_az.py az|azd ARGS…` with FAKE_AZ_STATE and FAKE_AZ_LOG in the environment.
"""
from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import jmespath

MUTATING = ("create", "update", "set", "PATCH", "POST", "delete")


def main(argv: list[str]) -> int:
    state_file, log_file = Path(os.environ["FAKE_AZ_STATE"]), Path(os.environ["FAKE_AZ_LOG"])
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    for key in ("apps", "sps", "creds", "env", "settings", "assignments"):
        state.setdefault(key, {} if key not in ("assignments",) else [])
    with log_file.open("a") as log:
        log.write(json.dumps(argv) + "\n")
    try:
        out = (azd if argv[0] == "azd" else az)(argv[1:], state)
    except Refused as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    state_file.write_text(json.dumps(state))
    if out is not None:
        sys.stdout.write(out)
    return 0


class Refused(Exception):
    pass


def opts(args: list[str]) -> dict[str, str]:
    found, i = {}, 0
    while i < len(args):
        if args[i].startswith("--") or args[i] in ("-o", "-g", "-n"):
            found[args[i]] = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else "true"
            i += 2
        else:
            i += 1
    return found


def render(value: Any, o: dict[str, str]) -> str:
    if "--query" in o:
        value = jmespath.search(o["--query"], value)
    if o.get("-o", o.get("--output")) == "none":
        return ""
    if o.get("-o") == "tsv":
        if value is None:
            return "\n"
        return ("true" if value is True else "false" if value is False else str(value)) + "\n"
    return json.dumps(value) + "\n"


def az(args: list[str], s: dict[str, Any]) -> str | None:
    o = opts(args)
    words = [a for a in args if not a.startswith("-")][:4]
    app = next((a for a in s["apps"].values() if o.get("--id") in (a["appId"], a["id"])), None)
    if words[:2] == ["cloud", "show"]:
        return render({"endpoints": {"microsoftGraphResourceId": "https://graph.microsoft.com/",
                                     "activeDirectory": "https://login.microsoftonline.com"}}, o)
    if words[:3] == ["ad", "app", "list"]:
        return render([a for a in s["apps"].values() if a["displayName"] == o["--display-name"]], o)
    if words[:3] == ["ad", "app", "create"]:
        new = {"id": str(uuid.uuid4()), "appId": str(uuid.uuid4()), "displayName": o["--display-name"],
               "signInAudience": o["--sign-in-audience"], "identifierUris": [], "appRoles": [],
               "api": {"requestedAccessTokenVersion": None, "oauth2PermissionScopes": [],
                       "preAuthorizedApplications": []}, "web": {"redirectUris": []}}
        s["apps"][new["id"]] = new
        return render(new, o)
    if words[:3] == ["ad", "app", "show"]:
        if app is None:
            raise Refused("app not found")
        return render(app, o)
    if words[:4] == ["ad", "app", "federated-credential", "list"]:
        return render(s["creds"].get(app["appId"], []), o)
    if words[:4] == ["ad", "app", "federated-credential", "create"]:
        s["creds"].setdefault(app["appId"], []).append(json.loads(o["--parameters"]))
        return None
    if words[:4] == ["ad", "app", "federated-credential", "update"]:
        creds = s["creds"][app["appId"]]
        creds[:] = [json.loads(o["--parameters"]) if c["name"] == o["--federated-credential-id"] else c for c in creds]
        return None
    if words[:3] == ["ad", "sp", "list"]:
        app_id = o["--filter"].split("'")[1]
        return render([sp for sp in s["sps"].values() if sp["appId"] == app_id], o)
    if words[:3] == ["ad", "sp", "create"]:
        sp = {"id": str(uuid.uuid4()), "appId": o["--id"], "appRoleAssignmentRequired": False}
        s["sps"][sp["id"]] = sp
        return render(sp, o)
    if words[:3] in (["ad", "sp", "show"], ["ad", "sp", "update"]):
        sp = next(sp for sp in s["sps"].values() if sp["appId"] == o["--id"])
        if words[2] == "update":
            key, _, value = o["--set"].partition("=")
            sp[key] = value == "true"
            return None
        return render(sp, o)
    if words[:3] == ["ad", "user", "show"]:
        return render({"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, o["--id"]))}, o)
    if words[0] == "rest":
        return rest(o, s)
    if words[:3] == ["functionapp", "config", "appsettings"]:
        settings = s["settings"].setdefault(o["-n"], {})
        if "set" in args:
            key, _, value = o["--settings"].partition("=")
            settings[key] = value
            return None
        return render([{"name": k, "value": v} for k, v in settings.items()], o)
    raise Refused(f"the fake az does not know {' '.join(args)}")


def rest(o: dict[str, str], s: dict[str, Any]) -> str | None:
    method, uri = o["--method"], o["--uri"]
    path = uri.removeprefix("https://graph.microsoft.com/v1.0/").split("/")
    if path[0] == "applications" and method == "PATCH":
        app, body = s["apps"][path[1]], json.loads(o["--body"])
        for key, value in body.items():
            if key == "api":
                patch_api(app, value)
            elif key == "appRoles":
                keep_enabled(app["appRoles"], value, "app role")
                app["appRoles"] = value
            elif key == "web":
                app["web"].update(value)
            else:
                app[key] = value
        return None
    if path[0] == "servicePrincipals" and path[2] == "appRoleAssignedTo":
        if method == "GET":
            return render({"value": [a for a in s["assignments"] if a["resourceId"] == path[1]]}, o)
        s["assignments"].append(json.loads(o["--body"]))
        return None
    raise Refused(f"the fake Graph does not know {method} {uri}")


def patch_api(app: dict[str, Any], body: dict[str, Any]) -> None:
    api = app["api"]
    if "oauth2PermissionScopes" in body:
        keep_enabled(api["oauth2PermissionScopes"], body["oauth2PermissionScopes"], "scope")
    scopes = {sc["id"] for sc in body.get("oauth2PermissionScopes", api["oauth2PermissionScopes"])}
    for pre in body.get("preAuthorizedApplications", []):
        if not set(pre["delegatedPermissionIds"]) <= scopes:
            raise Refused("preAuthorizedApplications names a permission the app does not expose")
    api.update(body)


def keep_enabled(before: list[dict[str, Any]], after: list[dict[str, Any]], what: str) -> None:
    ids = {x["id"]: x for x in after}
    for old in before:
        if old.get("isEnabled") and (old["id"] not in ids or ids[old["id"]]["value"] != old["value"]):
            raise Refused(f"Permission ({what}) {old['value']} cannot be deleted or updated unless disabled first")


def azd(args: list[str], s: dict[str, Any]) -> str | None:
    if args[:2] == ["env", "get-value"]:
        if args[2] not in s["env"]:
            raise Refused(f"key {args[2]} not found")
        return s["env"][args[2]] + "\n"
    if args[:2] == ["env", "set"]:
        s["env"][args[2]] = args[3]
        return None
    raise Refused(f"the fake azd does not know {' '.join(args)}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
