"""Drift watch (the flywheel's second half): what each environment serves, re-scored on its held-out data and
on a fresh sample of its production exchanges.

On the drift timer, for every environment whose harvest policy sets `drift_examples`, each deployment name
it serves is checked on two legs:
- held-out: a seeded sample of the serving run's own held-out examples is asked of the served deployment (on
  one of the environment's spokes in the hub's tenant) and graded with the run's graders, as its evaluation
  was; its gate grader's scores are compared with the interval that evaluation reported;
- production: a seeded sample of recent production exchanges (shared.stages.drift_production), scrubbed with
  curation's rules, graded with the run's gate grader where the exchange carries a reference and by a judge
  where it does not — the judge's baseline being its scores, taken now, of the held-out leg's answers.
Each comparison is `shared.evaluation.confidence.shortfall`: drift when the interval of the difference lies
below zero. Either leg's drift is an audit record and an event (`ftops.run.drift_detected`) on the serving
run, the check's figures in `reports/drift/<env>/<deployment>.json` (read by `ftops status`, the operator API
and the console's badge), and — when the policy says so — a harvest at once.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceNotFoundError

from shared.run import actors
from shared.run.topology import Environment
from shared.stages import drift_production
from shared.stages import harvest as harvesting
from shared.store.events import publish

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps
    from shared.evaluation.confidence import Interval
    from shared.evaluation.graders import Grader
    from shared.store.registry import DeploymentRecord

log = logging.getLogger(__name__)


@dataclass
class DriftCheck:
    environment: str
    deployment: str
    run_id: str
    grader: str | None = None
    mean: float | None = None           # the held-out sample's mean of the gate grader
    floor: float | None = None          # the lower bound its evaluation reported
    examples: int = 0
    drifted: bool = False               # either leg
    checked_at: str = ""
    skipped: str | None = None
    harvest: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None    # the evaluation's interval for the gate grader
    shortfall: list[float] | None = None      # the held-out leg: interval of (sample − evaluation)
    held_out_drifted: bool = False
    production: dict[str, Any] | None = None  # the production leg's figures (drift_production)


def handle_drift_tick(deps: Deps) -> list[DriftCheck]:
    checks: list[DriftCheck] = []
    topology = deps.topology
    if topology is None:
        return checks
    for env in topology.environments:
        if env.harvest is None or not env.harvest.drift_examples:
            continue
        for name, slots in sorted(harvesting.served(deps, env).items()):
            try:
                checks.append(check(deps, env, name, slots))
            except Exception as exc:   # noqa: BLE001 - reported, checked again next tick
                log.warning("drift check %s/%s failed: %s", env.name, name, exc)
                checks.append(DriftCheck(env.name, name, slots[0].run_id,
                                         skipped=f"failed: {type(exc).__name__}: {exc}"[:300]))
    return checks


def check(deps: Deps, env: Environment, name: str, slots: list[DeploymentRecord]) -> DriftCheck:
    # the evaluation's machinery, imported here: reading the checks back (`drifted`, for the operator API and
    # `ftops status`) needs none of it
    from shared.azure.chat import openai_chat_fn
    from shared.evaluation.confidence import Interval, mean_interval, shortfall
    from shared.evaluation.examples import load_examples
    from shared.evaluation.runner import Candidate, run_candidates
    from shared.run.settings import Evaluation
    from shared.stages.evaluation import grader_set
    policy = env.harvest
    assert policy is not None and policy.drift_examples
    run = deps.registry.require_run(slots[0].run_id)
    result = DriftCheck(env.name, name, run.run_id, checked_at=deps.clock.now().isoformat())
    report = _report(deps, run.run_id)
    eval_path = run.data_files.get("eval")
    target = next((t for t in env.targets if t.tenant == deps.settings.hub.tenant), env.targets[0])
    if report is None or not eval_path:
        result.skipped = "the serving run has no evaluation report or held-out data to compare with"
        return _saved(deps, result)
    settings = run.settings or {}
    data = deps.blobs.get_blob_client(deps.settings.reports_container, eval_path).download_blob().readall()
    loaded = load_examples(data.splitlines(), seed=f"drift|{run.run_id}|{result.checked_at[:10]}",
                           limit=policy.drift_examples)
    evaluation = Evaluation.model_validate(settings.get("evaluation") or {})
    graders, gate = grader_set(run.run_id, settings, evaluation, loaded.examples, report.get("gate_grader"))
    chosen = (report.get("chosen") or {}).get("name")
    evaluated: dict[str, Any] = next((c for c in report.get("candidates", []) if c.get("name") == chosen), {})
    interval = ((evaluated.get("metrics") or {}).get("graders") or {}).get(gate) or {}
    result.grader, result.floor, result.examples = gate, interval.get("low"), len(loaded.examples)
    if result.floor is None or not loaded.examples:
        result.skipped = f"the evaluation report has no interval for {gate}"
        return _saved(deps, result)
    base_model = str(settings.get("base_model") or deps.settings.default_base_model)
    chat = openai_chat_fn(deps.spokes.chat_client(target), base_model)
    serving = Candidate(name="served", kind="final", model=slots[0].model, deployment=name)
    judge = deps.chat.judge_fn() if any(g.asks_judge for g in graders) else None
    rows = run_candidates([serving], loaded.examples, chat, max_workers=4, graders=graders, judge=judge)["served"]
    baseline = Interval(float(interval.get("mean", result.floor)), float(result.floor),
                        float(interval.get("high", 1.0)))
    scores = [r.scores.get(gate, 0.0) for r in rows if gate not in r.grading_failed and gate not in r.not_applicable]
    fresh = mean_interval(scores)
    gap = shortfall(fresh, baseline)
    result.mean, result.baseline = round(fresh.mean, 4), baseline.to_dict()
    result.shortfall = [round(gap.low, 4), round(gap.high, 4)]
    result.held_out_drifted = bool(scores) and gap.high < 0
    gate_grader = next(g for g in graders if g.name == gate)
    result.production = _production(deps, env, name, slots[0].model, graders, gate_grader, baseline,
                                    drift_production.held_out_answers(loaded.examples, rows),
                                    seed=f"drift|{run.run_id}|{result.checked_at[:13]}")
    result.drifted = result.held_out_drifted or bool(result.production.get("drifted"))
    if result.drifted:
        detail = {"environment": env.name, "deployment": name, "grader": gate, "mean": result.mean,
                  "floor": result.floor, "examples": result.examples, "account": target.account,
                  "legs": [leg for leg, hit in (("held_out", result.held_out_drifted),
                                                ("production", result.production.get("drifted"))) if hit],
                  "production": result.production}
        deps.registry.audit(run.run_id, "drift.detected", actor=actors.FLYWHEEL, detail=detail)
        publish(deps, run.run_id, "drift_detected", detail)
        if policy.drift_starts_harvest:
            try:
                result.harvest = harvesting.harvest(deps, env, name, slots).as_dict()
            except Exception as exc:   # noqa: BLE001 - the drift found stands; the harvest timer tries again
                log.warning("drift: the harvest of %s/%s failed: %s", env.name, name, exc)
                result.harvest = {"skipped": f"failed: {type(exc).__name__}: {exc}"[:300]}
    return _saved(deps, result)


def _production(deps: Deps, env: Environment, name: str, model: str, graders: list[Grader], gate: Grader,
                baseline: Interval, held_out: list[tuple[str, str]], *, seed: str) -> dict[str, Any]:
    """The production leg's figures; its failure (a spoke that cannot list, a judge that is gone) is reported
    in them and leaves the held-out leg's verdict standing."""
    policy = env.harvest
    assert policy is not None
    try:
        exchanges, read = drift_production.sample(deps, env, name, model, seed)
        pairs, dropped = drift_production.scrub(exchanges, policy)
        out: dict[str, Any] = {"read": read, "sampled": len(exchanges), "dropped": dropped, "kept": len(pairs)}
        referenced = [(e, r) for e, r in pairs if r]
        plain = [e for e, r in pairs if not r]
        if referenced:
            out["with_reference"] = drift_production.with_reference(deps, referenced, gate, baseline)
        judge = drift_production.judge_of(policy, graders)
        if plain and judge is None:
            out["judged"] = {"skipped": "no judge for answers without a reference: set `judge` in the harvest "
                                        "policy, or give the run a score_model grader"}
        elif plain and judge is not None:
            out["judged"] = drift_production.judged(deps, judge, policy, plain, held_out)
        if not pairs:
            out["skipped"] = "no production exchange to score in the sample"
    except Exception as exc:   # noqa: BLE001 - reported in the check, tried again next tick
        log.warning("drift: production leg of %s/%s failed: %s", env.name, name, exc)
        return {"skipped": f"failed: {type(exc).__name__}: {exc}"[:300], "drifted": False}
    out["drifted"] = any((out.get(leg) or {}).get("drifted") for leg in ("with_reference", "judged"))
    return out


