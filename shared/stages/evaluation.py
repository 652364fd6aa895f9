"""The evaluate stage: trained run → temporary hub deployments → held-out questions → gates → report →
`evaluated` (+ DeployRequest for the first environment) or `evaluation_failed`.

A quota refusal on the hub (`InsufficientQuota`) is waited out with delayed re-sends of the request
(`QUOTA_BACKOFF_SECONDS`, doubling with jitter, as the train stage's quota wait does), at most
`QUOTA_WAITS` times (about two hours), then the run ends `evaluation_failed` saying so.
A deployment that could not be asked (gone, not ready, 5xx after retries: `InfrastructureError`) scores
nothing: the pass stops, the temporary deployments go, and the request is re-sent later, at most
`INFRA_WAITS` times.

Idempotent: a duplicate delivery finds the run past `evaluating` and returns (re-sending the deploy
request if the first attempt died right after the transition: its MessageId dedups). Temporary
deployments have names derived from the run id and are deleted in a finally block, so neither a retry
nor a failure leaks hub quota.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.app.settlement import retry_later
from shared.azure.arm_deployments import DeploymentQuota, DeploymentRefused, DeploymentTransient
from shared.azure.chat import InfrastructureError
from shared.evaluation import graders as grading
from shared.evaluation.confidence import Interval, paired_difference
from shared.evaluation.examples import Example, load_examples, stream_lines
from shared.evaluation.gates import common_examples, gate_candidates, scores_on, thresholds_from
from shared.evaluation.hubdeploy import (
    create_deployment,
    hub_account,
    plan_candidates,
    plan_champion,
    wait_until_serving,
)
from shared.evaluation.metrics import aggregate
from shared.evaluation.report import build_report, loss_rows, render_html, summary
from shared.evaluation.runner import Candidate, run_candidates
from shared.run import actors, states
from shared.run.messages import EvaluateRequest, deploy_request, evaluate_message_id
from shared.run.models import inference_price_per_1m
from shared.run.settings import Evaluation
from shared.stages.approvals import send_deploy
from shared.store import claims
from shared.store.events import advance, publish
from shared.store.outbox import flush
from shared.store.registry import RunRecord

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)

ACTOR = actors.EVALUATION
RUN_TAG, PURPOSE_TAG = "ftops-run", "ftops-purpose"   # on every temporary evaluation deployment
QUOTA_BACKOFF_SECONDS = (60.0, 1800.0)   # first wait, longest wait (doubling, with jitter)
QUOTA_WAITS = 8                          # re-sends before giving up: at most 60+120+…+1800 s ≈ 2 h of waiting
INFRA_BACKOFF_SECONDS = (120.0, 900.0)   # a deployment that could not be asked: first wait, longest wait
INFRA_WAITS = 5                          # re-sends before giving up: about 2+4+8+15+15 min


class _Failed(Exception):
    """The evaluation cannot succeed (no data, model not deployable): end the run as evaluation_failed."""


def handle_evaluate(request: EvaluateRequest, deps: Deps) -> None:
    """ftops-evaluate handler; the model calls go through `deps.chat`."""
    run = deps.registry.require_run(request.run_id)
    if run.state == states.EVALUATED:
        _resend_deploy(deps, run)   # a first attempt may have died between the transition and the send
        return
    if run.state not in (states.TRAINED, states.EVALUATING):
        log.info("run %s is %s: nothing to evaluate (duplicate or stale message)", run.run_id, run.state)
        return
    with claims.hold(deps.registry, claim_key(run)) as claim:
        if claim.in_progress:
            retry_later(deps, deps.settings.evaluate_queue, request, evaluate_message_id(run.run_id, run.job_id))
        elif claim.owned:
            if claim.taken_over:   # a worker died holding it: its temporary deployments hold hub slots, billed
                _delete_left_behind(deps, run.run_id)
            final = _evaluate(run, deps, request)
            if final is None:   # waiting (quota, a deployment not there): the delayed re-send must find the step free
                claim.release()
            else:
                claim.complete({"state": final})


def claim_key(run: RunRecord) -> str:
    """The evaluation step's claim: one worker per run × job × model."""
    return "evaluate-" + hashlib.sha256(f"{run.run_id}|{run.job_id}|{run.fine_tuned_model}".encode()).hexdigest()[:32]


