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
