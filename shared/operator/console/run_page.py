"""One run's page: facts, the approval view (comparison and the decision forms), deployments with their
keep-alive and cost, the reports inline (sandboxed frames), and the timeline (the audit trail).

What is offered comes from the API's `caller` answer; the API still decides on every post."""
from __future__ import annotations

from typing import Any

from shared.operator.console import compare
from shared.operator.console.app import Api, ConsoleRequest, ConsoleResponse, page, path_quote, redirect
from shared.operator.console.layout import Safe, badge, banner, e, hidden, link, short, table
from shared.operator.console.pages import _chrome, _error, refused
from shared.run import command_table, states


def run_page(request: ConsoleRequest, api: Api, *, run_id: str,
             refusal: tuple[int, str] | None = None) -> ConsoleResponse:
    status, run = api.call("get_run", {"run_id": run_id})
    if status != 200:
        return refused(request, status, run) or page(status, _chrome(request, api, f"Run {run_id}", _error(run)))
    base, token = request.base, api.form_token
    url = f"{base}/runs/{path_quote(run_id)}"
    parts: list[Any] = [Safe(f"<h1>Run {e(run_id)} {badge(run['state'], run['terminal'])}</h1>")]
    if refusal:
        parts.append(banner("error", refusal[1]))
    elif request.query.get("done"):
        parts.append(banner("ok", f"{request.query['done']}: the operator API accepted it"))
    parts.append(_facts(run))
    kind, env = states.split(run["state"])
    if kind == "awaiting_approval" and env:
        parts.append(_approval(api, run, env, url, token))
    parts.append(_deployments(run, base, token))
    parts.append(_reports(run, url))
    parts.append(_timeline(run))
    return page(refusal[0] if refusal else 200, _chrome(request, api, f"Run {run_id}", Safe("".join(map(e, parts)))))


def _facts(run: dict[str, Any]) -> Safe:
    ev = run.get("evaluation") or {}
    error = run.get("error") or {}
    facts = [("source", run.get("source")), ("owner", run.get("owner") or "—"),
             ("model", Safe(f"<code>{e(run.get('model') or '—')}</code>")),
             ("environments", " → ".join(run.get("environments") or []) or "—"),
             ("evaluation", "—" if not ev else ("passed" if ev.get("passed") else
                                                f"failed: {', '.join(ev.get('failed_gates') or []) or ev.get('reason')}")),
             ("created", run.get("created_at")), ("updated", run.get("updated_at"))]
    if error:
        facts.append(("why it stopped", short(error.get("message") or error, 400)))
    rows = "".join(f"<div class=muted>{e(k)}</div><div>{e(v)}</div>" for k, v in facts)
    approvals = [[env, f"{a.get('approver_name') or ''} <{a.get('approver_oid')}>", a.get("ticket"),
                  Safe(f"<code>{e(a.get('model'))}</code>"), a.get("at"), a.get("comment") or ""]
                 for env, a in sorted((run.get("approvals") or {}).items())]
    given = (f"<h3>Approvals</h3>{table(['environment', 'approved by', 'ticket', 'model', 'when', 'comment'], approvals)}"
             if approvals else "")
    return Safe(f"<section id=facts><div class=facts>{rows}</div>{given}</section>")


