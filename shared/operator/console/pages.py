"""The console's pages: runs by state, deployments, sign-in, the actions (which post to the operator API),
and the reports. One run's page is in run_page.py."""
from __future__ import annotations

from typing import Any

from shared.operator.console import story
from shared.operator.console.app import (
    REPORT_CSP,
    SECURITY_HEADERS,
    Api,
    ConsoleRequest,
    ConsoleResponse,
    cleared_cookie,
    page,
    path_quote,
    redirect,
)
from shared.operator.console.app import ConsoleResponse as Response
from shared.operator.console.layout import Safe, badge, banner, chrome, e, link, table
from shared.run import states

MAX_REPORT_BYTES = 32 * 1024 * 1024   # the app's reports are far smaller; a bound on what one request reads
GROUPS = {"waiting": "waiting for approval", "active": "in progress", "deployed": "deployed (all environments)",
          "ended": "ended short"}


def group(run: dict[str, Any]) -> str:
    kind, _ = states.split(run["state"])
    if kind == "awaiting_approval":
        return "waiting"
    if not run["terminal"]:
        return "active"
    return "deployed" if kind == "deployed" else "ended"


def _chrome(request: ConsoleRequest, api: Api, title: str, body: Any) -> str:
    return chrome(request.base, title, body, who=api.caller(), form_token=api.form_token)


def refused(request: ConsoleRequest, status: int, answer: dict[str, Any]) -> ConsoleResponse | None:
    """The API's refusal as the browser sees it: an expired or invalid token signs the person out."""
    if status == 401:
        return redirect(f"{request.base}/signin?note=expired", {"Set-Cookie": cleared_cookie(request)})
    return None


RUNS_PAGE = 50   # runs per page: the API pages through the registry, never loading every run


def runs(request: ConsoleRequest, api: Api) -> ConsoleResponse:
    after = request.query.get("after", "").strip()
    status, answer = api.call("list_runs", {"limit": str(RUNS_PAGE), **({"after": after} if after else {})})
    if status != 200:
        return refused(request, status, answer) or page(status, _chrome(request, api, "Runs", _error(answer)))
    wanted, env, text = (request.query.get(k, "").strip() for k in ("group", "env", "q"))
    listed = [r for r in answer["runs"] if (not wanted or group(r) == wanted)
              and (not env or env in (r.get("environments") or [])) and (not text or text.lower() in
                                                                           f"{r['run_id']} {r['source']}".lower())]
    order = list(GROUPS)
    listed.sort(key=lambda r: r.get("updated_at") or "", reverse=True)
    listed.sort(key=lambda r: order.index(group(r)))   # stable: newest first within each group
    environments = sorted({x for r in answer["runs"] for x in r.get("environments") or []})
    counts = {g: sum(1 for r in answer["runs"] if group(r) == g) for g in GROUPS}
    filters = Safe(
        f'<form class="filters" method="get" action="{e(request.base)}/">'
        + (f'<input type="hidden" name="after" value="{e(after)}">' if after else "") +
        '<div><label for="group">State</label><select id="group" name="group"><option value="">all</option>'
        + "".join(f'<option value="{g}"{" selected" if g == wanted else ""}>{e(label)} ({counts[g]})</option>'
                  for g, label in GROUPS.items())
        + '</select></div><div><label for="env">Environment</label><select id="env" name="env"><option value="">all'
        '</option>' + "".join(f'<option{" selected" if x == env else ""}>{e(x)}</option>' for x in environments)
        + f'</select></div><div><label for="q">Run or source</label><input id="q" name="q" value="{e(text)}"></div>'
        '<button type="submit">Filter</button></form>')
    rows = [[story.short_id(r["run_id"], f"{request.base}/runs/{path_quote(r['run_id'])}"),
             badge(r["state"], r["terminal"]), r.get("why") or "—",
             f"{r['score']:.3f}" if isinstance(r.get("score"), (int, float)) else "—",
             f"{r.get('per_day', 0.0):.2f}", " → ".join(r.get("environments") or []) or "—",
             story.ago(r.get("updated_at")), r.get("source") or ""] for r in listed]
    waiting = counts["waiting"]
    pages = ""
    if after or answer.get("next"):   # filters apply to the page shown; the pager keeps them
        keep = "".join(f"&amp;{k}={e(path_quote(v))}" for k, v in (("group", wanted), ("env", env), ("q", text)) if v)
        pages = (f'<p class="pager">runs {e(after) + " and after" if after else "from the first"}, by run id; '
                 f'filters and counts apply to this page. <a href="{e(request.base)}/?{keep[5:]}">first page</a>'
                 + (f' · <a href="{e(request.base)}/?after={e(path_quote(answer["next"]))}{keep}">next page</a>'
                    if answer.get("next") else "") + "</p>")
    body = Safe(f"<h1>Runs</h1>{banner('ok', f'{waiting} run(s) waiting for approval') if waiting else ''}"
                f"<section>{filters}{table(['run', 'state', 'why', 'score', 'USD/day', 'environments', 'updated', 'source'], rows, numeric=[3, 4], empty='no runs match')}"
                f"{pages}</section>")
    return page(200, _chrome(request, api, "Runs", body))