def _delete_left_behind(deps: Deps, run_id: str) -> None:
    """The temporary evaluation deployments of `run_id` on the hub (by their tags), deleted first thing."""
    hub = hub_account(deps.settings.hub)
    left = [d.name for d in deps.arm_deployments.list_all(hub)
            if d.tags.get(RUN_TAG) == run_id[:256] and d.tags.get(PURPOSE_TAG) == "evaluation"]
    if left:
        log.warning("run %s: deleting %d evaluation deployment(s) a dead worker left: %s", run_id, len(left), left)
        deps.arm_deployments.delete_all(hub, left)


def _evaluate(run: RunRecord, deps: Deps, request: EvaluateRequest) -> str | None:
    if run.state == states.TRAINED:
        run = advance(deps, run.run_id, states.EVALUATING, actor=ACTOR,
                      detail={"fine_tuned_model": run.fine_tuned_model})
    try:
        report = _measure(run, deps)
    except _Failed as exc:
        return _fail(deps, run, str(exc))
    except DeploymentQuota as exc:   # the temporary deployments are already deleted (finally in _measure)
        return _try_later(deps, run, request, exc, QUOTA)
    except InfrastructureError as exc:   # nothing was scored; the deployments are deleted: try it all again later
        return _try_later(deps, run, request, exc, INFRASTRUCTURE)
    paths = _write_reports(deps, run.run_id, report)
    result = summary(report, paths)
    if not report["passed"]:
        failed = ", ".join(report["failed_gates"])
        return _fail(deps, run, f"gates failed: {failed}", result)
    chosen = report["chosen"]["model"]
    advance(deps, run.run_id, states.EVALUATED, actor=ACTOR, evaluation=result, chosen_model=chosen,
            detail={"chosen": chosen, "scores": result["scores"], "report": paths["html"]},
            send=[(deps.settings.deploy_queue, request)] if (request := _deploy_request(run, chosen)) else [])
    return states.EVALUATED


def grader_set(run_id: str, settings: dict[str, Any], evaluation: Evaluation, examples: list[Example],
             gate: str | None) -> tuple[list[grading.Grader], str]:
    """run.json's graders; else a reinforcement run's own grader; else defaults from the data's shape."""
    if evaluation.graders:
        chosen = grading.from_specs([{**g.model_dump(exclude_none=True), "name": g.effective_name()}
                                     for g in evaluation.graders])
    elif settings.get("method") == "reinforcement" and isinstance(settings.get("grader"), dict):
        chosen = grading.from_reinforcement(settings["grader"]) or grading.defaults_for(examples)
    else:
        chosen = grading.defaults_for(examples)
    names = [g.name for g in chosen]
    if gate is not None and gate not in names:
        raise _Failed(f"run {run_id}: thresholds.grader {gate!r} is not among the graders used ({', '.join(names)})")
    return chosen, gate or names[0]


