"""The console's pages without a server: what a person sees, what is offered to whom, what the browser is
told to allow, and that every refusal is the operator API's own answer."""
from __future__ import annotations

import re
from typing import Any, ClassVar

from fakes import make_deps, settings_for_tests

from shared.azure.access import Caller
from shared.operator.console import ConsoleRequest, compare, handle
from shared.operator.console.app import PAGE_CSP, csrf_for
from shared.run.topology import Topology

BASE = "http://127.0.0.1:7071/api/console"
TOKEN = "header.payload.signature"
HOSTILE = '<script>alert("x")</script>'
OPERATOR = Caller(oid="oid-op", tenant="t", name="Demo Operator", roles=frozenset({"Approver.prod", "Operator", "Reader"}))
READER = Caller(oid="oid-reader", tenant="t", name="Demo Reader", roles=frozenset({"Reader"}))


def run_summary(run_id: str, state: str, *, terminal: bool = False, updated: str = "2026-01-01T00:00:00Z") -> dict:
    return {"run_id": run_id, "source": f"datasets/{run_id}.jsonl", "state": state, "terminal": terminal,
            "owner": "oid-owner", "environments": ["dev", "test", "prod"], "model": "m-ft", "created_at": updated,
            "updated_at": updated}


def run_detail(caller: Caller, state: str = "awaiting_approval:prod", run_id: str = "r1") -> dict:
    approver_envs = sorted(r.removeprefix("Approver.") for r in caller.roles if r.startswith("Approver."))
    return {**run_summary(run_id, state), "settings": {}, "dataset_hash": "sha256:d", "validation": None,
            "evaluation": {"passed": True}, "error": None, "approvals": {},
            "candidate": {"run_id": run_id, "model": "m-ft", "dataset_hash": "sha256:d",
                          "evaluation_report_hash": "sha256:e"},
            "deployments": [{"environment": "test", "region": "eastus2", "account": "a", "deployment": "d",
                             "model": "m-ft", "state": "active", "last_ping": None, "per_day": 40.8, "run_id": run_id}],
            "audit": [{"at": "2026-01-01T00:00:00Z", "action": "run.created", "actor": HOSTILE, "from_state": None,
                       "to_state": "received", "detail": {"note": HOSTILE}}],
            "reports": {"evaluation.html": "u", "evaluation.json": "u"},
            "caller": {"roles": sorted(caller.roles), "may_approve": approver_envs,
                       "may_operate": caller.has("Operator")}}


class FakeApi:
    """The operator API as the console sees it: canned answers, every call recorded."""
    answers: ClassVar[dict[str, tuple[int, dict]]] = {}
    calls: ClassVar[list[tuple[str, dict, Any]]] = []
    who: ClassVar[Caller] = OPERATOR

    def __init__(self, deps: Any, token: str) -> None:
        self.deps, self.token = deps, token

    def call(self, action: str, params: dict | None = None, body: Any = None) -> tuple[int, dict]:
        FakeApi.calls.append((action, dict(params or {}), body))
        return FakeApi.answers[action]

    def caller(self) -> Caller:
        return FakeApi.who

    @property
    def form_token(self) -> str:
        return csrf_for(self.token)


DEPS = make_deps(settings_for_tests(credential="local-dev"), topology=Topology(environments=()))


def request(path: str, *, method: str = "GET", query: dict | None = None, params: dict | None = None,
            body: bytes = b"", cookie: bool = True, headers: dict | None = None) -> ConsoleRequest:
    h = {"Host": "127.0.0.1:7071", **({"Cookie": f"ftops_console={TOKEN}"} if cookie else {}), **(headers or {})}
    return ConsoleRequest(method=method, url=f"{BASE}{path}", params=params or {}, query=query or {}, headers=h,
                          body=body)


def serve(view: str, req: ConsoleRequest, *, who: Caller = OPERATOR, deps: Any = DEPS,
          **answers: tuple[int, dict]) -> Any:
    FakeApi.answers, FakeApi.calls, FakeApi.who = answers, [], who
    return handle(view, req, lambda: deps, FakeApi)


