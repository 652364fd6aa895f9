"""One run's page: facts, the approval view (comparison and the decision forms), deployments with their
keep-alive and cost, the reports inline (sandboxed frames), and the timeline (the audit trail).

What is offered comes from the API's `caller` answer; the API still decides on every post."""
from __future__ import annotations

from typing import Any

from shared.operator.console import compare, story
from shared.operator.console.app import DONE, Api, ConsoleRequest, ConsoleResponse, page, path_quote, redirect
from shared.operator.console.layout import Safe, badge, banner, e, hidden, link, short, table
from shared.operator.console.pages import _chrome, _error, refused
from shared.run import command_table, states
from shared.stages.drift import warning as drift_warning


def run_page(request: ConsoleRequest, api: Api, *, run_id: str,
             refusal: tuple[int, str] | None = None) -> ConsoleResponse:
    status, run = api.call("get_run", {"run_id": run_id})
    if status != 200:
        return refused(request, status, run) or page(status, _chrome(request, api, f"Run {run_id}", _error(run)))
    base, token = request.base, api.form_token
    url = f"{base}/runs/{path_quote(run_id)}"
    drifting = run.get("drift") or []
    parts: list[Any] = [Safe(f"<h1>Run {story.copyable(run_id)} {badge(run['state'], run['terminal'])}"
                             + (' <span class="state failed" id="drift-badge">drift</span>' if drifting else "")
                             + "</h1>"),
                        story.stage_strip(run)]
    parts += [banner("error", drift_warning(check)) for check in drifting]
    if refusal:
        parts.append(banner("error", refusal[1]))
    elif request.query.get("done") in DONE:   # an id: the text is ours, never the URL's
        done = DONE[request.query["done"]]
        parts.append(banner("ok", done if done.startswith("nothing changed") else
                            f"{done}: the operator API accepted it; the run is {run['state']} now"))
    parts.append(_facts(run))
    kind, env = states.split(run["state"])
    if kind == "awaiting_approval" and env:
        parts.append(_approval(api, run, env, url, token))
    parts.append(_deployments(run, base, token, api, show_all=request.query.get("all") == "1"))
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
             ("why", run.get("why") or "—"),
             ("created", story.ago(run.get("created_at"))), ("in this state since", story.ago(run.get("state_since")
                                                                                          or run.get("updated_at")))]
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
    given = (run.get("approvals") or {}).get(env) or {}
    if given and given.get("model") == candidate.get("model"):   # approved: the deploy starts (no stale forms)
        who = f"{given.get('approver_name') or ''} <{given.get('approver_oid')}>".strip()
        return Safe(f"<section id=approval><h2>Approved into {e(env)}: deploying</h2>"
                    f"<p id=approved>Approved by {e(who)} (ticket {e(given.get('ticket'))}) "
                    f"{story.ago(given.get('at'))}; the deployment to {e(env)} starts now. This page shows "
                    f"<code>deploying:{e(env)}</code>, then <code>deployed:{e(env)}</code>.</p></section>")
    serving = (run.get("serving_now") or {}).get(env) or []
    served = sorted({(d["model"], d["whose"]) for d in serving})
    champion = compare.champion_side(mine, env)
    notes, references = [], []
    if served:
        notes.append(f"{env} serves now: " + "; ".join(f"{m} ({whose})" for m, whose in served) + ".")
    if champion is not None:
        references = [champion]
        if served and champion.model not in {m for m, _ in served}:
            notes.append(f"This run's evaluation measured {champion.model}, which {env} no longer serves: "
                         "the comparison is with what it served then.")
    else:
        base = compare.base_side(mine)
        notes.append(("This run's evaluation did not measure what " + env + " serves; " if served else
                      f"{env} serves no ftops model yet; ") + ("compared with the base model, measured on the same "
                                                               "examples." if base else "nothing to compare with."))
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


def rollback_plan(api: Api, run: dict[str, Any], env: str) -> tuple[list[dict[str, Any]], str | None]:
    """What a rollback of this run's current model out of `env` would do, per region: (rows, why not)."""
    from shared.stages.rollback import go_back_to
    rows, nowhere = [], None
    for d in run.get("deployments") or []:
        if d["environment"] != env or d["state"] != "active" or d["run_id"] != run["run_id"]:
            continue
        slot = api.deps.registry.get_deployment(env, d["account"], d["deployment"])
        if slot is None or slot.state != "active":
            continue
        to, why = go_back_to(api.deps, slot)
        if to is None:
            nowhere = why
        whose = "this run's earlier model" if to and to.run_id == run["run_id"] else f"run {to.run_id}" if to else ""
        rows.append({**d, "afterwards": f"{to.model} ({whose})" if to else "— (refused: nothing to go back to)"})
    return rows, (nowhere if rows else "this run serves nothing in " + env)


