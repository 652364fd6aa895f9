"""The claim helper against the registry's keys table in Azurite: results survive the round trip, a
failure frees the key, a fresh claim of another worker is respected and a stale one is taken over."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from shared.store import claims
from shared.store.registry import Registry

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(azurite: Any) -> Registry:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    registry = Registry(service, prefix=f"c{uuid.uuid4().hex[:8]}")
    registry.ensure_tables()
    return registry


def test_the_result_of_completed_work_is_what_the_next_delivery_finds(registry: Registry) -> None:
    with claims.hold(registry, "job-k1", ttl_seconds=60) as claim:
        assert claim.owned
        claim.complete({"job_id": "ftjob-1", "hub_files": {"train": "file-1"}})
    with claims.hold(registry, "job-k1", ttl_seconds=60) as again:
        assert again.completed and again.result == {"job_id": "ftjob-1", "hub_files": {"train": "file-1"}}


def test_failed_work_frees_the_key(registry: Registry) -> None:
    with pytest.raises(RuntimeError), claims.hold(registry, "deploy-k2", ttl_seconds=60):
        raise RuntimeError("spoke 503")
    with claims.hold(registry, "deploy-k2", ttl_seconds=60) as again:
        assert again.owned
        again.complete({"state": "deployed:dev"})


def test_a_live_claim_is_respected_and_a_dead_workers_claim_is_taken_over(registry: Registry) -> None:
    registry.claim("evaluate-live", ttl_seconds=600)   # another worker, busy
    registry.claim("evaluate-dead", ttl_seconds=0)     # a worker that died holding it: its claim has expired
    with claims.hold(registry, "evaluate-live", ttl_seconds=60) as live:
        assert live.in_progress
    with claims.hold(registry, "evaluate-dead", ttl_seconds=60) as dead:
        assert dead.owned
        dead.complete({"state": "evaluated"})
    with claims.hold(registry, "evaluate-live", ttl_seconds=60) as still:
        assert still.in_progress                        # the helper never released what it did not own


def test_a_lapsed_lease_is_taken_over_and_the_old_holder_can_neither_release_nor_complete_it(
        registry: Registry) -> None:
    """Once release and completion were unconditional: a worker whose claim had expired freed the claim a
    second worker had taken over, and a third took it too."""
    from shared.store.claims import ConcurrencyError
    stalled = registry.claim("deploy-fenced", ttl_seconds=0)         # a worker frozen past its lease
    assert stalled.status == claims.CLAIMED
    with claims.hold(registry, "deploy-fenced", ttl_seconds=60) as second:
        assert second.owned and second.taken_over
        registry.release("deploy-fenced", token=stalled.token)      # the stalled worker wakes and gives up…
        with claims.hold(registry, "deploy-fenced", ttl_seconds=60) as third:
            assert third.in_progress                                 # …and the second still holds the key
        with pytest.raises(ConcurrencyError):
            registry.complete("deploy-fenced", {"state": "stale"}, token=stalled.token)
        with pytest.raises(ConcurrencyError):
            registry.renew("deploy-fenced", stalled.token, ttl_seconds=60)
        second.complete({"state": "deployed:dev"})
    with claims.hold(registry, "deploy-fenced", ttl_seconds=60) as after:
        assert after.completed and after.result == {"state": "deployed:dev"}


def test_a_working_holder_renews_its_short_lease_so_nobody_takes_it_over(registry: Registry) -> None:
    import time
    with claims.hold(registry, "evaluate-renewed", ttl_seconds=0.6) as working:
        time.sleep(1.5)                                              # work longer than the lease, renewing it
        with claims.hold(registry, "evaluate-renewed", ttl_seconds=60) as other:
            assert other.in_progress and not working.lost
        working.complete({"state": "evaluated"})


def test_run_created_is_on_record_before_the_run_exists_and_once(registry: Registry) -> None:
    """Once written after the run, a crash or one transient error in between lost it: a run with no trail
    of its creation (the project's own --chaos produced one)."""
    from shared.store.registry import RunRecord

    run = RunRecord(run_id="r-created", source="datasets/x.jsonl")
    assert registry.create_run(run, actor="intake") is not None
    assert registry.create_run(RunRecord(run_id="r-created", source="datasets/x.jsonl"), actor="intake") is None
    trail = registry.audit_trail("r-created")
    assert [(a["action"], a["to_state"]) for a in trail] == [("run.created", "received")]
