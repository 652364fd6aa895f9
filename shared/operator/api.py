"""The operator API: privileged actions (approve, reject, rollback, retire; start, retrain and claim a run,
so that who started a model and who owns it are verified identities for four eyes) and reads (runs, one run
with its audit trail and report links), each for a caller whose Entra ID token the app verified.

Framework-free: `functions/operator.py` adapts HTTP triggers to `handle(action, …)` (the reads) and
`handle_command(route, …)` (the commands, whose routes and actions come from shared.run.command_table). Every
refusal of a verified caller (403, 409) is written to the audit trail with who tried before the answer goes
out, and nothing else changes; a request whose caller cannot be verified (401) is only counted
(shared.operator.unverified): it writes no record of its own and raises no event. Routes and roles:
docs/operator-api.md.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.app.settlement import PermanentError
from shared.azure.access import (
    OPERATOR_ROLE,
    AccessDenied,
    Caller,
    TokenVerifier,
    access_settings,
    require_any,
)
from shared.azure.arm_deployments import DeploymentError, NotManagedByFtops
from shared.operator.unverified import UnverifiedTraffic
from shared.run import actors, command_table
from shared.run.config import ConfigError
from shared.run.messages import RetrainCommand, RollbackCommand, RunCommand
from shared.run.rules import owner_confirmed
from shared.stages import approvals, command_checks, drift, intake, report_lineage, rollback, training
from shared.store.claims import ConcurrencyError
from shared.store.events import publish
from shared.store.registry import DeploymentRecord, InvalidTransition, RunNotFound

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)
MAX_BODY = 16 * 1024     # a decision is a few fields; anything bigger is refused unread
OPERATOR_PARTITION = "_operator"   # audit partition for refusals that name no run (or one that does not exist)
UNVERIFIED = UnverifiedTraffic(OPERATOR_PARTITION)   # this process's count of requests nobody could be verified for
# What a route parameter may be before anything is looked up: a run id (intake makes `<slug>-<hash>`), an
# environment name. Anything else can name nothing (and a Table key over 1 KiB is a storage error, not a 404).
ROUTE_PARAMS = {"run_id": re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"),
                "environment": re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")}


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: dict[str, Any]

    def json(self) -> str:
        return json.dumps(self.body, default=str)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ApproveBody(_Body):
    environment: str = Field(min_length=1, max_length=32)
    ticket: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1, max_length=256, description="the model the approver looked at")
    dataset_hash: str | None = Field(None, max_length=100)
    evaluation_report_hash: str | None = Field(None, max_length=100)
    comment: str | None = Field(None, max_length=1000)


class RejectBody(_Body):
    environment: str = Field(min_length=1, max_length=32)
    reason: str = Field(min_length=1, max_length=1000)
    ticket: str | None = Field(None, max_length=128)


class RollbackBody(_Body):
    run_id: str | None = Field(None, max_length=200)
    deployment: str | None = Field(None, max_length=64)
    reason: str | None = Field(None, max_length=1000)


class RetrainBody(_Body):
    settings: dict[str, Any] = Field(default_factory=dict, description="run settings over the run's own")


class StartBody(_Body):
    blob: str = Field(min_length=1, max_length=1024,
                      description="datasets/<name>.jsonl or datasets/<folder>/run.json (the container prefix is optional)")
    settings: dict[str, Any] = Field(default_factory=dict, description="run settings over run.json")


class RetireBody(_Body):
    reason: str | None = Field(None, max_length=1000)


_verifiers: dict[Any, TokenVerifier] = {}
_verifiers_lock = threading.Lock()


def verifier_for(deps: Deps) -> TokenVerifier:
    """One verifier (and key cache) per configuration, per process."""
    settings = access_settings(deps.settings)
    with _verifiers_lock:
        if settings not in _verifiers:
            _verifiers[settings] = TokenVerifier(settings)
        return _verifiers[settings]


def handle(action: str, *, authorization: str | None, params: dict[str, str], body: bytes, deps: Deps,
           verifier: TokenVerifier | None = None, unverified: UnverifiedTraffic | None = None) -> ApiResponse:
    """One API call: verify the caller, run the action, answer; a verified caller's refusals audited with
    who tried, an unverifiable caller's only counted (`unverified`: this process's count by default)."""
    malformed = _malformed(params)
    if malformed:
        return _error(400, malformed)
    run_id = params.get("run_id")
    caller: Caller | None = None
    traffic = unverified or UNVERIFIED
    try:
        traffic.tick(deps)
        verifier = verifier or verifier_for(deps)
        caller = verifier.verify(authorization)
        return ACTIONS[action](caller, params, body, deps)
    except AccessDenied as exc:
        if exc.caller is not None:   # a verified caller without the right: audited, one record each
            _audit_refusal(deps, run_id, action, exc.status, exc.reason, exc.who(), params)
        elif exc.status == 401:      # nobody verified: anyone can send these, so they are counted, not written
            traffic.count(deps, action, exc.reason)
            log.warning("operator API refused %s (run %s): %s (unverified)", action, (run_id or "")[:80], exc.reason)
        return _error(exc.status, exc.reason)
    except (approvals.Refused, PermanentError, InvalidTransition) as exc:
        who = caller.describe() if caller else {}
        _audit_refusal(deps, run_id, action, 409, str(exc), who, params)
        return _error(409, str(exc))
    except NotManagedByFtops as exc:
        _audit_refusal(deps, run_id, action, 409, str(exc), caller.describe() if caller else {}, params)
        return _error(409, str(exc))
    except (DeploymentError, ConcurrencyError) as exc:   # transient: nothing was left half-done; the caller retries
        log.warning("operator API %s (run %s) failed for now: %s", action, run_id, exc)
        return _error(503, f"not done, try again: {exc}")
    except RunNotFound as exc:
        return _error(404, str(exc))
    except _BadRequest as exc:
        return _error(400, str(exc))
    except ConfigError as exc:
        log.error("operator API is not configured: %s", exc)
        return _error(503, f"the operator API is not configured: {exc}")


def handle_command(route: str, *, authorization: str | None, params: dict[str, str], body: bytes, deps: Deps,
                   verifier: TokenVerifier | None = None, unverified: UnverifiedTraffic | None = None
                   ) -> ApiResponse:
    """A POST to one of the commands' routes (command_table.COMMAND_ROUTES): the row whose route it names
    runs, as `handle` runs any action. An action no row offers is a 404, as a route no function serves was,
    answered before the token is read: it names no run and changes nothing, so nothing is audited."""
    params = dict(params)
    action = params.pop("action", "")
    row = command_table.for_route(route, action)
    if row is None:
        offered = sorted(r.route.rsplit("/", 1)[1] for r in command_table.COMMANDS
                         if r.route and r.route.startswith(route.removesuffix("{action}")))
        return _error(404, f"no operator command {action[:40]!r} at POST {route}; "
                           f"the commands there: {', '.join(offered)}")
    return handle(row.name, authorization=authorization, params=params, body=body, deps=deps, verifier=verifier,
                  unverified=unverified)


# --- actions -----------------------------------------------------------------------------------------
RUNS_PAGE = 100        # runs per page of GET runs unless `limit` asks for fewer or more
MAX_RUNS_PAGE = 1000   # Table storage answers at most 1,000 entities per request


def list_runs(caller: Caller, params: dict[str, str], body: bytes, deps: Deps) -> ApiResponse:
    """One page of runs, in run id order: `limit` (1–1000, default 100) from the first after `after`; `next` is
    the `after` of the following page (null on the last). Never every run at once."""
    _require_read(caller)
    try:
        limit = int(params.get("limit") or RUNS_PAGE)
    except ValueError:
        raise _BadRequest(f"limit must be a whole number, not {params['limit'][:20]!r}") from None
    if not 1 <= limit <= MAX_RUNS_PAGE:
        raise _BadRequest(f"limit must be between 1 and {MAX_RUNS_PAGE}, not {limit}")
    runs, after = deps.registry.page_runs(limit=limit, after=params.get("after") or None)
    per_day: dict[str, float] = {}
    for d in _deployments(deps):
        per_day[d["run_id"]] = round(per_day.get(d["run_id"], 0.0) + d["per_day"], 2)
    return ApiResponse(200, {"runs": [_summary(r, deps, per_day.get(r.run_id, 0.0)) for r in runs], "next": after})


def evaluation_comparison(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    """What an approver weighs: the challenger's score with its interval against base and against the
    champion the environment serves today (docs/evaluation.md, "Champion vs challenger")."""
    if not evaluation or "comparison" not in evaluation:
        return None
    chosen = evaluation.get("chosen_name")
    return {"grader": evaluation.get("grader"), "challenger": {
                "model": evaluation.get("chosen"), "score": (evaluation.get("scores") or {}).get(chosen),
                "interval": (evaluation.get("intervals") or {}).get(chosen)},
            "champion": evaluation.get("champion"),
            "improvement": evaluation["comparison"],
            "grader_errors": evaluation.get("grader_errors") or {},
            "gates": {g["name"]: g["passed"] for g in evaluation.get("gates") or []
                      if g["name"].startswith("min_improvement")}}


def get_run(caller: Caller, params: dict[str, str], body: bytes, deps: Deps) -> ApiResponse:
    _require_read(caller)
    run = deps.registry.require_run(params["run_id"])
    trail, slots = deps.registry.audit_trail(run.run_id), deps.registry.list_deployments(run_id=run.run_id)
    lineage = report_lineage.status(deps, run, trail)   # reads evaluation.json: the candidate's hash comes with it
    view = {**_summary(run, deps), "settings": run.settings, "dataset_hash": run.dataset_hash,
            "validation": run.validation, "evaluation": run.evaluation, "error": run.error,
            "comparison": evaluation_comparison(run.evaluation),
            "serving_now": serving_now(deps, run),
            "drift": drift.drifted(deps, slots),
            "approvals": run.approvals,
            "candidate": approvals.candidate(deps, run, evidence=lineage["evaluation_report_hash"] if lineage else None),
            "deployments": _deployments(deps, slots),
            "audit": trail, "reports": _reports(deps, run.run_id),
            # the evaluation report's decisions: its lineage version, and any recorded decision it lacks
            "report_lineage": lineage,
            # what this caller may do here (a console shows only these; the API still decides on each call)
            "caller": {**caller.describe(), "roles": sorted(caller.roles),
                       "may_approve": sorted(r.removeprefix("Approver.") for r in caller.roles
                                             if r.startswith("Approver.")),
                       "may_operate": caller.has(OPERATOR_ROLE)}}
    return ApiResponse(200, view)


def serving_now(deps: Deps, run: Any) -> dict[str, list[dict[str, Any]]]:
    """What each of the run's environments serves now under its deployment name, per region, from the slots
    and their history (since when, how it came, approved by whom): another run's model, this run's current
    one, or this run's earlier one (after a retrain or a rollback)."""
    from shared.run.rules import deployment_name
    name, current = deployment_name(run), run.chosen_model or run.fine_tuned_model
    active = [d for d in deps.registry.list_deployments(state="active") if d.deployment == name]
    out: dict[str, list[dict[str, Any]]] = {}
    for env in run.environments:
        rows = []
        for d in sorted((d for d in active if d.environment == env), key=lambda d: d.region):
            entry = next((e for e in deps.registry.slot_history(env, account=d.account, deployment=name)
                          if e.serving), None)
            rows.append({"account": d.account, "region": d.region, "model": d.model, "run_id": d.run_id,
                         "since": entry.since if entry else d.updated_at, "came": entry.came if entry else None,
                         "approved_by": entry.approved_by if entry else None,
                         "ticket": entry.ticket if entry else None,
                         "whose": ("this run's current model" if d.run_id == run.run_id and d.model == current
                                   else "this run's earlier model" if d.run_id == run.run_id else f"run {d.run_id}")})
        out[env] = rows
    return out