def _measure(run: RunRecord, deps: Deps) -> dict[str, Any]:
    run_id, settings = run.run_id, run.settings or {}
    base_model = str(settings.get("base_model") or deps.settings.default_base_model)
    if not run.fine_tuned_model:
        raise _Failed(f"run {run_id} is trained but has no fine_tuned_model")
    try:
        thresholds = thresholds_from(settings)
        evaluation = Evaluation.model_validate(settings.get("evaluation") or {})
    except ValueError as exc:
        raise _Failed(f"run {run_id}: settings.thresholds or settings.evaluation is invalid: {exc}") from exc
    eval_path = (run.data_files or {}).get("eval")
    if not eval_path:
        raise _Failed(f"run {run_id} has no held-out data (data_files['eval'] is missing)")
    loaded = load_examples(_read_lines(deps, eval_path, run_id), seed=f"{settings.get('seed', 42)}|{run_id}",
                           limit=evaluation.max_examples)
    if not loaded.examples:
        why = "; ".join(loaded.skipped) or "the file is empty"
        raise _Failed(f"{deps.settings.reports_container}/{eval_path}: no usable held-out example ({why})")

    graders, gate_grader = grader_set(run_id, settings, evaluation, loaded.examples, thresholds.grader)

    steps = [row["step"] for row in loss_rows(run.metrics)]
    candidates = plan_candidates(run_id, run.fine_tuned_model, base_model, run.checkpoints or [],
                                 final_step=int(max(steps)) if steps else None)
    champion = plan_champion(deps, run, base_model) if evaluation.champion else None
    if champion is not None:
        candidates.append(champion)
    hub = hub_account(deps.settings.hub)
    tags = {RUN_TAG: run_id[:256], PURPOSE_TAG: "evaluation"}
    created: list[str] = []
    active: list[Candidate] = []
    skipped: list[dict[str, str]] = []
    try:
        for candidate in candidates:
            created.append(candidate.deployment)   # even a failed PUT may have left something to delete
            try:
                create_deployment(deps.arm_deployments, hub, candidate, tags=tags)
            except (DeploymentRefused, DeploymentTransient) as exc:   # quota (DeploymentQuota) waits for all
                if candidate.kind in ("checkpoint", "champion"):   # evaluate without it, say so in the report
                    log.warning("run %s: skipping %s: %s", run_id, candidate.name, exc)
                    skipped.append({"name": candidate.name, "model": candidate.model, "reason": str(exc)})
                    continue
                if isinstance(exc, DeploymentRefused):
                    raise _Failed(f"run {run_id}: {exc}") from exc
                raise
            active.append(candidate)
        chat_fn = deps.chat.reply_fn(base_model)
        for candidate in active:   # provisioned is not serving: no example is asked before it answers
            if wait_until_serving(chat_fn, candidate.deployment, timeout_s=deps.settings.smoke_timeout_seconds) is None:
                raise DeploymentTransient(
                    f"run {run_id}: evaluation deployment {candidate.deployment} is provisioned but did not answer "
                    f"within {deps.settings.smoke_timeout_seconds:.0f} s (SMOKE_TIMEOUT_SECONDS); will retry")
        judge = deps.chat.judge_fn() if any(g.asks_judge for g in graders) else None
        results = run_candidates(active, loaded.examples, chat_fn, max_workers=evaluation.concurrency,
                                 graders=graders, judge=judge)
    finally:
        leftovers = deps.arm_deployments.delete_all(hub, created)
    if leftovers:   # only reached without an exception in flight: retry so quota is not leaked
        raise DeploymentTransient(f"run {run_id}: could not delete evaluation deployments {leftovers} on "
                                  f"{hub.name}; will retry")

    names = [g.name for g in graders]
    metrics = {c.name: aggregate(results[c.name], graders=names,
                                 price_per_1m=inference_price_per_1m(_base_of(c, base_model), fine_tuned=c.kind != "base"))
               for c in active}
    has_champion = "champion" in results
    champion_note = None
    if champion is not None and not has_champion:
        champion_note = f"the champion {champion.model} could not be evaluated (see skipped candidates)"
    chosen, verdicts = gate_candidates(active, results, metrics, thresholds, grader=gate_grader,
                                       champion_note=champion_note)
    gates = verdicts[chosen.name].gates
    # the chosen model against each reference point, for every grader, on the examples every candidate's
    # grader scored
    scored = {g: common_examples(results, g) for g in names}
    comparisons: dict[str, dict[str, Interval]] = {
        other: {g: paired_difference(scores_on(results[chosen.name], g, scored[g]),
                                     scores_on(results[other], g, scored[g])) for g in names}
        for other in ("base", "champion") if other in results}
    return build_report(run_id=run_id, base_model=base_model, fine_tuned_model=run.fine_tuned_model,
                        eval_path=eval_path, examples=loaded.examples, available=loaded.total,
                        skipped_lines=loaded.skipped, candidates=active, results=results, metrics=metrics,
                        skipped_candidates=skipped, chosen=chosen, gates=gates, training_metrics=run.metrics,
                        graders=graders, gate_grader=gate_grader, comparisons=comparisons,
                        improvement_rule=thresholds.improvement_rule,
                        candidate_gates={name: [g.to_dict() for g in v.gates] for name, v in verdicts.items()},
                        lineage=_lineage(run, base_model))


