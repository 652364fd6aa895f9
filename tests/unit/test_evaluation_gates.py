"""Gates (each one passing and failing) and the checkpoint choice."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from shared.evaluation.gates import gate_candidates, thresholds_from
from shared.evaluation.hubdeploy import deployment_prefix, plan_candidates
from shared.evaluation.metrics import ExampleResult, aggregate
from shared.evaluation.runner import Candidate
from shared.run.settings import Thresholds


def rows(scores: list[float], *, failed: set[int] = frozenset(), latency: float | None = 300.0,
         errors: int = 0, grader: str = "g") -> list[ExampleResult]:
    """One candidate's answers with these scores of grader `grader`; `failed`: where the grader failed."""
    return [ExampleResult(index=i, answer=None if i < errors else "a", latency_ms=latency,
                          error="APIError" if i < errors else None,
                          scores={} if i in failed else {grader: s},
                          grading_failed=(grader,) if i in failed else ()) for i, s in enumerate(scores)]


def gate(results: dict[str, list[ExampleResult]], trained: list[Candidate] | None = None, **thresholds: Any
         ) -> tuple[Candidate, dict[str, dict[str, Any]]]:
    metrics = {name: aggregate(r, graders=["g"]) for name, r in results.items()}
    trained = trained or [Candidate("final", "final", "ft", "d")]
    chosen, verdicts = gate_candidates(trained, results, metrics, Thresholds(**thresholds), grader="g")
    return chosen, {name: {g.name: g for g in v.gates} for name, v in verdicts.items()}


N = 40
GOOD = [1.0] * 32 + [0.0] * 8          # 0.8
BASE = [0.0] * 28 + [1.0] * 12         # 0.3, right where GOOD is right too


def _verdicts(final: list[ExampleResult], **thresholds: Any) -> dict[str, bool]:
    _, by = gate({"final": final, "base": rows(BASE)}, **thresholds)
    return {name: g.passed for name, g in by["final"].items()}


def test_all_gates_pass_and_report_value_and_threshold() -> None:
    _, by = gate({"final": rows(GOOD), "base": rows(BASE)}, min_score=0.5, min_improvement=0.1,
                 max_latency_p95_ms=1000)
    gates = by["final"]
    assert all(g.passed for g in gates.values()), {k: g.detail for k, g in gates.items()}
    assert gates["min_improvement"].value == pytest.approx(0.5)
    assert gates["max_latency_p95_ms"].threshold == 1000
    assert gates["min_held_out"].value == N


@pytest.mark.parametrize(("final", "thresholds", "failing"), [
    (rows([1.0] * 16 + [0.0] * 24), {"min_score": 0.5, "min_improvement": -0.5}, "min_score"),
    (rows([1.0] * 12 + [0.0] * 28), {"min_score": 0.1, "min_improvement": 0.05}, "min_improvement"),
    (rows(GOOD), {"max_latency_p95_ms": 200}, "max_latency_p95_ms"),
    (rows(GOOD, errors=6), {"max_error_rate": 0.1, "min_improvement": 0.0}, "max_error_rate"),
    (rows(GOOD[:20]), {"min_improvement": 0.0}, "min_held_out"),
])
def test_each_gate_fails_alone(final: list[ExampleResult], thresholds: dict[str, float], failing: str) -> None:
    base = rows(BASE[: len(final)])
    _, by = gate({"final": final, "base": base}, **thresholds)
    assert [name for name, g in by["final"].items() if not g.passed] == [failing]


def test_latency_gate_without_measurements_fails_and_without_limit_passes() -> None:
    silent = rows(GOOD, latency=None)
    assert _verdicts(silent, max_latency_p95_ms=100)["max_latency_p95_ms"] is False
    assert _verdicts(silent)["max_latency_p95_ms"] is True


def test_thresholds_from_run_settings_defaults_and_validates() -> None:
    assert thresholds_from({}).min_score == Thresholds().min_score
    assert thresholds_from({"thresholds": {"min_score": 0.9}}).min_score == 0.9
    with pytest.raises(ValueError):
        thresholds_from({"thresholds": {"min_score": 2}})


def _cands() -> list[Candidate]:
    return [Candidate("final", "final", "ft", "d-final"), Candidate("base", "base", "b", "d-base"),
            Candidate("checkpoint step 10", "checkpoint", "c10", "d-c10", step=10),
            Candidate("checkpoint step 20", "checkpoint", "c20", "d-c20", step=20)]