def _approval(api: Api, run: dict[str, Any], env: str, url: str, token: str) -> Safe:
    caller, candidate = run["caller"], run["candidate"]
    mine = compare.read_report(api.deps, run["run_id"])
    cand = compare.chosen_side(mine, "candidate (this run)", run["run_id"], candidate.get("model"))
    references = _serving(api, env, run["run_id"])
    notes = []
    if not references:
        base = compare.base_side(mine)
        notes.append(f"{env} serves no ftops model yet" + ("; compared with the base model." if base else "."))
        references = [base] if base else []
    parts = [f"<section id=approval><h2>Waiting for approval into {e(env)}</h2>"]
    parts += [f"<p class=muted>{e(n)}</p>" for n in notes]
    for ref in references:
        title = f"{ref.label}: {ref.model or 'unknown model'}" + (f" (run {ref.run_id})" if ref.run_id else "")
        rows = [[label, a, b, Safe(f'<span class="{verdict}">{e(change)}</span>') if verdict else change]
                for label, a, b, change, verdict in compare.rows(ref, cand)]
        parts.append(f"<h3>{e(title)}</h3>"
                     f"{table(['', ref.label, 'candidate: ' + (cand.model or '?'), 'change'], rows, numeric=[1, 2, 3])}")
    if cand.gates:
        rows = [[g.get("name"), compare._fmt(g.get("value")), compare._fmt(g.get("threshold")),
                 Safe('<span class="pass">pass</span>' if g.get("passed") else '<span class="fail">fail</span>'),
                 g.get("detail") or ""] for g in cand.gates]
        parts.append(f"<h3>The candidate's gates</h3>{table(['gate', 'value', 'threshold', 'verdict', 'detail'], rows)}")
    if env in caller.get("may_approve", []):
        fixed = (hidden("form_token", token) + hidden("environment", env) + hidden("model", candidate.get("model"))
                 + hidden("dataset_hash", candidate.get("dataset_hash") or "")
                 + hidden("evaluation_report_hash", candidate.get("evaluation_report_hash") or ""))
        parts.append(
            "<div class=actions>"
            f'<form method="post" action="{e(url)}/approve" id="approve-form"><h3>Approve into {e(env)}</h3>{fixed}'
            f'<p class=muted>Approves exactly <code>{e(candidate.get("model"))}</code> with evaluation report '
            f'<code>{e((candidate.get("evaluation_report_hash") or "—")[:23])}…</code></p>'
            '<label for="ticket">Change ticket</label><input id="ticket" name="ticket" required maxlength="128">'
            '<label for="comment">Comment</label><textarea id="comment" name="comment" maxlength="1000"></textarea>'
            f'<button class="primary" type="submit">Approve into {e(env)}</button></form>'
            f'<form method="post" action="{e(url)}/reject" id="reject-form"><h3>Reject</h3>{hidden("form_token", token)}'
            f'{hidden("environment", env)}<label for="reason">Reason</label>'
            '<textarea id="reason" name="reason" required maxlength="1000"></textarea>'
            '<label for="rticket">Ticket</label><input id="rticket" name="ticket" maxlength="128">'
            f'<button class="danger" type="submit">Reject promotion to {e(env)}</button></form></div>')
    else:
        roles = ", ".join(caller.get("roles") or []) or "no roles"
        parts.append(f"<p class=muted id=no-approval>Approving needs the app role Approver.{e(env)}; you are signed in "
                     f"with {e(roles)}, so no decision is offered here (the operator API would refuse it).</p>")
    parts.append("</section>")
    return Safe("".join(map(str, parts)))


def _serving(api: Api, env: str, run_id: str) -> list[compare.Side]:
    """What `env` serves now (its active deployments of other runs), each with its run's evaluation."""
    status, answer = api.call("list_deployments")
    if status != 200:
        return []
    seen: dict[tuple[str, str], compare.Side] = {}
    for d in answer["deployments"]:
        key = (d["run_id"], d["model"])
        if d["environment"] != env or d["state"] != "active" or d["run_id"] == run_id or key in seen:
            continue
        readable, _ = api.call("get_run", {"run_id": d["run_id"]})   # the API decides who may read that run
        report = compare.read_report(api.deps, d["run_id"]) if readable == 200 else None
        seen[key] = compare.chosen_side(report, f"serving {env} now", d["run_id"], d["model"])
    return list(seen.values())