def _lineage(run: RunRecord, base_model: str) -> dict[str, Any]:
    """Where the evaluated model came from, for the report (docs/evaluation.md, "Reports")."""
    from shared.run.models import model_facts
    try:
        price = model_facts(base_model).training_price_per_1m
    except (KeyError, ValueError):
        price = None
    tokens = run.trained_tokens
    return {"dataset_hash": run.dataset_hash, "validation_report": "validation.json",   # beside evaluation.html
            "settings": run.settings or {}, "trained_tokens": tokens,
            "training_cost_usd": round(tokens / 1e6 * price, 2) if tokens and price else None,
            "approvals": dict(run.approvals or {})}


@dataclass(frozen=True)
class _Wait:
    """One reason to try the evaluation again later: its counter on the request, its backoff, what it says."""
    field: str                      # the request's counter ("quota_waits", "infra_waits")
    bound: int                      # re-sends before giving up
    backoff: tuple[float, float]    # first wait, longest wait (doubling, with jitter)
    event: str                      # announced each time
    why: str                        # for the retry's record and the log
    give_up: str                    # the failure, after `bound` re-sends: "{waits}", "{hours}", "{exc}", "{hub}"


QUOTA = _Wait("quota_waits", QUOTA_WAITS, QUOTA_BACKOFF_SECONDS, "evaluation_waiting_for_quota", "hub quota short",
              "hub quota did not free up after {waits} waits (about {hours:.1f} h): {exc}. Free tokens-per-minute "
              "quota in the hub's region (or deployments on {hub}), then retrain")
INFRASTRUCTURE = _Wait("infra_waits", INFRA_WAITS, INFRA_BACKOFF_SECONDS, "evaluation_retrying",
                       "a deployment could not be asked (nothing of this pass is scored)",
                       "the evaluation deployments could not be asked after {waits} tries: {exc}. Check the hub "
                       "{hub} (deployments, service health), then retrain")


def _try_later(deps: Deps, run: RunRecord, request: EvaluateRequest, exc: Exception, wait: _Wait) -> str | None:
    """Send a delayed copy of the request (the run stays `evaluating`, holding no deployment), or give up past
    the bound: a quota refusal, or a deployment that could not be asked (a missing answer is no wrong answer)."""
    waits: int = getattr(request, wait.field)
    if waits >= wait.bound:
        return _fail(deps, run, wait.give_up.format(waits=waits, hours=_total_wait(waits, wait.backoff) / 3600,
                                                    exc=exc, hub=deps.settings.hub.account))
    first, longest = wait.backoff
    delay = min(longest, first * 2 ** waits) * random.uniform(0.5, 1.0)
    retry_later(deps, deps.settings.evaluate_queue, request, evaluate_message_id(run.run_id, run.job_id),
                delay=delay, why=wait.why, **{wait.field: waits + 1})
    publish(deps, run.run_id, wait.event,
            {"reason": str(exc)[:500], "wait": waits + 1, "of": wait.bound, "retry_in_seconds": round(delay)})
    log.warning("run %s: %s (%s); evaluating again in %.0f s (%d of %d)", run.run_id, wait.why, exc, delay,
                waits + 1, wait.bound)
    return None


def _total_wait(waits: int, backoff: tuple[float, float] = QUOTA_BACKOFF_SECONDS) -> float:
    first, longest = backoff
    return sum(min(longest, first * 2.0 ** n) for n in range(waits))


