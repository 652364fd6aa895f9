"""The drift watch's production leg: a fresh sample of what the served model answered in production, scored.

The sample comes from the sources the harvest reads — the spokes' stored completions of the served model
(newest first, the policy's metadata, spokes in the hub's tenant unless `cross_tenant`) and the newest
`traffic/<deployment>/` drops — never moving the harvest's cursors, bounded by `max_age_days`; a seeded
sample of `drift_examples` of the most recent. Each exchange is scrubbed with curation's rules (format,
personal data and secrets: dropped or masked, duplicates) before anything is sent to a grader; a rating
does not filter it (a sample of the good answers only would hide drift).

Scored as production answered, never asked again:
- an exchange with a `reference` (a traffic line can carry the right answer, e.g. a person's correction) is
  graded with the run's gate grader, against the interval its evaluation reported for that grader;
- one without is scored by a judge (`judge` in the policy, else the run's score_model grader's deployment)
  with no reference, against the same judge's scores, taken now, of the served model's answers to the
  held-out sample of the other leg: like for like (same judge, same prompt, same moment; only the
  questions differ, and that difference is what this leg watches).
Each comparison is `shared.evaluation.confidence.shortfall`: drift when the interval of the difference lies
below zero (docs/flywheel.md, "Drift watch").
"""
from __future__ import annotations

import json
import random
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceNotFoundError

from shared.run import privacy
from shared.run.topology import Environment, HarvestPolicy
from shared.stages import harvest as harvesting
from shared.validation.curation import CurationPolicy, Exchange, Overlap, curate

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps
    from shared.evaluation.confidence import Interval
    from shared.evaluation.graders import Grader
    from shared.evaluation.metrics import ExampleResult

READ_FACTOR = 2   # the most recent READ_FACTOR × drift_examples exchanges per source are read, then sampled


def sample(deps: Deps, env: Environment, name: str, model: str, seed: str) -> tuple[list[Exchange], int]:
    """(a seeded sample of recent production exchanges, how many were read)."""
    policy = env.harvest
    assert policy is not None and policy.drift_examples
    wanted = policy.drift_examples
    oldest = (deps.clock.now() - timedelta(days=policy.max_age_days)).timestamp()
    found: list[Exchange] = []
    if "stored_completions" in policy.sources:
        for target in env.targets:
            if not harvesting.may_leave(deps, target, policy):
                continue
            page, _ = deps.spokes.stored_completions(target, model=model, metadata=dict(policy.metadata),
                                                     after=None, limit=min(100, READ_FACTOR * wanted),
                                                     newest_first=True)
            found += [x for x in map(harvesting.stored_exchange, page) if x.created >= oldest]
    if "traffic" in policy.sources:
        found += _recent_traffic(deps, name, oldest, READ_FACTOR * wanted)
    return random.Random(seed).sample(found, min(wanted, len(found))), len(found)


def _recent_traffic(deps: Deps, name: str, oldest: float, budget: int) -> list[Exchange]:
    container = deps.blobs.get_container_client(deps.settings.traffic_container)
    try:
        blobs = sorted(container.list_blobs(name_starts_with=f"{name}/"), key=lambda b: (b.last_modified, b.name),
                       reverse=True)
    except ResourceNotFoundError:
        return []
    found: list[Exchange] = []
    for blob in blobs:
        if len(found) >= budget or blob.last_modified.timestamp() < oldest:
            break
        lines = [line for line in container.download_blob(blob.name).readall().splitlines() if line.strip()]
        found += [harvesting.traffic_exchange(f"{blob.name}#{n}", line, blob.last_modified.timestamp())
                  for n, line in enumerate(lines, 1)][-(budget - len(found)):]
    return found


def scrub(exchanges: list[Exchange], policy: HarvestPolicy) -> tuple[list[tuple[dict[str, Any], str | None]],
                                                                      dict[str, int]]:
    """Curation's rules, exchange by exchange so each keeps its reference: (example, reference) pairs and
    the counts of what was dropped, by reason. A reference carrying personal data is masked or dropped
    like the exchange."""
    rules, empty = CurationPolicy(privacy=policy.privacy), Overlap([], policy.leakage_threshold)
    seen: set[int] = set()
    kept: list[tuple[dict[str, Any], str | None]] = []
    dropped: Counter[str] = Counter()
    for exchange in exchanges:
        curated = curate([exchange], rules, held_out=empty, previous=empty, seen=seen)
        dropped.update(curated.dropped)
        reference = exchange.reference
        if curated.kept and reference and _findings(reference):
            reference = privacy.mask(reference) if policy.privacy == "mask" else None
            if reference is None or _findings(reference):
                dropped["personal data or secret (reference)"] += 1
                continue
        kept += [(example, reference) for example in curated.kept]
    return kept, dict(sorted(dropped.items()))


