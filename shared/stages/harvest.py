"""Harvest (the flywheel): production answers of a deployment become the next run's training data.

A timer tick visits every environment whose spokes configuration has a `harvest` section (off otherwise) and
every deployment name that environment serves. For each it reads what arrived since the last tick — the
spokes' stored completions of the served model (v1 API, oldest first, filtered by the policy's metadata), and
JSONL exchanges dropped under `<TRAFFIC_CONTAINER>/<deployment name>/` — bounded by count and age, curates them with the
validator's rules (shared.validation.curation: format, personal data and secrets, rating, duplicates, overlap
with the champion's held-out and training data), optionally has a teacher deployment on the hub answer the
prompts that passed (distillation; a prompt it does not answer in full is dropped with its reason) and a
judge score the answers (the grader filter), and keeps the result in a pool. When the pool holds enough
examples it becomes a run folder in the datasets container — train.jsonl, the champion's own eval.jsonl (so the challenger is measured
on the champion's examples), run.json last — and enters intake like any drop: same validation, training,
evaluation against the champion, gates and verified approval. The flywheel starts runs; it never approves.

State per (environment, deployment name) is one blob, `flywheel/<env>/<name>/state.json` in the reports
container, written with its ETag: the stored-completion cursor per spoke, the traffic blobs read, the pool,
the content hashes of what was kept (so a repeat is a duplicate across pools).
A pool that reached its size is written out (its folder named by the pool's hash, run.json only if absent)
before anything new is read, so a tick that died half-way repeats the same folder, never a second one.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from shared.run import actors
from shared.run.topology import Environment, HarvestPolicy, Target
from shared.stages import intake
from shared.store import claims
from shared.validation.curation import Curated, CurationPolicy, Exchange, Overlap, curate, prompt_text
from shared.validation.lines import content_hash

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps
    from shared.store.registry import DeploymentRecord, RunRecord

log = logging.getLogger(__name__)
ACTOR = actors.FLYWHEEL
_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")
MAX_TRAFFIC_LINE = 1 << 20    # one exchange; a longer line is dropped as malformed
MAX_REMEMBERED = 50_000       # content hashes of kept exchanges remembered for de-duplication (~1 MB of state)


@dataclass
class HarvestOutcome:
    environment: str
    deployment: str
    read: int = 0
    curation: dict[str, Any] = field(default_factory=dict)
    pool: int = 0
    folder: str | None = None     # datasets/<folder>/ written this tick
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, 0) or k in ("read", "pool")}


def handle_harvest_tick(deps: Deps) -> list[HarvestOutcome]:
    """One pass over every environment with a harvest policy; each deployment name on its own, so one
    failing spoke or deployment does not stop the others."""
    topology = deps.topology
    outcomes: list[HarvestOutcome] = []
    if topology is None:
        return outcomes
    for env in topology.environments:
        if env.harvest is None:
            continue
        for name, slots in sorted(served(deps, env).items()):
            try:
                outcomes.append(harvest(deps, env, name, slots))
            except Exception as exc:   # noqa: BLE001 - reported, retried next tick
                log.warning("harvest %s/%s failed: %s", env.name, name, exc)
                outcomes.append(HarvestOutcome(env.name, name, skipped=f"failed: {type(exc).__name__}: {exc}"[:300]))
    return outcomes


def served(deps: Deps, env: Environment) -> dict[str, list[DeploymentRecord]]:
    """Deployment name → its active slots in this environment."""
    served: dict[str, list[DeploymentRecord]] = {}
    for slot in deps.registry.list_deployments(state="active"):
        if slot.environment == env.name:
            served.setdefault(slot.deployment, []).append(slot)
    return served


def harvest(deps: Deps, env: Environment, name: str, slots: list[DeploymentRecord]) -> HarvestOutcome:
    policy = env.harvest
    assert policy is not None
    outcome = HarvestOutcome(env.name, name)
    with claims.hold(deps.registry, f"harvest|{env.name}|{name}", ttl_seconds=600) as claim:
        if not claim.owned:
            outcome.skipped = "another tick is harvesting it"
            return outcome
        state, etag = _read_state(deps, env.name, name)
        champion = deps.registry.get_run(slots[0].run_id)
        if champion is None:
            outcome.skipped = f"the run {slots[0].run_id} that serves it is unknown"
            claim.release()
            return outcome
        in_flight = _in_flight(deps, state["runs"])
        if not in_flight and len(state["pool"]) >= policy.min_examples:
            # a full pool left by a tick that died before its folder, or one that waited for a run in flight
            outcome.folder = _write_run(deps, env, name, champion, state["pool"], policy)
            state["pool"], state["runs"] = [], [*state["runs"], outcome.folder][-20:]
            etag = _write_state(deps, env.name, name, state, etag)
        exchanges = _collect(deps, env, name, slots[0].model, policy, state)
        outcome.read = len(exchanges)
        if exchanges:   # an idle tick does not read the champion's data files again
            _curate_into(deps, champion, policy, exchanges, state, outcome)
        if in_flight:   # one flywheel run per deployment name at a time: the pool grows until it ends
            outcome.skipped = f"run {in_flight} from the last pool is still in progress"
        elif len(state["pool"]) >= policy.min_examples:
            etag = _write_state(deps, env.name, name, state, etag)   # the pool first: a crash repeats this folder
            outcome.folder = _write_run(deps, env, name, champion, state["pool"], policy)
            state["pool"], state["runs"] = [], [*state["runs"], outcome.folder][-20:]
        _write_state(deps, env.name, name, state, etag)
        outcome.pool = len(state["pool"])
        if outcome.read or outcome.folder:   # an idle tick leaves no trace in the champion's audit trail
            deps.registry.audit(champion.run_id, "flywheel.harvested", actor=ACTOR, detail=outcome.as_dict())
        claim.release()   # a recurring job: the key is free again for the next tick
    return outcome


def _curate_into(deps: Deps, champion: RunRecord, policy: HarvestPolicy, exchanges: list[Exchange],
                 state: dict[str, Any], outcome: HarvestOutcome) -> None:
    """Curate what arrived into the state's pool: the validator's rules first (so nothing dropped there is
    ever sent to a teacher or judge), then the teacher's answers in place of production's, then the grader
    filter. Everything kept before (earlier pools and runs, bounded) counts as seen, so a repeat is a
    duplicate; what is finally not kept is not remembered, so it is curated again should it come back."""
    held_out, previous = _overlaps(deps, champion, policy.leakage_threshold)
    seen = set(state.get("kept", [])) | {_hash(e) for e in state["pool"]}
    before = set(seen)
    rules = CurationPolicy(privacy=policy.privacy, min_rating=policy.min_rating,
                           leakage_threshold=policy.leakage_threshold)
    curated = curate(exchanges, rules, held_out=held_out, previous=previous, seen=seen)
    passed = list(curated.kept)
    if policy.teacher:
        curated.kept = relabel(deps, policy, curated.kept, curated)
    if policy.min_judge_score is not None:
        curated.kept = judged(deps, policy, curated.kept, curated)
    survived = {_prompt_key(e) for e in curated.kept}
    seen -= {_hash(e) for e in passed if _prompt_key(e) not in survived}
    state["kept"] = [*state.get("kept", []), *sorted(seen - before)][-MAX_REMEMBERED:]
    outcome.curation = curated.counts()
    state["pool"] = [*state["pool"], *curated.kept]
    state["counts"] = _add_counts(state.get("counts", {}), curated.counts())


def _hash(example: dict[str, Any]) -> int:
    return content_hash(json.dumps(example, ensure_ascii=False).encode())


def _prompt_key(example: dict[str, Any]) -> str:
    return json.dumps([example["messages"][:-1], example.get("tools")], ensure_ascii=False, sort_keys=True)


# --- what arrived ------------------------------------------------------------------------------------
def _collect(deps: Deps, env: Environment, name: str, model: str, policy: HarvestPolicy,
             state: dict[str, Any]) -> list[Exchange]:
    oldest = (deps.clock.now() - timedelta(days=policy.max_age_days)).timestamp()
    found: list[Exchange] = []
    if "stored_completions" in policy.sources:
        for target in env.targets:
            if not may_leave(deps, target, policy):
                continue
            found += _stored(deps, target, model, policy, state, oldest, policy.max_exchanges - len(found))
    if "traffic" in policy.sources and len(found) < policy.max_exchanges:
        found += _traffic(deps, name, state, oldest, policy.max_exchanges - len(found))
    return found


def may_leave(deps: Deps, target: Target, policy: HarvestPolicy) -> bool:
    """Production data goes to the hub's tenant for training only where the policy says it may."""
    hub_tenant = deps.settings.hub.tenant
    return policy.cross_tenant or not hub_tenant or target.tenant == hub_tenant