def test_runs_waiting_for_approval_come_first_and_every_value_is_escaped() -> None:
    runs = [run_summary("done-1", "deployed:prod", terminal=True, updated="2026-03-01T00:00:00Z"),
            run_summary("busy-1", "training", updated="2026-02-01T00:00:00Z"),
            run_summary(f"wait-{HOSTILE}", "awaiting_approval:prod")]
    answer = serve("runs", request("/"), list_runs=(200, {"runs": runs}))
    page = answer.body.decode()
    assert answer.status == 200
    order = [m for m in re.findall(r'data-state="([^"]+)"', page)]
    assert order == ["awaiting_approval:prod", "training", "deployed:prod"]
    assert HOSTILE not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "1 run(s) waiting for approval" in page


def test_the_state_filter_shows_only_that_group() -> None:
    runs = [run_summary("busy-1", "training"), run_summary("wait-1", "awaiting_approval:prod")]
    page = serve("runs", request("/", query={"group": "active"}), list_runs=(200, {"runs": runs})).body.decode()
    assert "busy-1" in page and ">wait-1<" not in page


def test_pages_allow_no_script_and_no_outside_resource() -> None:
    answer = serve("runs", request("/"), list_runs=(200, {"runs": []}))
    csp = answer.headers["Content-Security-Policy"]
    assert csp == PAGE_CSP
    assert "script-src" not in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert answer.headers["X-Content-Type-Options"] == "nosniff" and answer.headers["Cache-Control"] == "no-store"
    assert not re.search(r'(src|href)="(https?:)?//', answer.body.decode())   # nothing from another host


def test_an_approver_gets_the_decision_forms_bound_to_the_candidate() -> None:
    page = serve("run", request("/runs/r1", params={"run_id": "r1"}), get_run=(200, run_detail(OPERATOR)),
                 list_deployments=(200, {"deployments": []})).body.decode()
    form = re.search(r'<form method="post" action="/api/console/runs/r1/approve" id="approve-form">(.*?)</form>', page)
    assert form, "no approve form for an approver"
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(1)))
    assert fields == {"form_token": csrf_for(TOKEN), "environment": "prod", "model": "m-ft",
                      "dataset_hash": "sha256:d", "evaluation_report_hash": "sha256:e"}
    assert 'id="reject-form"' in page and "No rollback of test: " in page   # nothing earlier to go back to
    assert HOSTILE not in page   # the audit trail's actor and detail, escaped


def test_a_reader_is_offered_no_decision_and_no_operator_action() -> None:
    page = serve("run", request("/runs/r1", params={"run_id": "r1"}), who=READER, get_run=(200, run_detail(READER)),
                 list_deployments=(200, {"deployments": []})).body.decode()
    assert "approve-form" not in page and "reject-form" not in page and "Roll back" not in page
    assert "needs the app role Approver.prod" in page


def test_a_refused_action_shows_the_api_answer_with_its_status() -> None:
    body = f"form_token={csrf_for(TOKEN)}&environment=prod&ticket=CHG-1&model=m-ft".encode()
    refusal = {"error": {"status": 403, "message": "approving into prod needs the app role Approver.prod"}}
    answer = serve("act", request("/runs/r1/approve", method="POST", params={"run_id": "r1", "action": "approve"},
                                  body=body), who=READER, approve=(403, refusal), get_run=(200, run_detail(READER)),
                   list_deployments=(200, {"deployments": []}))
    assert answer.status == 403
    assert "approve refused (403): approving into prod needs the app role Approver.prod" in answer.body.decode()
    action, params, sent = FakeApi.calls[0]
    assert (action, params, sent["model"], sent["ticket"]) == ("approve", {"run_id": "r1"}, "m-ft", "CHG-1")