def _report(deps: Deps, run_id: str) -> dict[str, Any] | None:
    blob = deps.blobs.get_blob_client(deps.settings.reports_container, f"{run_id}/evaluation.json")
    try:
        report: dict[str, Any] = json.loads(blob.download_blob().readall())   # what the evaluation stage wrote
        return report
    except ResourceNotFoundError:
        return None


def _saved(deps: Deps, result: DriftCheck) -> DriftCheck:
    deps.blobs.get_blob_client(deps.settings.reports_container,
                               f"drift/{result.environment}/{result.deployment}.json").upload_blob(
        json.dumps(asdict(result), ensure_ascii=False).encode(), overwrite=True)
    return result


def drifted(deps: Deps, slots: list[DeploymentRecord]) -> list[dict[str, Any]]:
    """The last drift check of each (environment, deployment name) these active slots serve, where it found
    drift in the run that serves it now: what `ftops status`, the operator API and the console warn about."""
    found = []
    for env, name in sorted({(s.environment, s.deployment) for s in slots if s.state == "active"}):
        blob = deps.blobs.get_blob_client(deps.settings.reports_container, f"drift/{env}/{name}.json")
        try:
            check = json.loads(blob.download_blob().readall())
        except ResourceNotFoundError:
            continue
        if check.get("drifted") and any(s.run_id == check.get("run_id") for s in slots
                                        if (s.environment, s.deployment) == (env, name)):
            found.append(check)
    return found