def _stored(deps: Deps, target: Target, model: str, policy: HarvestPolicy, state: dict[str, Any],
            oldest: float, budget: int) -> list[Exchange]:
    spokes = deps.spokes
    cursors: dict[str, str] = state["cursors"]
    found: list[Exchange] = []
    more = True
    while more and budget > 0:
        page, more = spokes.stored_completions(target, model=model, metadata=dict(policy.metadata),
                                               after=cursors.get(target.account), limit=min(100, budget))
        for item in page:
            exchange = stored_exchange(item)
            cursors[target.account] = exchange.id
            budget -= 1
            if exchange.created >= oldest:
                found.append(exchange)
        if not page:
            break
    return found


def _traffic(deps: Deps, name: str, state: dict[str, Any], oldest: float, budget: int) -> list[Exchange]:
    container = deps.blobs.get_container_client(deps.settings.traffic_container)
    done: list[str] = state["traffic"]
    found: list[Exchange] = []
    try:
        blobs = sorted((b for b in container.list_blobs(name_starts_with=f"{name}/") if b.name not in done),
                       key=lambda b: (b.last_modified, b.name))
    except ResourceNotFoundError:   # no traffic container: nothing dropped
        return found
    for blob in blobs:
        if budget <= 0:
            break
        if blob.last_modified.timestamp() < oldest:
            done.append(blob.name)
            continue
        data = container.download_blob(blob.name).readall()
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            found.append(traffic_exchange(f"{blob.name}#{number}", line, blob.last_modified.timestamp()))
            budget -= 1
        done.append(blob.name)
    state["traffic"] = done[-5000:]
    return found