def history(caller: Caller, params: dict[str, str], body: bytes, deps: Deps) -> ApiResponse:
    """An environment's slot history: which model each region served, from when, approved by whom, why it left."""
    _require_read(caller)
    environment = params.get("environment") or ""
    if deps.require_topology().environment(environment) is None:
        raise _BadRequest(f"environment {environment!r} is not in SPOKES_CONFIG")
    entries = deps.registry.slot_history(environment)
    return ApiResponse(200, {"environment": environment,
                             "history": [{k: v for k, v in vars(e).items() if k != "etag"} for e in entries]})


def list_deployments(caller: Caller, params: dict[str, str], body: bytes, deps: Deps) -> ApiResponse:
    """Every deployment slot ftops keeps (environment × account × name): model, run, last keep-alive and
    its estimated hosting cost per day (shared.run.costs)."""
    _require_read(caller)
    rows = _deployments(deps)
    return ApiResponse(200, {"deployments": rows, "currency": "USD", "estimate": True,
                             "total_per_day": round(sum(r["per_day"] for r in rows), 2)})


def approve(caller: Caller, params: dict[str, str], body: bytes, deps: Deps) -> ApiResponse:
    request = _parse(ApproveBody, body)
    evidence = approvals.approve(deps, caller, params["run_id"], request.environment, ticket=request.ticket,
                                 model=request.model, comment=request.comment, dataset_hash=request.dataset_hash,
                                 evaluation_report_hash=request.evaluation_report_hash)
    return ApiResponse(202, {"approved": evidence, "next": f"deploying to {request.environment}"})