def deployments(request: ConsoleRequest, api: Api) -> ConsoleResponse:
    status, answer = api.call("list_deployments")
    if status != 200:
        return refused(request, status, answer) or page(status, _chrome(request, api, "Deployments", _error(answer)))
    try:
        order = api.deps.require_topology().names
    except Exception:  # noqa: BLE001 - only the order of the sections depends on it
        order = []
    show_all = request.query.get("all") == "1"
    rows_by_env: dict[str, list[dict[str, Any]]] = {}
    hidden = 0
    for d in answer["deployments"]:
        if d["state"] == "retired" and not show_all:
            hidden += 1
            continue
        rows_by_env.setdefault(d["environment"], []).append(d)
    sections = []
    for env in sorted(rows_by_env, key=lambda x: (order.index(x) if x in order else len(order), x)):
        items = sorted(rows_by_env[env], key=lambda d: (d["region"], d["account"]))
        total = sum(d["per_day"] for d in items)
        rows = [[d["region"], d["account"], d["deployment"], Safe(f"<code>{e(d['model'])}</code>"),
                 link(f"{request.base}/runs/{path_quote(d['run_id'])}", d["run_id"]), d["state"],
                 d.get("last_ping") or "never", d.get("retires_on") or "-", f"{d['per_day']:.2f}"] for d in items]
        sections.append(f"<section><h2>{e(env)}</h2>"
                        f"{table(['region', 'account', 'deployment', 'model', 'run', 'state', 'last keep-alive', 'model retires', 'USD/day'], rows, numeric=[8])}"
                        f"<p class=muted>{e(env)}: {total:.2f} USD per day (estimate)</p>{_history(request, api, env)}</section>")
    body = Safe("<h1>Deployments</h1><p class=muted>Estimated hosting cost per day of each fine-tuned deployment "
                f"(billed by the hour while it exists); total {answer['total_per_day']:.2f} USD per day."
                + (f" {hidden} retired hidden (<a href=\"?all=1\">show all</a>)." if hidden else "") + "</p>"
                + ("".join(sections) or "<section><p class=muted>no deployments yet</p></section>"))
    return page(200, _chrome(request, api, "Deployments", body))


def _history(request: ConsoleRequest, api: Api, env: str, limit: int = 30) -> Safe:
    """The environment's slot history (GET history/{env}), newest first: which model each region served,
    since when, approved by whom, and why it left."""
    status, answer = api.call("history", {"environment": env})
    if status != 200:
        return Safe("")
    entries = list(reversed(answer.get("history") or []))[:limit]
    rows = [[x["region"], Safe(f"<code>{e(x['model'])}</code>"),
             link(f"{request.base}/runs/{path_quote(x['run_id'])}", x["run_id"]), story.ago(x["since"]),
             "serving" if not x.get("until") else story.ago(x["until"]), x.get("came") or "",
             x.get("approved_by") or "—", (x.get("left") or "") + (" [retired]" if x.get("retired") else "")
             + (" [unhealthy]" if not x.get("healthy", True) else "")] for x in entries]
    return Safe(f'<details class=history id="history-{e(env)}"><summary>History of {e(env)} ({len(entries)})'
                f"</summary>{table(['region', 'model', 'run', 'since', 'until', 'came', 'approved by', 'why it left'], rows)}"
                "</details>")