def stored_exchange(item: dict[str, Any]) -> Exchange:
    """A stored completion (with its request messages) as an exchange: the request, then the answer."""
    completion = item["completion"]
    answer = ((completion.get("choices") or [{}])[0] or {}).get("message") or {}
    messages = [_message(m) for m in item["messages"]] + [_message(answer)]
    return Exchange(id=completion["id"], messages=tuple(messages), created=float(completion.get("created") or 0))


def traffic_exchange(ident: str, line: bytes, created: float) -> Exchange:
    """A traffic line: `{"messages": [...], "rating": 4, "reference": "…"}` (the answer last; rating and
    reference optional: the reference, the right answer, is read by the drift watch only); anything else is kept as an
    exchange curation drops as malformed, so it is counted rather than lost silently."""
    try:
        obj = json.loads(line) if len(line) <= MAX_TRAFFIC_LINE else None
    except (ValueError, RecursionError):
        obj = None
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        return Exchange(id=ident, messages=(), created=created)
    rating, reference = obj.get("rating"), obj.get("reference")
    tools = obj["tools"] if isinstance(obj.get("tools"), list) else []
    return Exchange(id=ident, messages=tuple(_message(m) for m in obj["messages"] if isinstance(m, dict)),
                    created=created, rating=float(rating) if isinstance(rating, (int, float)) else None,
                    tools=tuple(tools), reference=reference if isinstance(reference, str) else None)