def test_an_accepted_approval_goes_back_to_the_run() -> None:
    body = f"form_token={csrf_for(TOKEN)}&environment=prod&ticket=CHG-1&model=m-ft".encode()
    answer = serve("act", request("/runs/r1/approve", method="POST", params={"run_id": "r1", "action": "approve"},
                                  body=body), approve=(202, {"approved": {}}))
    assert answer.status == 303 and answer.headers["Location"] == "/api/console/runs/r1?done=approved"


def test_a_form_without_the_session_token_or_from_another_site_never_reaches_the_api() -> None:
    stale = serve("act", request("/runs/r1/approve", method="POST", params={"run_id": "r1", "action": "approve"},
                                 body=b"form_token=guess&environment=prod"), approve=(202, {}))
    other = serve("act", request("/runs/r1/approve", method="POST", params={"run_id": "r1", "action": "approve"},
                                 body=f"form_token={csrf_for(TOKEN)}".encode(),
                                 headers={"Origin": "https://evil.example"}), approve=(202, {}))
    assert (stale.status, other.status) == (403, 403) and FakeApi.calls == []


def test_without_a_session_the_console_asks_to_sign_in_and_an_expired_one_signs_out() -> None:
    anonymous = serve("runs", request("/", cookie=False))
    assert anonymous.status == 303 and anonymous.headers["Location"] == "/api/console/signin"
    expired = serve("runs", request("/"), list_runs=(401, {"error": {"status": 401, "message": "expired"}}))
    assert expired.status == 303 and "Max-Age=0" in expired.headers["Set-Cookie"]


def test_the_session_cookie_is_http_only_strict_and_secure_over_https() -> None:
    from shared.operator.console.app import session_cookie
    plain = session_cookie(request("/"), TOKEN, 600)
    assert "HttpOnly" in plain and "SameSite=Strict" in plain and "Path=/api/console" in plain
    assert "Secure" not in plain
    https = ConsoleRequest(method="POST", url="https://app.azurewebsites.net/api/console/signin")
    assert session_cookie(https, TOKEN, 600).endswith("; Secure")


def test_a_report_the_run_does_not_list_is_not_served() -> None:
    answer = serve("report", request("/runs/r1/reports/x.html", params={"run_id": "r1", "name": "../r2/evaluation.html"}),
                   get_run=(200, run_detail(OPERATOR)))
    assert answer.status == 404


def test_the_comparison_says_which_way_each_metric_moved() -> None:
    serving = compare.Side("serving prod now", "m-old", "r0", {"mean_f1": 0.5, "latency_p95_ms": 100.0, "n_errors": 0},
                           [{"passed": True}])
    candidate = compare.Side("candidate", "m-new", "r1", {"mean_f1": 0.75, "latency_p95_ms": 130.0, "n_errors": 0},
                             [{"passed": True}, {"passed": False}])
    rows = {r[0]: r[1:] for r in compare.rows(serving, candidate)}
    assert rows["mean token F1"] == ("0.500", "0.750", "+0.250", "better")
    assert rows["latency p95 (ms)"] == ("100", "130", "+30", "worse")
    assert rows["errors"][3] == "" and rows["gates passed"][:2] == ("1 / 1", "1 / 2")


def test_the_approval_view_shows_answers_a_grader_could_not_score() -> None:
    serving = compare.Side("serving prod now", "m-old", "r0", {"mean_f1": 0.5, "grader_errors": {}}, [])
    candidate = compare.Side("candidate", "m-new", "r1", {"mean_f1": 0.7, "grader_errors": {"judge": 3}}, [])
    rows = {r[0]: r[1:] for r in compare.rows(serving, candidate)}
    assert rows["answers a grader could not score"] == ("0", "3", "", "worse")


