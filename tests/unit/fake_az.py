"""A fake `az` and `azd` for testing infra/scripts/app-registration.sh and cross-tenant-app.sh offline: the few
commands they run, over a JSON file standing for the tenant and the azd environment, every call logged.

As strict as Microsoft Graph and ARM where it matters to the scripts: an enabled app role or scope cannot be
removed or given another id (Graph refuses: disable it first), a pre-authorised client must name a scope that
exists; a custom role's name is unique in the tenant, it is assignable only at or below its assignable scopes,
and a scope where it is assigned cannot be taken from it. Usage: `python fake_az.py az|azd ARGS…` with FAKE_AZ_STATE and FAKE_AZ_LOG in the environment.
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
    for key in ("apps", "sps", "creds", "env", "settings", "assignments", "role_definitions", "role_assignments"):
        state.setdefault(key, [] if key in ("assignments", "role_definitions", "role_assignments") else {})
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
        sp = next((sp for sp in s["sps"].values() if sp["appId"] == o["--id"]), None)
        if sp is None:
            raise Refused(f"Service principal '{o['--id']}' doesn't exist")
        if words[2] == "update":
            key, _, value = o["--set"].partition("=")
            sp[key] = value == "true"
            return None
        return render(sp, o)
    if words[:3] == ["ad", "user", "show"]:
        return render({"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, o["--id"]))}, o)
    if words[0] == "rest":
        return rest(o, s)
    if words[:2] == ["account", "show"]:
        return render({"tenantId": s.get("tenant", "spoke-tenant")}, o)
    if words[:2] == ["role", "definition"]:
        return role_definition(words[2], o, s)
    if words[:2] == ["role", "assignment"]:
        return role_assignment(words[2], o, s)
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


def assignable(role: dict[str, Any], scope: str) -> bool:
    """ARM: a role is assignable at a scope at or below one of its assignableScopes."""
    return any(scope.lower() == a.lower() or scope.lower().startswith(a.lower().rstrip("/") + "/")
               for a in role["assignableScopes"])


def role_definition(verb: str, o: dict[str, str], s: dict[str, Any]) -> str | None:
    roles = s["role_definitions"]
    if verb == "list":   # the roles assignable at --scope, by GUID or role name (az's _search_role_definitions)
        found = [r for r in roles if assignable(r, o["--scope"])
                 and o.get("--name") in (None, r["name"], r["roleName"])]
        return render(found, o)
    body = json.loads(o["--role-definition"])
    body = {k[:1].lower() + k[1:]: v for k, v in body.items()}   # az camel-cases the keys
    perms = {k: body.get(k, []) for k in ("actions", "notActions", "dataActions", "notDataActions")}
    if verb == "create":
        if not body.get("name") or not body.get("assignableScopes"):
            raise Refused("please provide role name and 'assignableScopes'")
        if any(r["roleName"] == body["name"] for r in roles):
            raise Refused("RoleDefinitionWithSameNameExists: role names are unique in a tenant")
        guid = str(uuid.uuid4())
        role = {"id": f"{body['assignableScopes'][0]}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
                "name": guid, "roleName": body["name"], "description": body.get("description"),
                "roleType": "CustomRole", "permissions": [perms], "assignableScopes": body["assignableScopes"]}
        roles.append(role)
        return render(role, o)
    if verb == "update":
        role = next((r for r in roles if r["id"] == body.get("id")), None)
        if role is None:
            raise Refused("RoleDefinitionDoesNotExist")
        in_use = {a["scope"] for a in s["role_assignments"] if a["roleDefinitionName"] == role["name"]}
        if any(not assignable({"assignableScopes": body["assignableScopes"]}, scope) for scope in in_use):
            raise Refused("RoleDefinitionHasAssignments: a scope in use cannot be removed")
        role.update(roleName=body["roleName"], description=body.get("description"), permissions=[perms],
                    assignableScopes=body["assignableScopes"])
        return render(role, o)
    raise Refused(f"the fake az does not know role definition {verb}")


def role_assignment(verb: str, o: dict[str, str], s: dict[str, Any]) -> str | None:
    def role_of(ref: str) -> dict[str, Any] | None:
        builtin = {"name": ref, "roleName": ref, "assignableScopes": ["/"]} if ref == "a001fd3d-188f-4b5d-821b-7da978bf7442" else None
        return next((r for r in s["role_definitions"] if ref in (r["name"], r["roleName"])), builtin)
    if verb == "list":
        role = role_of(o["--role"])
        return render([a for a in s["role_assignments"] if a["principalId"] == o["--assignee"]
                       and role is not None and a["roleDefinitionName"] == role["name"]
                       and a["scope"].lower() == o["--scope"].lower()], o)
    if verb == "create":
        role = role_of(o["--role"])
        if role is None or not assignable(role, o["--scope"]):
            raise Refused(f"RoleDefinitionDoesNotExist or not assignable at {o['--scope']}")
        if o.get("--assignee-principal-type") != "ServicePrincipal":
            raise Refused("give --assignee-principal-type")
        new = {"principalId": o["--assignee-object-id"], "roleDefinitionName": role["name"], "scope": o["--scope"]}
        if new not in s["role_assignments"]:   # az answers the existing assignment (RoleAssignmentExists)
            s["role_assignments"].append(new)
        return render(new, o)
    raise Refused(f"the fake az does not know role assignment {verb}")


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