def may_retire(run: dict[str, Any]) -> bool:
    live = any(d["state"] == "active" for d in run.get("deployments") or [])
    return states.can_transition(run["state"], states.RETIRED) or (run["state"] == states.RETIRED and live)


def _deployments(run: dict[str, Any], base: str, token: str, api: Api | None = None, show_all: bool = False) -> Safe:
    every = sorted(run.get("deployments") or [], key=lambda d: (d["environment"], d["region"]))
    items = every if show_all else [d for d in every if d["state"] != "retired"]
    rows = [[d["environment"], d["region"], d["account"], d["deployment"], Safe(f"<code>{e(d['model'])}</code>"),
             d["state"], d.get("last_ping") or "never", d.get("retires_on") or "-",
             f"{d.get('per_day', 0.0):.2f}"] for d in items]
    total = sum(d.get("per_day", 0.0) for d in items)
    hidden_count = len(every) - len(items)
    headers = ["environment", "region", "account", "deployment", "model", "state", "last keep-alive", "model retires",
               "USD/day"]
    parts = [(f"<section id=deployments><h2>Deployments</h2>{table(headers, rows, numeric=[8], empty='not deployed anywhere')}"
             f"<p class=muted>estimated hosting: {total:.2f} USD per day"
             + (f" · {hidden_count} retired hidden (<a href=\"?all=1\">show all</a>)" if hidden_count else "") + "</p>")]
    if run["caller"].get("may_operate"):
        live = sorted({d["environment"] for d in every if d["state"] == "active" and d["run_id"] == run["run_id"]})
        for env in live:
            _, why = rollback_plan(api, run, env) if api is not None else ([], "unknown")
            if why:
                parts.append(f'<p class=muted id="no-rollback-{e(env)}">No rollback of {e(env)}: {e(why)}</p>')
                continue
            parts.append(f'<form class="inline" method="post" action="{e(base)}/environments/{e(path_quote(env))}/rollback">'
                         f'{hidden("form_token", token)}{hidden("run_id", run["run_id"])}'
                         f'<button class="danger" type="submit">Roll back {e(env)}…</button></form> ')
        if may_retire(run) and any(d["state"] == "active" for d in every):
            parts.append(f'<form class="inline" method="post" action="{e(base)}/runs/{e(path_quote(run["run_id"]))}/retire">'
                         f'{hidden("form_token", token)}<button class="danger" type="submit">Retire this run…</button></form>')
    parts.append("</section>")
    return Safe("".join(map(str, parts)))


def confirm_page(request: ConsoleRequest, api: Api, action: str, run_id: str, env: str | None) -> ConsoleResponse:
    """What a retire or a rollback will change — the deployments that go, what each region serves afterwards,
    the cost that stops — and the form that does it (posted again with confirm=yes)."""
    status, run = api.call("get_run", {"run_id": run_id})
    if status != 200:
        return refused(request, status, run) or page(status, _chrome(request, api, "Confirm", _error(run)))
    token, url = api.form_token, f"{request.base}/runs/{path_quote(run_id)}"
    if action == "retire":
        going = [d for d in run.get("deployments") or [] if d["state"] == "active"]
        rows = [[d["environment"], d["region"], d["account"], Safe(f"<code>{e(d['model'])}</code>"), "nothing",
                 f"{d.get('per_day', 0.0):.2f}"] for d in going]
        title, target = f"Retire run {run_id}?", f"{url}/retire"
        what = ("Retiring removes every deployment this run still owns, in every environment; its models are never "
                "brought back by a rollback.")
    else:
        plan, why = rollback_plan(api, run, env or "")
        going = plan
        rows = [[d["environment"], d["region"], d["account"], Safe(f"<code>{e(d['model'])}</code>"), d["afterwards"],
                 "0.00"] for d in plan]
        title, target = f"Roll back {env}?", f"{request.base}/environments/{path_quote(env or '')}/rollback"
        what = (f"Rolling back takes this run's model out of {env} and puts back the last model each region served "
                "that was healthy and not retired." + (f" Refused now: {why}" if why else ""))
    stops = sum(d.get("per_day", 0.0) for d in going) if action == "retire" else 0.0
    body = Safe(f"<h1>{e(title)}</h1><section id=confirm><p>{e(what)}</p>"
                f"{table(['environment', 'region', 'account', 'serves now', 'serves afterwards', 'USD/day that stops'], rows, numeric=[5], empty='nothing deployed')}"
                f"<p id=cost-stops>Hosting that stops: {stops:.2f} USD per day (estimate).</p>"
                f'<form method="post" action="{e(target)}" id="confirm-form">{hidden("form_token", token)}'
                f'{hidden("run_id", run_id)}{hidden("confirm", "yes")}'
                '<label for="reason">Why (kept in the audit trail)</label>'
                '<input id="reason" name="reason" maxlength="1000" required>'
                f'<button class="danger" type="submit">{e("Retire" if action == "retire" else "Roll back " + (env or ""))}</button> '
                f'{link(url, "Cancel")}</form></section>')
    return page(200, _chrome(request, api, title, body))