def reject(caller: Caller, params: dict[str, str], body: bytes, deps: Deps) -> ApiResponse:
    request = _parse(RejectBody, body)
    detail = approvals.reject(deps, caller, params["run_id"], request.environment, reason=request.reason,
                              ticket=request.ticket)
    return ApiResponse(200, {"rejected": detail})


def rollback_environment(caller: Caller, params: dict[str, str], body: bytes, deps: Deps) -> ApiResponse:
    require_any(caller, [OPERATOR_ROLE], "rollback")
    request = _parse(RollbackBody, body)
    if not params.get("environment"):
        raise _BadRequest("rollback names no environment (POST environments/{environment}/rollback)")
    unchanged = rollback.rollback(RollbackCommand(environment=params["environment"], run_id=request.run_id,
                                                  deployment=request.deployment, requested_by=caller.actor,
                                                  reason=request.reason), deps)
    return ApiResponse(200, {"rolled_back": params["environment"], "run_id": request.run_id,
                             "changed": unchanged is None, **({"note": unchanged} if unchanged else {})})


def retrain(caller: Caller, params: dict[str, str], body: bytes, deps: Deps) -> ApiResponse:
    """A retrain whose requester is known: they are recorded and cannot approve the model it makes."""
    require_any(caller, [OPERATOR_ROLE], "retrain")
    request = _parse(RetrainBody, body)
    training.retrain_run(RetrainCommand(run_id=params["run_id"], settings=request.settings,
                                        requested_by=caller.actor), deps, started_by=caller.oid)
    return ApiResponse(202, {"retraining": params["run_id"], "started_by": caller.describe()})