def test_rollback_and_reject_post_what_the_api_expects() -> None:
    token = csrf_for(TOKEN)
    back = serve("act", request("/environments/prod/rollback", method="POST",
                                params={"environment": "prod", "action": "rollback"},
                                body=f"form_token={token}&run_id=r1&reason=bad+answers&confirm=yes".encode()),
                 rollback=(200, {"rolled_back": "prod"}))
    assert back.status == 303 and back.headers["Location"] == "/api/console/runs/r1?done=rolled-back"
    assert FakeApi.calls == [("rollback", {"environment": "prod"},   # the body the CLI sends too (the row's)
                              {"run_id": "r1", "deployment": None, "reason": "bad answers"})]
    no = serve("act", request("/runs/r1/reject", method="POST", params={"run_id": "r1", "action": "reject"},
                              body=f"form_token={token}&environment=prod&reason=worse+latency&ticket=".encode()),
               reject=(200, {"rejected": {}}))
    assert no.status == 303
    assert FakeApi.calls == [("reject", {"run_id": "r1"}, {"environment": "prod", "reason": "worse latency",
                                                            "ticket": None})]


def test_the_session_is_found_among_other_cookies_even_broken_ones() -> None:
    req = request("/", cookie=False, headers={"Cookie": f'other="a;b\\"; bad cookie; ftops_console={TOKEN}; x=1'})
    assert req.token() == TOKEN
    assert request("/", cookie=False, headers={"Cookie": "ftops_console=; x=1"}).token() is None


def evaluation(model: str, f1: float, p95: float, gates: list[bool], champion: tuple[str, float] | None = None) -> bytes:
    import json

    def metrics(f1: float, p95: float) -> dict:
        return {"mean_f1": f1, "exact_match": 0.5, "latency_p50_ms": 40.0, "latency_p95_ms": p95, "n_errors": 0}
    candidates = [{"name": "final", "kind": "fine_tuned", "model": model, "metrics": metrics(f1, p95)}]
    if champion:
        candidates.append({"name": "champion", "kind": "champion", "model": champion[0], "environment": "prod",
                           "metrics": metrics(champion[1], 120.0)})
    return json.dumps({"chosen": {"name": "final", "model": model}, "examples": {"evaluated": 40},
                       "gates": [{"name": f"g{i}", "passed": ok} for i, ok in enumerate(gates)],
                       "candidates": candidates}).encode()


def test_the_approval_view_compares_the_candidate_with_what_prod_serves_now_on_the_same_examples() -> None:
    deps = make_deps(DEPS.settings, topology=DEPS.topology)   # reports as the evaluate stage stores them
    deps.blobs.data[("reports", "r1/evaluation.json")] = evaluation("m-ft", 0.8, 150.0, [True, True],
                                                                    champion=("m-old", 0.6))
    # the champion's own report, on its own examples: never the numbers of this comparison (issue 20)
    deps.blobs.data[("reports", "r0/evaluation.json")] = evaluation("m-old", 0.758, 120.0, [True, True])
    serving = {"model": "m-old", "run_id": "r0", "whose": "run r0", "region": "eastus"}
    detail = {**run_detail(OPERATOR), "serving_now": {"prod": [serving, {**serving, "region": "westeurope"}]}}
    page = serve("run", request("/runs/r1", params={"run_id": "r1"}), deps=deps, get_run=(200, detail),
                 list_deployments=(200, {"deployments": []})).body.decode()
    approval = page[page.index('id=approval'):page.index('id="approve-form"')]
    assert approval.count("serving prod (measured on this run&#x27;s 40 examples): m-old") == 1   # one model
    assert "prod serves now: m-old (run r0)." in approval and "0.758" not in approval
    assert re.search(r"mean token F1</td><td class=num>0\.600</td><td class=num>0\.800</td><td class=num>"
                     r'<span class="better">\+0\.200</span>', approval)
    assert re.search(r'latency p95 \(ms\)</td><td class=num>120</td><td class=num>150</td><td class=num>'
                     r'<span class="worse">\+30</span>', approval)


