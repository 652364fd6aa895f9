"""The slot history and the approval records against Azurite's Table service: what the fakes promise
(tests/unit/fakes.py) holds on the wire — entries in order with sub-second times, one winner per model."""
from __future__ import annotations

import uuid
from itertools import pairwise
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from shared.store.registry import ApprovalAttempt, ApprovalTaken, Registry, SlotEntry

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(azurite: Any) -> Registry:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    registry = Registry(service, prefix=f"h{uuid.uuid4().hex[:8]}")
    registry.ensure_tables()
    return registry


def entry(run_id: str, model: str, account: str = "ftops-prod-eastus") -> SlotEntry:
    return SlotEntry(environment="prod", account=account, deployment="support-bot", region="eastus",
                     run_id=run_id, model=model, approved_by="Ada <oid-1>", ticket="CHG-1")


def test_a_slot_keeps_each_model_it_served_in_order_and_why_it_left(registry: Registry) -> None:
    registry.begin_serving(entry("run-a", "m-a"), previous_left="-")
    registry.begin_serving(entry("run-b", "m-b"), previous_left="replaced by run run-b's model m-b")
    registry.begin_serving(entry("run-b", "m-b"), previous_left="a duplicate adds nothing")
    registry.begin_serving(entry("run-a", "m-a", account="ftops-prod-westeurope"), previous_left="-")
    history = registry.slot_history("prod", account="ftops-prod-eastus", deployment="support-bot")
    assert [(e.run_id, e.serving, e.left) for e in history] == [
        ("run-a", False, "replaced by run run-b's model m-b"), ("run-b", True, None)]
    assert history[0].since < history[0].until == history[1].since   # type: ignore[operator]
    assert registry.retire_models("run-a", reason="retired by ops") == 2
    assert all(e.retired for e in registry.slot_history(run_id="run-a"))
    registry.close_slot("prod", "ftops-prod-westeurope", "support-bot", left="retired by ops", retired=True)
    assert not [e for e in registry.slot_history("prod", account="ftops-prod-westeurope") if e.serving]


def test_one_approval_attempt_wins_the_conditional_insert(registry: Registry) -> None:
    def attempt(oid: str) -> ApprovalAttempt:
        return ApprovalAttempt(run_id="run-1", environment="prod", approver_oid=oid, approver_name=None,
                               ticket="T", model="m-1", dataset_hash="sha256:d", evaluation_report_hash="sha256:e")
    first = registry.record_approval(attempt("oid-1"))
    with pytest.raises(ApprovalTaken) as lost:
        registry.record_approval(attempt("oid-2"))
    assert lost.value.winner["attempt_id"] == first.attempt_id and lost.value.winner["approver_oid"] == "oid-1"
    kept = registry.approval_attempts("run-1")
    assert [(a.approver_oid, a.outcome) for a in kept] == [("oid-1", "granted"), ("oid-2", "lost")]
    assert registry.approval_winner("run-1", "prod", "m-1", "sha256:e", "sha256:d").approver_oid == "oid-1"  # type: ignore[union-attr]


def test_runs_deploying_one_slot_at_once_leave_one_model_serving_and_an_unbroken_chain(azurite: Any) -> None:
    """Six workers (each its own client, as six hosts would be) start serving six runs in the same slot at the
    same instant: the history must still read as one model at a time — exactly one entry serving, and each
    entry closed at the moment the next began."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    prefix = f"h{uuid.uuid4().hex[:8]}"
    first = Registry(TableServiceClient.from_connection_string(azurite.connection_string), prefix=prefix)
    first.ensure_tables()
    start = Barrier(6)

    def deploy(n: int) -> None:
        registry = Registry(TableServiceClient.from_connection_string(azurite.connection_string), prefix=prefix)
        start.wait()
        registry.begin_serving(entry(f"run-{n}", f"m-{n}"), previous_left=f"replaced by run-{n}")

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(deploy, range(6)))
    history = first.slot_history("prod", account="ftops-prod-eastus", deployment="support-bot")
    assert len(history) == 6
    assert [e.serving for e in history] == [False] * 5 + [True]
    assert all(a.until == b.since for a, b in pairwise(history))
