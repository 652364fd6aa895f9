"""Registry.page_runs against Table storage (Azurite): pages of the asked size, in run id order, each run once,
the cursor of the last page None (issue 24, item 4)."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from shared.store.registry import Registry, RunRecord

pytestmark = pytest.mark.integration


def test_pages_cover_every_run_once_in_run_id_order(azurite: Any) -> None:
    registry = Registry(TableServiceClient.from_connection_string(azurite.connection_string),
                        prefix=f"p{uuid.uuid4().hex[:8]}")
    registry.ensure_tables()
    ids = [f"run-{i:03d}" for i in range(23)]
    for run_id in reversed(ids):
        registry.create_run(RunRecord(run_id=run_id, source="s"), actor="test")
    seen, after, sizes = [], None, []
    while True:
        runs, after = registry.page_runs(limit=10, after=after)
        sizes.append(len(runs))
        seen += [r.run_id for r in runs]
        if after is None:
            break
    assert seen == ids and sizes == [10, 10, 3]
    whole, after = registry.page_runs(limit=23)
    assert [r.run_id for r in whole] == ids and after is None
