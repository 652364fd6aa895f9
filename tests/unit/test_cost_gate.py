"""The distillation gate: a student may replace its champion only if it costs at most a set fraction of it."""
from __future__ import annotations

from shared.evaluation.gates import cost_gate
from shared.evaluation.metrics import CandidateMetrics


def metrics(cost: float | None) -> CandidateMetrics:
    return CandidateMetrics(n=30, n_errors=0, error_rate=0.0, mean_f1=0.8, exact_match=0.7, latency_p50_ms=50.0,
                            latency_p95_ms=90.0, mean_prompt_tokens=40.0, mean_completion_tokens=25.0,
                            cost_per_1k_requests_usd=cost)


def test_a_cheap_enough_student_passes_and_a_dear_one_fails_with_the_ratio_in_words() -> None:
    passed = cost_gate(metrics(0.03), metrics(0.12), 0.5)
    assert passed is not None and passed.passed and passed.value == 0.25
    failed = cost_gate(metrics(0.09), metrics(0.12), 0.5)
    assert failed is not None and not failed.passed and "0.75×" in failed.detail and "≤ 0.50×" in failed.detail


def test_no_limit_is_no_gate_and_an_unmeasured_cost_fails() -> None:
    assert cost_gate(metrics(0.03), metrics(0.12), None) is None
    for student, champion in ((metrics(None), metrics(0.12)), (metrics(0.03), None), (metrics(0.03), metrics(None))):
        gate = cost_gate(student, champion, 0.5)
        assert gate is not None and not gate.passed