def test_after_a_retrain_the_approval_view_names_the_runs_own_earlier_model_as_serving() -> None:
    deps = make_deps(DEPS.settings, topology=DEPS.topology)
    deps.blobs.data[("reports", "r1/evaluation.json")] = evaluation("m-ft", 0.8, 150.0, [True],
                                                                    champion=("m-first", 0.7))
    serving = {"model": "m-first", "run_id": "r1", "whose": "this run's earlier model", "region": "eastus"}
    detail = {**run_detail(OPERATOR), "serving_now": {"prod": [serving]}}
    page = serve("run", request("/runs/r1", params={"run_id": "r1"}), deps=deps, get_run=(200, detail),
                 list_deployments=(200, {"deployments": []})).body.decode()
    approval = page[page.index('id=approval'):page.index('id="approve-form"')]
    assert "serves no ftops model" not in approval   # before: "prod serves no ftops model yet"
    assert "prod serves now: m-first (this run&#x27;s earlier model)." in approval and "0.700" in approval


def test_after_approve_the_page_says_deploying_and_offers_no_stale_forms() -> None:
    given = {"prod": {"model": "m-ft", "approver_oid": "oid-a", "approver_name": "Ada", "ticket": "CHG-7",
                      "at": "2026-01-01T00:00:00.123456Z"}}
    page = serve("run", request("/runs/r1", params={"run_id": "r1"}), get_run=(200, {**run_detail(OPERATOR),
                                                                                     "approvals": given}),
                 list_deployments=(200, {"deployments": []})).body.decode()
    assert "Approved into prod: deploying" in page and "Ada &lt;oid-a&gt;" in page and "CHG-7" in page
    assert "approve-form" not in page and "reject-form" not in page   # before: "Waiting for approval", both forms


def test_a_rollback_post_without_an_environment_is_a_400_not_a_500() -> None:
    answer = serve("act", request("/runs/r1/rollback", method="POST", params={"run_id": "r1", "action": "rollback"},
                                  body=f"form_token={csrf_for(TOKEN)}&run_id=r1&confirm=yes".encode()))
    assert answer.status == 400 and FakeApi.calls == []


def test_retire_first_shows_what_goes_and_the_cost_that_stops_then_acts_on_confirmation() -> None:
    token = csrf_for(TOKEN)
    detail = run_detail(OPERATOR, state="deployed:test")
    first = serve("act", request("/runs/r1/retire", method="POST", params={"run_id": "r1", "action": "retire"},
                                 body=f"form_token={token}".encode()), get_run=(200, detail))
    page = first.body.decode()
    assert first.status == 200 and [c[0] for c in FakeApi.calls] == ["get_run"]   # nothing retired yet
    assert "Retire run r1?" in page and "eastus2" in page and "Hosting that stops: 40.80 USD per day" in page
    assert 'name="confirm" value="yes"' in page
    done = serve("act", request("/runs/r1/retire", method="POST", params={"run_id": "r1", "action": "retire"},
                                body=f"form_token={token}&confirm=yes&reason=leaks".encode()),
                 retire=(200, {"retired": "r1"}))
    assert done.status == 303 and FakeApi.calls == [("retire", {"run_id": "r1"}, {"reason": "leaks"})]


def test_a_run_whose_served_model_drifted_carries_a_badge_and_says_why() -> None:
    check = {"environment": "prod", "deployment": "support-bot", "run_id": "r1", "grader": "token_f1", "mean": 0.21,
             "floor": 0.6, "examples": 20, "checked_at": "2026-12-07T06:00:00+00:00", "drifted": True}
    drifted = serve("run", request("/runs/r1", params={"run_id": "r1"}),
                    get_run=(200, {**run_detail(OPERATOR, "deployed:prod"), "drift": [check]}),
                    list_deployments=(200, {"deployments": []})).body.decode()
    assert 'id="drift-badge"' in drifted and "scored token_f1 0.210 on 20 of its held-out examples" in drifted
    steady = serve("run", request("/runs/r1", params={"run_id": "r1"}),
                   get_run=(200, {**run_detail(OPERATOR, "deployed:prod"), "drift": []}),
                   list_deployments=(200, {"deployments": []})).body.decode()
    assert 'id="drift-badge"' not in steady