def report(request: ConsoleRequest, api: Api) -> ConsoleResponse:
    """A run's report as stored, if the API lets the caller read the run and lists it; sandboxed."""
    run_id, name = request.params["run_id"], request.params["name"]
    status, answer = api.call("get_run", {"run_id": run_id})
    if status != 200:
        return refused(request, status, answer) or page(status, _chrome(request, api, "Report", _error(answer)))
    if name not in answer.get("reports", {}) or not name.endswith((".html", ".json")):
        return page(404, _chrome(request, api, "Report", banner("error", f"run {run_id} has no report {name}")))
    container = api.deps.blobs.get_container_client(api.deps.settings.reports_container)
    blob = container.get_blob_client(f"{run_id}/{name}")
    if blob.get_blob_properties().size > MAX_REPORT_BYTES:
        return page(413, _chrome(request, api, "Report", banner("error", f"{name} is too large to show here; "
                                                                        f"`ftops report {run_id}` fetches it")))
    data = blob.download_blob().readall()
    kind = "text/html; charset=utf-8" if name.endswith(".html") else "application/json"
    return Response(200, data, {"Content-Type": kind, "Content-Security-Policy": REPORT_CSP, **SECURITY_HEADERS})


def sign_in_page(request: ConsoleRequest, *, offered: bool, form_token: str, entra: bool = False,
                 error: str | None = None, note: str | None = None, username: str | None = "") -> str:
    """`note`: one of app.NOTES' texts (chosen by id from the URL, never the URL's text)."""
    bound = f'<input type="hidden" name="form_token" value="{e(form_token)}">'
    parts = ["<section class=signin><h1>Sign in to the ftops console</h1>"]
    if note:
        parts.append(banner("ok", note))
    if error:
        parts.append(banner("error", error))
    if entra:   # the authorization code flow with PKCE (entra.py): the sign-in people use in Azure
        parts.append(f'<p><a id="entra-sign-in" class="button primary" href="{e(request.base)}/signin/entra">'
                     'Sign in with Microsoft Entra ID</a></p>')
    if offered:
        parts.append(f'<form method="post" action="{e(request.base)}/signin"><h2>Demo user (local stack)</h2>{bound}'
                     f'<label for="username">User</label><input id="username" name="username" value="{e(username or "")}" '
                     'autocomplete="username" placeholder="demo-operator@contoso.example">'
                     '<label for="password">Password</label><input id="password" name="password" type="password" '
                     'autocomplete="current-password"><p><button class="primary" type="submit">Sign in</button></p>'
                     '<p class=muted>The emulator\'s demo users and their roles: docs/operator-api.md.</p></form>')
    parts.append(f'<form method="post" action="{e(request.base)}/signin"><h2>With an access token</h2>{bound}'
                 '<p class=muted>From your own Entra ID sign-in: <code>az account get-access-token --scope '
                 'api://&lt;ftops API client id&gt;/.default --query accessToken -o tsv</code></p>'
                 '<label for="token">Access token</label><input id="token" name="token" type="password" autocomplete="off">'
                 '<p><button type="submit">Sign in with the token</button></p></form></section>')
    return chrome(request.base, "Sign in", Safe("".join(str(p) for p in parts)))


def problem(request: ConsoleRequest, status: int, text: str) -> str:
    return chrome(request.base, f"Error {status}", Safe(f"<h1>Error {status}</h1>{banner('error', text)}"
                                                        f"<p>{link(request.base + '/', 'Back to the runs')}</p>"))


def _error(answer: dict[str, Any]) -> Safe:
    err = answer.get("error") or {}
    return banner("error", f"the operator API refused ({err.get('status')}): {err.get('message')}")