def test_choice_takes_the_best_fine_tuned_candidate_never_the_base() -> None:
    results = {"final": rows([1.0] * 28 + [0.0] * 12), "base": rows([1.0] * 40),
               "checkpoint step 10": rows([1.0] * 30 + [0.0] * 10), "checkpoint step 20": rows([1.0] * 29 + [0.0] * 11)}
    chosen, _ = gate(results, _cands(), min_improvement=-1.0, non_inferiority_margin=0.5)
    assert chosen.name == "checkpoint step 10"


def test_choice_ties_go_to_the_final_model_then_the_later_checkpoint() -> None:
    tie = {"final": rows(GOOD), "base": rows(BASE), "checkpoint step 10": rows(GOOD), "checkpoint step 20": rows(GOOD)}
    assert gate(tie, _cands())[0].name == "final"
    no_final = {k: v for k, v in tie.items() if k != "final"}
    assert gate(no_final, _cands())[0].name == "checkpoint step 20"


def test_the_chosen_candidate_is_the_best_of_those_that_pass_every_gate() -> None:
    """The best-scoring checkpoint had flagged answers: it fails its content-filter gate, so the final model
    (which passes every gate) is chosen and the run passes — before, the flagged one was chosen and failed it."""
    flagged = [replace(r, flagged=True) if r.index < 5 else r for r in rows([1.0] * 36 + [0.0] * 4)]
    results = {"final": rows(GOOD), "base": rows(BASE), "checkpoint step 10": flagged}
    chosen, by = gate(results, _cands()[:3])
    assert not by["checkpoint step 10"]["max_content_filter_rate"].passed
    assert chosen.name == "final" and all(g.passed for g in by["final"].values())


def test_plan_uses_developer_tier_for_gpt41_and_the_last_two_checkpoints() -> None:
    # what polling records (shared.azure.hub.Hub.checkpoints), deployed by checkpoint id
    ckpts = [{"id": f"ftchkpt-{s}", "step": s, "model": f"gpt-4.1-mini.ft-abc:ckpt-step-{s}", "metrics": {}}
             for s in (30, 10, 20, 5)]
    plan = plan_candidates("run-42", "gpt-4.1-mini.ft-abc", "gpt-4.1-mini-2025-04-14", ckpts, final_step=40)
    assert [c.name for c in plan] == ["final", "base", "checkpoint step 20", "checkpoint step 30"]
    assert [c.model for c in plan if c.kind == "checkpoint"] == ["ftchkpt-20", "ftchkpt-30"]
    assert {c.sku for c in plan if c.kind != "base"} == {"developertier"}
    assert next(c for c in plan if c.kind == "base").sku == "standard"
    again = plan_candidates("run-42", "gpt-4.1-mini.ft-abc", "gpt-4.1-mini", ckpts, final_step=40)
    assert [c.deployment for c in plan] == [c.deployment for c in again]      # a retry reuses the names
    assert all(len(c.deployment) <= 64 for c in plan)
    trimmed = plan_candidates("run-42", "ft", "gpt-4.1-mini", ckpts, final_step=30)
    assert [c.step for c in trimmed if c.kind == "checkpoint"] == [10, 20]   # step 30 is the final model
    unknown_end = plan_candidates("run-42", "ft", "gpt-4.1-mini", ckpts)   # no metrics: newest = final model
    assert [c.step for c in unknown_end if c.kind == "checkpoint"] == [10, 20]
    api_shape = [{"id": "ftchkpt-7", "fine_tuned_model_checkpoint": "m:ckpt-step-7", "step_number": 7}]
    assert [c.model for c in plan_candidates("r", "ft", "gpt-4.1-mini", api_shape, final_step=9)][2:] == ["ftchkpt-7"]
    other = plan_candidates("run-42", "gpt-4o-mini.ft-x", "gpt-4o-mini", [])
    assert other[0].sku == "standard" and other[0].capacity == 1


def test_deployment_prefix_is_unique_per_run_and_valid() -> None:
    long_id = "Sales FAQ / v2 (final)!" * 5
    prefix = deployment_prefix(long_id)
    assert prefix != deployment_prefix(long_id + "x")
    assert all(ch.isalnum() or ch == "-" for ch in prefix) and len(prefix) < 50