def _read_lines(deps: Deps, path: str, run_id: str) -> Iterator[bytes]:
    """The held-out file's lines, streamed: memory stays flat whatever its size."""
    from azure.core.exceptions import ResourceNotFoundError
    blob = deps.blobs.get_blob_client(deps.settings.reports_container, path)
    try:
        download = blob.download_blob()
    except ResourceNotFoundError as exc:
        raise _Failed(f"run {run_id}: held-out data {deps.settings.reports_container}/{path} does not exist") from exc
    return stream_lines(download.chunks())


def _write_reports(deps: Deps, run_id: str, report: dict[str, Any]) -> dict[str, str]:
    from azure.storage.blob import ContentSettings
    container = deps.blobs.get_container_client(deps.settings.reports_container)
    paths = {"json": f"{run_id}/evaluation.json", "html": f"{run_id}/evaluation.html"}
    container.upload_blob(paths["json"], json.dumps(report, indent=2, ensure_ascii=False), overwrite=True,
                          content_settings=ContentSettings(content_type="application/json"))
    container.upload_blob(paths["html"], render_html(report), overwrite=True,
                          content_settings=ContentSettings(content_type="text/html; charset=utf-8"))
    _forget_amendments(container, run_id)
    return {k: f"{deps.settings.reports_container}/{v}" for k, v in paths.items()}


def _forget_amendments(container: Any, run_id: str) -> None:
    """A new evaluation replaces the report the decisions were taken on (a retrain's): their amendments go
    with it (shared.stages.report_lineage; the audit trail keeps every decision)."""
    from azure.core.exceptions import ResourceNotFoundError

    from shared.stages.report_lineage import LINEAGE_BLOB
    try:
        container.delete_blob(f"{run_id}/{LINEAGE_BLOB}")
    except ResourceNotFoundError:
        pass


def _fail(deps: Deps, run: RunRecord, reason: str, result: dict[str, Any] | None = None) -> str:
    log.warning("run %s: evaluation failed: %s", run.run_id, reason)
    evaluation = {**(result or {"passed": False, "failed_gates": []}), "reason": reason}
    if result is None:   # nothing was measured: still leave a report where people look for one
        _write_reports_minimal(deps, run.run_id, reason)
    advance(deps, run.run_id, states.EVALUATION_FAILED, actor=ACTOR, evaluation=evaluation,
            error={"stage": "evaluate", "message": reason},
            detail={"reason": reason, "failed_gates": evaluation.get("failed_gates", [])})
    return states.EVALUATION_FAILED


def _write_reports_minimal(deps: Deps, run_id: str, reason: str) -> None:
    from html import escape
    container = deps.blobs.get_container_client(deps.settings.reports_container)
    container.upload_blob(f"{run_id}/evaluation.json", json.dumps({"run_id": run_id, "passed": False,
                                                                    "reason": reason}, indent=2), overwrite=True)
    container.upload_blob(f"{run_id}/evaluation.html",
                          f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Evaluation "
                          f"{escape(run_id)}</title></head><body><h1>Evaluation of run {escape(run_id)}: not run</h1>"
                          f"<p>{escape(reason)}</p></body></html>", overwrite=True)
    _forget_amendments(container, run_id)


def _deploy_request(run: RunRecord, model: str | None) -> Any:
    """The first environment's deploy request, named by the model (a retrain's next model is new work)."""
    if not run.environments:
        log.warning("run %s passed evaluation but names no environment to deploy to", run.run_id)
        return None
    return deploy_request(run.run_id, run.environments[0], model)


def _resend_deploy(deps: Deps, run: RunRecord) -> None:
    if run.outbox:   # the transition's own messages, a crash kept from being sent
        flush(deps, run.run_id, run.outbox)
        return
    if run.environments:
        send_deploy(deps, run.run_id, run.environments[0], model=run.chosen_model or run.fine_tuned_model)
        log.info("run %s: deploy request for %s sent", run.run_id, run.environments[0])


def _base_of(candidate: Candidate, base_model: str) -> str:
    """The base model a candidate's price follows: the champion may be another model than this run's (a
    distilled student is measured against a larger champion): its fine-tuned id names its base."""
    if candidate.kind == "champion":
        return candidate.model.split(".ft-")[0] or base_model
    return base_model