def _deployments(run: dict[str, Any], base: str, token: str) -> Safe:
    items = sorted(run.get("deployments") or [], key=lambda d: (d["environment"], d["region"]))
    rows = [[d["environment"], d["region"], d["account"], d["deployment"], Safe(f"<code>{e(d['model'])}</code>"),
             d["state"], d.get("last_ping") or "never", f"{d.get('per_day', 0.0):.2f}"] for d in items]
    total = sum(d.get("per_day", 0.0) for d in items)
    headers = ["environment", "region", "account", "deployment", "model", "state", "last keep-alive", "USD/day"]
    parts = [(f"<section id=deployments><h2>Deployments</h2>{table(headers, rows, numeric=[7], empty='not deployed anywhere')}"
             f"<p class=muted>estimated hosting: {total:.2f} USD per day</p>")]
    if run["caller"].get("may_operate"):
        live = sorted({d["environment"] for d in items if d["state"] == "active"})
        for env in live:
            parts.append(f'<form class="inline" method="post" action="{e(base)}/environments/{e(path_quote(env))}/rollback">'
                         f'{hidden("form_token", token)}{hidden("run_id", run["run_id"])}'
                         f'<input name="reason" placeholder="why" maxlength="1000"> '
                         f'<button class="danger" type="submit">Roll back {e(env)}</button></form> ')
        if run["state"] != states.RETIRED and items:
            parts.append(f'<form class="inline" method="post" action="{e(base)}/runs/{e(path_quote(run["run_id"]))}/retire">'
                         f'{hidden("form_token", token)}<input name="reason" placeholder="why" maxlength="1000"> '
                         '<button class="danger" type="submit">Retire this run</button></form>')
    parts.append("</section>")
    return Safe("".join(map(str, parts)))


def _reports(run: dict[str, Any], url: str) -> Safe:
    names = [n for n in ("evaluation.html", "validation.html") if n in (run.get("reports") or {})]
    if not names:
        return Safe("<section id=reports><h2>Reports</h2><p class=muted>no reports yet</p></section>")
    parts = ["<section id=reports><h2>Reports</h2>"]
    for name in names:
        src = f"{url}/reports/{name}"
        data = name.replace(".html", ".json")
        parts.append(f'<h3>{e(name.removesuffix(".html").capitalize())} report · {link(src, "open alone")}'
                     + (f' · {link(f"{url}/reports/{data}", "JSON")}' if data in run["reports"] else "") + "</h3>"
                     f'<iframe class="report" id="report-{e(name.removesuffix(".html"))}" sandbox="" src="{e(src)}" '
                     f'title="{e(name)} of run {e(run["run_id"])}"></iframe>')
    parts.append("</section>")
    return Safe("".join(parts))


def _timeline(run: dict[str, Any]) -> Safe:
    rows = []
    for a in run.get("audit") or []:
        change = f"{a.get('from_state') or '∅'} → {a['to_state']}" if a.get("to_state") and \
            a.get("to_state") != a.get("from_state") else ""
        rows.append([a.get("at"), a.get("action"), a.get("actor"), change, short(a.get("detail") or "", 160)])
    return Safe(f"<section id=timeline><h2>Timeline (audit trail)</h2>"
                f"{table(['when', 'what', 'who', 'state', 'detail'], rows, empty='no audit records')}</section>")


def run(request: ConsoleRequest, api: Api) -> ConsoleResponse:
    return run_page(request, api, run_id=request.params["run_id"])


def act(request: ConsoleRequest, api: Api) -> ConsoleResponse:
    """A button on a run's page: the operator API's own commands (a command-table row through the API), its
    body from the row, filled from the form. The operator API decides; a refusal comes back with its status."""
    action = request.params.get("action", "")
    row = command_table.BY_NAME.get(action)
    if row is None or row.via != "api":
        return page(404, _chrome(request, api, "Not found", banner("error", f"no action {action!r}")))
    form = request.form()
    params = {name: request.params.get(name, "") for name in row.path_fields}
    body = {name: form.get(name, "") if row.required(name) else _none_if_blank(form.get(name)) for name in row.body}
    run_id = params.get("run_id") or body.get("run_id")
    status, answer = api.call(action, params, body)
    if status in (200, 202):
        target = f"{request.base}/runs/{path_quote(run_id)}" if run_id else f"{request.base}/deployments"
        return redirect(f"{target}?done={path_quote(row.done)}")
    message = (answer.get("error") or {}).get("message", "refused")
    gone = refused(request, status, answer)
    if gone or not run_id:
        return gone or page(status, _chrome(request, api, "Refused", _error(answer)))
    return run_page(request, api, run_id=run_id, refusal=(status, f"{action} refused ({status}): {message}"))


def _none_if_blank(value: str | None) -> str | None:
    return value.strip() or None if value else None