def _message(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in _MESSAGE_KEYS if m.get(k) is not None}


class TeacherUnavailable(Exception):
    """Every call to the teacher failed for want of the teacher (throttled, down, gone or forbidden): an
    outage, not a verdict on the prompts. The tick stops before its state is written, so its cursors do not
    move and the same exchanges are read again next tick, rather than all dropped."""


class JudgeUnavailable(Exception):
    """Every call to the grader filter's judge failed: an outage, handled as the teacher's."""


def relabel(deps: Deps, policy: HarvestPolicy, examples: list[dict[str, Any]],
            curated: Curated) -> list[dict[str, Any]]:
    """Distillation: the teacher (a deployment on the hub) answers each curated prompt, and its answer
    replaces production's. A prompt the teacher does not answer in full — 429 or 5xx after the SDK's
    retries, no connection, a content-filter refusal, an empty or cut-off answer — is dropped and counted
    under its reason, never kept with production's answer. The teacher's answers then pass the validator's
    format and privacy rules again (a teacher can echo or invent a phone number)."""
    import openai

    from shared.azure.chat import error_code
    client = deps.openai_client(max_retries=3)
    answered: list[Exchange] = []
    unreachable = 0
    for example in examples:
        prompt = example["messages"][:-1]
        kwargs: dict[str, Any] = {"model": policy.teacher, "messages": prompt, "temperature": 0, "timeout": 60}
        if example.get("tools"):
            kwargs["tools"] = example["tools"]
        reason, answer = None, None
        try:
            reply = client.chat.completions.create(**kwargs)
        except openai.APIStatusError as exc:   # the SDK retried 408, 409, 429 and 5xx already
            retried = exc.status_code in (408, 409, 429) or exc.status_code >= 500
            unreachable += retried or exc.status_code in (401, 403, 404)
            reason = ("teacher refused: content filter" if error_code(exc) == "content_filter" else
                      f"teacher failed: {exc.status_code}{' after retries' if retried else ''}")
        except openai.APIConnectionError as exc:   # timeouts too
            unreachable += 1
            reason = f"teacher failed: {'timeout' if isinstance(exc, openai.APITimeoutError) else 'no connection'}"
        else:
            reason, answer = _teacher_answer(reply)
        if reason is not None or answer is None:
            log.info("flywheel: teacher %s did not answer a prompt: %s", policy.teacher, reason)
            curated.dropped[reason or "teacher answered nothing"] += 1
            continue
        answered.append(Exchange(id="", messages=(*prompt, answer), tools=tuple(example.get("tools") or ())))
    if examples and unreachable == len(examples):
        raise TeacherUnavailable(f"teacher {policy.teacher}: none of {len(examples)} prompts could be asked "
                                 f"({', '.join(sorted(curated.dropped))}); nothing read this tick is kept as "
                                 "read: the next tick reads it again")
    empty = Overlap([], policy.leakage_threshold)
    again = curate(answered, CurationPolicy(privacy=policy.privacy), held_out=empty, previous=empty)
    for reason, n in again.dropped.items():
        curated.dropped[f"teacher's answer: {reason}"] += n
    curated.masked += again.masked
    curated.privacy_findings += again.privacy_findings
    return again.kept


def _teacher_answer(reply: Any) -> tuple[str | None, dict[str, Any] | None]:
    """(why the teacher's reply is no answer, or the assistant message it gives)."""
    choice = reply.choices[0] if reply.choices else None
    if choice is None or choice.message is None:
        return "teacher answered nothing", None
    if choice.finish_reason == "content_filter":   # what it said so far may be there: a part is no answer
        return "teacher refused: content filter", None
    if getattr(choice.message, "refusal", None):
        return "teacher refused to answer", None
    if choice.finish_reason == "length":
        return "teacher's answer cut off at its token limit", None
    message = choice.message.model_dump(exclude_none=True)
    answer = {k: message[k] for k in ("role", "content", "tool_calls") if message.get(k)}
    if not answer.get("content") and not answer.get("tool_calls"):
        return "teacher answered nothing", None
    return None, {**answer, "role": "assistant"}