def _findings(text: str) -> list[tuple[str, str]]:
    return privacy.scan_decoded(json.dumps(text, ensure_ascii=False).encode())   # it reads a JSON value


def judge_of(policy: HarvestPolicy, graders: list[Grader]) -> str | None:
    return policy.judge or next((g.model for g in graders if g.kind == "score_model" and g.model), None)


def with_reference(deps: Deps, pairs: list[tuple[dict[str, Any], str]], gate: Grader,
                   baseline: Interval) -> dict[str, Any]:
    """Production's answers graded against their references by the gate grader; compared with the interval
    the evaluation reported for it."""
    from shared.evaluation.examples import Example, content_text, tool_calls_of
    from shared.evaluation.graders import NotApplicable, Reply, grade
    judge = deps.chat.judge_fn() if gate.asks_judge else None
    scores, failed = [], 0
    for i, (example, reference) in enumerate(pairs, 1):
        answer = example["messages"][-1]
        held = Example(line=i, messages=example["messages"][:-1], reference=reference, tools=example.get("tools"))
        try:
            scores.append(grade(gate, Reply(content_text(answer.get("content")), tool_calls_of(answer)), held,
                                judge))
        except NotApplicable:
            continue
        except Exception:   # noqa: BLE001 - a grader failure is no evidence (counted), never a 0
            failed += 1
    return _compared("grader", gate.name, scores, baseline, failed)


def judged(deps: Deps, judge_name: str, policy: HarvestPolicy, examples: list[dict[str, Any]],
           held_out: list[tuple[str, str]]) -> dict[str, Any]:
    """Production's answers and the served model's answers to held-out questions, (question, answer), scored
    by the same judge with no reference."""
    from shared.evaluation.confidence import mean_interval
    production = [(harvesting.user_text(e["messages"]), harvesting.answer_text(e["messages"][-1])) for e in examples]
    fresh, failed = _judge_all(deps, judge_name, policy.judge_rubric, production)
    baseline, failed_baseline = _judge_all(deps, judge_name, policy.judge_rubric, held_out)
    out = _compared("judge", judge_name, fresh, mean_interval(baseline), failed, len(baseline))
    out["judge_failed_on_held_out"] = failed_baseline
    if not baseline:
        out.update(drifted=False, skipped="the judge scored none of the served model's held-out answers")
    return out


def _judge_all(deps: Deps, judge_name: str, rubric: str | None, pairs: list[tuple[str, str]]
               ) -> tuple[list[float], int]:
    from shared.evaluation.graders import judge_without_reference
    judge = deps.chat.judge_fn()
    scores, failed = [], 0
    for question, answer in pairs:
        try:
            score = judge_without_reference(judge_name, rubric, question, answer, judge)
        except Exception:   # noqa: BLE001 - the judge could not be asked: no evidence, counted
            score = None
        if score is None:
            failed += 1
        else:
            scores.append(score)
    return scores, failed


def held_out_answers(examples: list[Any], rows: list[ExampleResult]) -> list[tuple[str, str]]:
    return [(examples[r.index].prompt_text, r.answer) for r in rows if r.ok and r.answer]


def _compared(kind: str, name: str, scores: list[float], baseline: Interval, failed: int,
              baseline_n: int | None = None) -> dict[str, Any]:
    from shared.evaluation.confidence import mean_interval, shortfall
    fresh = mean_interval(scores)
    gap = shortfall(fresh, baseline)
    out: dict[str, Any] = {kind: name, "examples": len(scores), "failed": failed, "interval": fresh.to_dict(),
                           "baseline": baseline.to_dict(), "shortfall": [round(gap.low, 4), round(gap.high, 4)],
                           "drifted": bool(scores) and gap.high < 0}
    if baseline_n is not None:
        out["baseline_examples"] = baseline_n
    return out
