"""Gates (each one passing and failing) and the checkpoint choice."""
from __future__ import annotations

from dataclasses import replace

import pytest

from shared.evaluation.gates import choose_candidate, evaluate_gates, thresholds_from
from shared.evaluation.hubdeploy import deployment_prefix, plan_candidates
from shared.evaluation.metrics import CandidateMetrics
from shared.evaluation.runner import Candidate
from shared.run.settings import Thresholds

GOOD = CandidateMetrics(n=100, n_errors=2, error_rate=0.02, mean_f1=0.8, exact_match=0.5, latency_p50_ms=300,
                        latency_p95_ms=900, mean_prompt_tokens=40, mean_completion_tokens=12)
BASE = replace(GOOD, mean_f1=0.3, n_errors=0, error_rate=0.0)


def _gates(chosen: CandidateMetrics, **thresholds: float) -> dict[str, bool]:
    return {g.name: g.passed for g in evaluate_gates(chosen, BASE, Thresholds(**thresholds))}


def test_all_gates_pass_and_report_value_and_threshold() -> None:
    gates = evaluate_gates(GOOD, BASE, Thresholds(min_score=0.5, min_improvement=0.1, max_latency_p95_ms=1000))
    assert all(g.passed for g in gates)
    by_name = {g.name: g for g in gates}
    assert by_name["min_improvement"].value == pytest.approx(0.5)
    assert by_name["max_latency_p95_ms"].threshold == 1000


@pytest.mark.parametrize(("chosen", "thresholds", "failing"), [
    (replace(GOOD, mean_f1=0.4), {"min_score": 0.5, "min_improvement": 0.0}, "min_score"),
    (replace(GOOD, mean_f1=0.33), {"min_score": 0.1, "min_improvement": 0.05}, "min_improvement"),
    (GOOD, {"max_latency_p95_ms": 500}, "max_latency_p95_ms"),
    (replace(GOOD, n_errors=20, error_rate=0.2), {"max_error_rate": 0.1}, "max_error_rate"),
])
def test_each_gate_fails_alone(chosen: CandidateMetrics, thresholds: dict[str, float], failing: str) -> None:
    verdicts = _gates(chosen, **thresholds)
    assert [name for name, ok in verdicts.items() if not ok] == [failing]


def test_latency_gate_without_measurements_fails_and_without_limit_passes() -> None:
    silent = replace(GOOD, latency_p95_ms=None)
    assert _gates(silent, max_latency_p95_ms=100)["max_latency_p95_ms"] is False
    assert _gates(silent)["max_latency_p95_ms"] is True


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
    m = {"final": replace(GOOD, mean_f1=0.7), "base": replace(GOOD, mean_f1=0.99),
         "checkpoint step 10": replace(GOOD, mean_f1=0.75), "checkpoint step 20": replace(GOOD, mean_f1=0.72)}
    assert choose_candidate(_cands(), m).name == "checkpoint step 10"


def test_choice_ties_go_to_the_final_model_then_the_later_checkpoint() -> None:
    tie = {"final": GOOD, "base": BASE, "checkpoint step 10": GOOD, "checkpoint step 20": GOOD}
    assert choose_candidate(_cands(), tie).name == "final"
    no_final = {k: v for k, v in tie.items() if k != "final"}
    assert choose_candidate(_cands(), no_final).name == "checkpoint step 20"


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