def _reports(run: dict[str, Any], url: str) -> Safe:
    names = [n for n in ("evaluation.html", "validation.html") if n in (run.get("reports") or {})]
    if not names:
        return Safe("<section id=reports><h2>Reports</h2><p class=muted>no reports yet</p></section>")
    parts = ["<section id=reports><h2>Reports</h2>", _lineage_note(run.get("report_lineage"))]
    for name in names:
        src = f"{url}/reports/{name}"
        data = name.replace(".html", ".json")
        parts.append(f'<h3>{e(name.removesuffix(".html").capitalize())} report · {link(src, "open alone")}'
                     + (f' · {link(f"{url}/reports/{data}", "JSON")}' if data in run["reports"] else "") + "</h3>"
                     f'<iframe class="report" id="report-{e(name.removesuffix(".html"))}" sandbox="" src="{e(src)}" '
                     f'title="{e(name)} of run {e(run["run_id"])}"></iframe>')
    parts.append("</section>")
    return Safe("".join(parts))


def _lineage_note(lineage: dict[str, Any] | None) -> str:
    """The evaluation report's lineage as GET runs/{id} states it: the same records the approvals above show."""
    if not lineage:
        return ""
    if lineage.get("missing"):
        return str(banner("error", f"The evaluation report does not show {len(lineage['missing'])} decision(s) recorded "
                                   "on this run yet (the next decision, or repeating the last one, amends it)."))
    if lineage.get("version", 1) > 1:
        return (f'<p id=report-lineage class=muted>Evaluation report: lineage version {int(lineage["version"])}, '
                f'amended {e(story.ago(lineage.get("amended_at")))} with {len(lineage.get("decisions") or [])} '
                "decision(s); its evaluation is unchanged.</p>")
    return "<p id=report-lineage class=muted>Evaluation report: as evaluated (no decision on it yet).</p>"


def _timeline(run: dict[str, Any]) -> Safe:
    """The audit trail, newest first, each record in words (the raw record in the row's title)."""
    rows = [[story.ago(a.get("at")), Safe(f'<span title="{e(a.get("action"))}">{e(story.describe(a))}</span>'),
             a.get("actor")] for a in reversed(run.get("audit") or [])]
    return Safe(f"<section id=timeline><h2>Timeline (newest first)</h2>"
                f"{table(['when', 'what happened', 'who'], rows, empty='no audit records')}</section>")


def run(request: ConsoleRequest, api: Api) -> ConsoleResponse:
    return run_page(request, api, run_id=request.params["run_id"])


def act(request: ConsoleRequest, api: Api) -> ConsoleResponse:
    """A button on a run's page: the operator API's own commands (a command-table row through the API), its
    body from the row, filled from the form. The operator API decides; a refusal comes back with its status.
    Retire and rollback first show what they will change (confirm_page) and act on the confirmed post."""
    action = request.params.get("action", "")
    row = command_table.BY_NAME.get(action)
    if row is None or row.via != "api":
        return page(404, _chrome(request, api, "Not found", banner("error", f"no action {action!r}")))
    form = request.form()
    params = {name: request.params.get(name) or form.get(name, "") for name in row.path_fields}
    if missing := [name for name, value in params.items() if not value]:
        return page(400, _chrome(request, api, "Bad request", banner("error", f"a {action} names {missing[0]}")))
    body = {name: form.get(name, "") if row.required(name) else _none_if_blank(form.get(name)) for name in row.body}
    run_id = params.get("run_id") or body.get("run_id")
    if action in ("retire", "rollback") and form.get("confirm") != "yes" and run_id:
        return confirm_page(request, api, action, run_id, params.get("environment"))
    status, answer = api.call(action, params, body)
    if status in (200, 202):
        # the banner is named by a short id (DONE), never by text from the URL; the row's word is the id
        done = "unchanged" if answer.get("note") else row.done.replace(" ", "-")
        target = f"{request.base}/runs/{path_quote(run_id)}" if run_id else f"{request.base}/deployments"
        return redirect(f"{target}?done={path_quote(done)}")
    message = (answer.get("error") or {}).get("message", "refused")
    gone = refused(request, status, answer)
    if gone or not run_id:
        return gone or page(status, _chrome(request, api, "Refused", _error(answer)))
    return run_page(request, api, run_id=run_id, refusal=(status, f"{action} refused ({status}): {message}"))


def _none_if_blank(value: str | None) -> str | None:
    return value.strip() or None if value else None