def judged(deps: Deps, policy: HarvestPolicy, examples: list[dict[str, Any]],
           curated: Curated) -> list[dict[str, Any]]:
    """The grader filter: the policy's judge (a deployment on the hub) scores each answer against its prompt,
    with no reference; below `min_judge_score` is dropped, and so is an answer the judge could not score (it
    did not pass the filter)."""
    from shared.evaluation.graders import judge_without_reference
    assert policy.judge and policy.min_judge_score is not None
    judge = deps.chat.judge_fn()
    kept = []
    unreachable = 0
    for example in examples:
        try:
            score = judge_without_reference(policy.judge, policy.judge_rubric, user_text(example["messages"]),
                                            answer_text(example["messages"][-1]), judge)
        except Exception as exc:   # noqa: BLE001 - counted: the answer was not judged, so it did not pass
            log.info("flywheel: judge %s could not score an answer: %s", policy.judge, exc)
            unreachable += 1
            score = None
        if score is None:
            curated.dropped["judge could not score it"] += 1
        elif score < policy.min_judge_score:
            curated.dropped["judged below min_judge_score"] += 1
        else:
            kept.append(example)
    if examples and unreachable == len(examples):
        raise JudgeUnavailable(f"judge {policy.judge}: none of {len(examples)} answers could be scored; nothing "
                               "read this tick is kept as read: the next tick reads it again")
    return kept


def user_text(messages: list[dict[str, Any]]) -> str:
    from shared.evaluation.examples import content_text
    return "\n".join(content_text(m.get("content")) for m in messages if m.get("role") == "user")


def answer_text(message: dict[str, Any]) -> str:
    from shared.evaluation.examples import content_text
    return content_text(message.get("content")) or json.dumps(message.get("tool_calls") or [])


# --- leakage ----------------------------------------------------------------------------------------
def _overlaps(deps: Deps, champion: RunRecord, threshold: float) -> tuple[Overlap, Overlap]:
    def prompts(role: str) -> list[str]:
        path = champion.data_files.get(role)
        if not path:
            return []
        blob = deps.blobs.get_blob_client(deps.settings.reports_container, path)
        texts = []
        for line in blob.download_blob().readall().splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("messages"), list):
                texts.append(prompt_text(obj["messages"]))
        return texts
    held_out = Overlap(prompts("eval") + prompts("validation"), threshold)
    return held_out, Overlap(prompts("train"), threshold)


def _in_flight(deps: Deps, folders: list[str]) -> str | None:
    """The run the last folder started, while it has not ended (awaiting approval counts as ended: a person
    decides now, and the next pool may train meanwhile). Found by the id intake gave it (its run.json's name
    and ETag), not by reading every run."""
    if not folders:
        return None
    start = f"{folders[-1]}/run.json"
    drop = intake.drop_started_by(start)
    try:
        etag = deps.blobs.get_blob_client(deps.settings.datasets_container, start).get_blob_properties().etag
    except ResourceNotFoundError:
        return None
    run = deps.registry.get_run(intake.run_id_for(drop, etag)) if drop is not None else None
    if run is not None and not run.terminal and not run.state.startswith("awaiting_approval:"):
        return run.run_id
    return None