def start_run(caller: Caller, params: dict[str, str], body: bytes, deps: Deps) -> ApiResponse:
    """POST runs: a run whose starter is the verified caller (its owner when run.json names none; confirmed
    when it names them). Validated while the caller waits, as the commands queue's train is."""
    require_any(caller, [OPERATOR_ROLE], "starting a run")
    if not caller.person:
        raise AccessDenied(403, "starting a run names a person as its starter: this is an application's token "
                                "(no delegated scope); other systems start runs on the commands queue", caller=caller)
    request = _parse(StartBody, body)
    name, etag = command_checks.check_train(deps, request.blob, request.settings)
    drop = intake.drop_started_by(name)
    assert drop is not None   # check_train refuses blobs that start no run
    for started_by in (caller.oid, None):   # this person's start, or the drop's own (blob trigger, queue)
        same = intake.run_id_for(drop, etag, request.settings or None, started_by)
        existing = deps.registry.get_run(same)
        if existing is not None:   # the same upload, the same settings: a second run would train it twice
            whose = "your run" if started_by else "run"
            raise approvals.Refused(
                f"{name} (this upload) with these settings already is {whose} {same}, {existing.state}; "
                f"`ftops retrain {same} --settings '{{…}}'` trains it again"
                + ("" if started_by else f", `ftops claim {same}` confirms it if you are the owner its run.json names")
                + ", other --settings start another run, or upload it again (`ftops drop`) for a new one")
    run_id = intake.start_run(name, deps, settings_override=request.settings or None, actor=caller.actor,
                              started_by=caller.oid)
    run = deps.registry.require_run(str(run_id))
    return ApiResponse(202, {"run_id": run.run_id, "state": run.state, "started_by": caller.describe(),
                             "owner": run.owner, "owner_confirmed": owner_confirmed(run),
                             "error": run.error, "reports": _reports(deps, run.run_id)})


def claim(caller: Caller, params: dict[str, str], body: bytes, deps: Deps) -> ApiResponse:
    """POST runs/{id}/claim: the owner run.json names confirms it with their own token."""
    _parse(_Body, body)
    detail = approvals.claim(deps, caller, params["run_id"])
    return ApiResponse(200, {"claimed": params["run_id"], "owner": caller.describe(), **detail})


def retire_run(caller: Caller, params: dict[str, str], body: bytes, deps: Deps) -> ApiResponse:
    require_any(caller, [OPERATOR_ROLE], "retire")
    request = _parse(RetireBody, body)
    rollback.retire(RunCommand(run_id=params["run_id"], requested_by=caller.actor, reason=request.reason), deps)
    return ApiResponse(200, {"retired": params["run_id"]})


Action = Callable[[Caller, dict[str, str], bytes, Any], ApiResponse]
READS: dict[str, Action] = {"list_runs": list_runs, "get_run": get_run, "list_deployments": list_deployments,
                            "history": history}
