"""Drift watch (the flywheel's second half): what each environment serves, re-scored on its held-out data.

On the harvest timer, for every environment whose harvest policy sets `drift_examples`, each deployment name
it serves is asked a seeded sample of the serving run's own held-out examples (on one of the environment's
spokes in the hub's tenant) and graded with the run's graders, as its evaluation was. A mean below the lower
bound of the interval its evaluation reported (for the gate grader of the chosen model) is drift: an audit
record and an event (`ftops.run.drift_detected`) on the serving run, the check's figures in
`reports/drift/<env>/<deployment>.json`, and — when the policy says so — a harvest at once.

Not measured here: fresh production exchanges without a reference (that needs a judge deployment); see
docs/flywheel.md, "Not yet".
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceNotFoundError

from shared.run import actors
from shared.run.topology import Environment
from shared.stages import harvest as harvesting
from shared.store.events import publish

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps
    from shared.store.registry import DeploymentRecord

log = logging.getLogger(__name__)


@dataclass
class DriftCheck:
    environment: str
    deployment: str
    run_id: str
    grader: str | None = None
    mean: float | None = None
    floor: float | None = None          # the lower bound its evaluation reported
    examples: int = 0
    drifted: bool = False
    checked_at: str = ""
    skipped: str | None = None
    harvest: dict[str, Any] | None = None


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
    from shared.evaluation.examples import load_examples
    from shared.evaluation.metrics import aggregate
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
    rows = run_candidates([serving], loaded.examples, chat, max_workers=4, graders=graders)["served"]
    result.mean = round(aggregate(rows, graders=[g.name for g in graders]).score(gate), 4)
    result.drifted = result.mean is not None and result.mean < result.floor
    if result.drifted:
        detail = {"environment": env.name, "deployment": name, "grader": gate, "mean": result.mean,
                  "floor": result.floor, "examples": result.examples, "account": target.account}
        deps.registry.audit(run.run_id, "drift.detected", actor=actors.FLYWHEEL, detail=detail)
        publish(deps, run.run_id, "drift_detected", detail)
        if policy.drift_starts_harvest:
            result.harvest = harvesting.harvest(deps, env, name, slots).as_dict()
    return _saved(deps, result)


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
    return (f"drift: {check['environment']}/{check['deployment']} (run {check['run_id']}) scored {check['grader']} "
            f"{check['mean']:.3f} on {check['examples']} of its held-out examples, below the {check['floor']:.3f} "
            f"its evaluation measured (checked {check['checked_at'][:16]})")