# --- the next run -----------------------------------------------------------------------------------
def _write_run(deps: Deps, env: Environment, name: str, champion: RunRecord, pool: list[dict[str, Any]],
               policy: HarvestPolicy) -> str:
    body = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in pool).encode()
    digest = hashlib.sha256(body).hexdigest()[:12]
    folder = f"flywheel-{env.name}-{name}-{digest}"[:120]
    container = deps.blobs.get_container_client(deps.settings.datasets_container)
    if _exists(container, f"{folder}/run.json"):
        return folder
    container.upload_blob(f"{folder}/train.jsonl", body, overwrite=True)
    eval_path = champion.data_files.get("eval")
    if eval_path:
        held_out = deps.blobs.get_blob_client(deps.settings.reports_container, eval_path).download_blob().readall()
        container.upload_blob(f"{folder}/eval.jsonl", held_out, overwrite=True)
    settings = run_settings_for(champion, env, name, policy, digest)
    try:
        container.upload_blob(f"{folder}/run.json", json.dumps(settings, indent=2).encode(), overwrite=False)
    except ResourceExistsError:   # written by an earlier attempt: the same run
        pass
    log.info("flywheel: %s/%s → datasets/%s/ (%d examples)", env.name, name, folder, len(pool))
    return folder


def run_settings_for(champion: RunRecord, env: Environment, name: str, policy: HarvestPolicy,
                     digest: str) -> dict[str, Any]:
    """The champion's settings, for a run that replaces it under the same deployment name: the student base
    model when distilling, no split of the eval file (it is the champion's held-out data), the same gates
    (plus the distillation gate), and where it came from."""
    keep = ("method", "hyperparameters", "seed", "environments", "thresholds", "evaluation", "owner", "pii",
            "over_limit")
    settings = {k: v for k, v in (champion.settings or {}).items() if k in keep and v is not None}
    settings["base_model"] = policy.student_base_model or (champion.settings or {}).get("base_model")
    settings["deployment_name"] = name
    settings["suffix"] = f"fw{digest[:8]}"
    settings["ticket"] = f"flywheel {env.name}/{name} from {champion.run_id}"[:200]
    if policy.max_cost_ratio is not None:
        thresholds = dict(settings.get("thresholds") or {})
        thresholds["max_cost_ratio_vs_champion"] = policy.max_cost_ratio
        settings["thresholds"] = thresholds
    settings["origin"] = {"kind": "flywheel", "environment": env.name, "deployment_name": name,
                          "champion_run": champion.run_id, "pool": digest}
    return {k: v for k, v in settings.items() if v is not None}


# --- state ------------------------------------------------------------------------------------------
def _state_path(env: str, name: str) -> str:
    return f"flywheel/{env}/{name}/state.json"


def _read_state(deps: Deps, env: str, name: str) -> tuple[dict[str, Any], str | None]:
    blob = deps.blobs.get_blob_client(deps.settings.reports_container, _state_path(env, name))
    try:
        download = blob.download_blob()
    except ResourceNotFoundError:
        return {"cursors": {}, "traffic": [], "pool": [], "runs": [], "counts": {}, "kept": []}, None
    state = json.loads(download.readall())
    return state, download.properties.etag


def _write_state(deps: Deps, env: str, name: str, state: dict[str, Any], etag: str | None) -> str:
    """Conditional on what was read: a concurrent tick (its claim lapsed) fails here instead of forking."""
    blob = deps.blobs.get_blob_client(deps.settings.reports_container, _state_path(env, name))
    data = json.dumps(state, ensure_ascii=False).encode()
    if etag is None:
        result = blob.upload_blob(data, overwrite=False)
    else:
        result = blob.upload_blob(data, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)
    return str(result["etag"])


def _exists(container: Any, name: str) -> bool:
    return bool(container.get_blob_client(name).exists())


def _add_counts(total: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    out = dict(total)
    out["kept"] = out.get("kept", 0) + counts["kept"]
    out["masked"] = out.get("masked", 0) + counts["masked"]
    out["privacy_findings"] = out.get("privacy_findings", 0) + counts["privacy_findings"]
    dropped = dict(out.get("dropped", {}))
    for reason, n in counts["dropped"].items():
        dropped[reason] = dropped.get(reason, 0) + n
    out["dropped"] = dropped
    return out