def warning(check: dict[str, Any]) -> str:
    """One line for `ftops status` and the console: what drifted, by how much, against what."""
    where = f"drift: {check['environment']}/{check['deployment']} (run {check['run_id']})"
    said = []
    if check.get("held_out_drifted", check.get("drifted")) and check.get("mean") is not None:
        said.append(f"scored {check['grader']} {check['mean']:.3f} on {check['examples']} of its held-out examples, "
                    f"below {_measured(check.get('baseline'), check.get('floor'))} its evaluation measured")
    production = check.get("production") or {}
    leg = production.get("with_reference") or {}
    if leg.get("drifted"):
        said.append(f"scored {leg['grader']} {leg['interval']['mean']:.3f} on {leg['examples']} production "
                    f"exchanges with a reference, below {_measured(leg['baseline'])} its evaluation measured")
    leg = production.get("judged") or {}
    if leg.get("drifted"):
        said.append(f"the judge {leg['judge']} scored {leg['examples']} production answers "
                    f"{_measured(leg['interval'])}, below {_measured(leg['baseline'])} for its answers to "
                    f"{leg.get('baseline_examples', '?')} held-out examples")
    return f"{where} {'; '.join(said) or 'drifted'} (checked {check['checked_at'][:16]})"


def _measured(interval: dict[str, Any] | None, floor: float | None = None) -> str:
    if not interval:
        return f"the {floor:.3f}" if floor is not None else "what"
    return f"{interval['mean']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"