# The commands: every command-table row with a route, so a new command is its row and its action, no line
# here. Resolved now, at the end of this module: the rows name actions defined above (this module is already
# in sys.modules, so the table's import of it returns it).
ACTIONS: dict[str, Action] = {**READS, **{row.name: command_table.load(row.api_handler_name) for row in command_table.COMMANDS if row.route}}


# --- helpers -----------------------------------------------------------------------------------------
class _BadRequest(ValueError):
    pass


def _malformed(params: dict[str, str]) -> str | None:
    """Why a route parameter cannot name anything (answered 400 before the token or storage is read)."""
    for name, pattern in ROUTE_PARAMS.items():
        value = params.get(name)
        if value is not None and not pattern.fullmatch(value):
            shown = json.dumps(value[:40])[1:-1] + ("…" if len(value) > 40 else "")
            return (f"{name} {shown!r} ({len(value)} characters) is not a {name.replace('_', ' ')}: up to "
                    f"{128 if name == 'run_id' else 32} letters, digits, '-' or '_'{', or .' if name == 'run_id' else ''}")
    return None


def _parse[M: BaseModel](model: type[M], body: bytes) -> M:
    if len(body) > MAX_BODY:
        raise _BadRequest(f"request body over {MAX_BODY} bytes")
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise _BadRequest("; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<body>'}: {e['msg']}"
                                    for e in exc.errors())) from exc


def _require_read(caller: Caller) -> None:
    if not caller.may_read():
        raise AccessDenied(403, "reading runs needs one of the app roles Reader, Operator or Approver.<env>",
                           caller=caller)


def _summary(run: Any, deps: Deps, per_day: float | None = None) -> dict[str, Any]:
    from shared.run.rules import why_stopped
    evaluation = run.evaluation or {}
    return {"run_id": run.run_id, "source": run.source, "state": run.state, "terminal": run.terminal,
            "owner": run.owner, "owner_confirmed": owner_confirmed(run), "started_by": run.started_by,
            "environments": run.environments, "model": run.chosen_model or run.fine_tuned_model,
            "created_at": run.created_at, "updated_at": run.updated_at, "state_since": run.state_since,
            "why": why_stopped(run, deps.topology),
            "score": (evaluation.get("scores") or {}).get(evaluation.get("chosen_name")),
            **({"per_day": per_day} if per_day is not None else {})}


def _deployments(deps: Deps, slots: list[DeploymentRecord] | None = None) -> list[dict[str, Any]]:
    """The slots as the API shows them (every slot unless `slots` are handed in), with their cost per day."""
    from shared.run.costs import hourly_price, prices_from_settings
    prices = prices_from_settings(deps.settings)
    return [vars(d) | {"etag": None, "per_day": round(hourly_price(d, prices) * 24, 2) if d.state == "active" else 0.0}
            for d in (deps.registry.list_deployments() if slots is None else slots)]


def _reports(deps: Deps, run_id: str) -> dict[str, str]:
    container = deps.blobs.get_container_client(deps.settings.reports_container)
    names = [b.name for b in container.list_blobs(name_starts_with=f"{run_id}/")
             if b.name.endswith((".json", ".html")) and "/" not in b.name[len(run_id) + 1:]]
    return {name[len(run_id) + 1:]: f"{container.url}/{name}" for name in sorted(names)}


def _audit_refusal(deps: Deps, run_id: str | None, action: str, status: int, reason: str, who: dict[str, Any],
                   params: dict[str, str]) -> None:
    actor = who.get("oid") or "anonymous"
    if who.get("name"):
        actor = f"{who['name']} <{actor}>"
    if not who.get("verified"):
        actor = actors.unverified(actor)
    try:
        if run_id and deps.registry.get_run(run_id) is None:   # an invented id opens no partition of its own
            params, run_id = {k: v[:200] for k, v in params.items()}, None
        deps.registry.audit(run_id or OPERATOR_PARTITION, f"api.{action}.refused", actor=actor,
                            detail={"status": status, "reason": reason, "who": who, "params": params})
        if run_id and action in ("approve", "reject"):   # other systems hear of refused decisions too
            publish(deps, run_id, "approval_refused", {"action": action, "status": status, "reason": reason,
                                                       "who": who})
    except Exception:
        log.exception("could not audit a refused %s (run %s)", action, run_id)
    log.warning("operator API refused %s (run %s) for %s: %s %s", action, run_id, actor, status, reason)


def _error(status: int, message: str) -> ApiResponse:
    return ApiResponse(status, {"error": {"status": status, "message": message}})
