"""A transition's audit record is as durable as its event: it goes in the same conditional write (the run's
outbox), so a crash or a transient storage error between the run's write and the record's never loses it."""
from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from fakes import MemoryRegistry, make_deps

from shared.run import states
from shared.store import outbox
from shared.store.events import advance
from shared.store.registry import RunRecord


class AuditTableDown(MemoryRegistry):
    """The audit table refuses its next `failures` writes (a transient error: a timeout, a 503)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise ServiceRequestError("the audit table timed out")

    def audit(self, *args: Any, **kwargs: Any) -> None:
        self._maybe_fail()
        super().audit(*args, **kwargs)

    def write_audit(self, run_id: str, record: dict[str, Any]) -> None:
        self._maybe_fail()
        super().write_audit(run_id, record)


def test_a_transient_error_writing_the_audit_record_is_retried_not_lost() -> None:
    deps = make_deps(registry=AuditTableDown(failures=1))
    deps.registry.add_run(RunRecord(run_id="r1", source="datasets/x.jsonl", state=states.ACCEPTED))
    with pytest.raises(ServiceRequestError):
        advance(deps, "r1", states.UPLOADING, actor="test")
    assert deps.registry.runs["r1"].state == states.UPLOADING   # the run moved; its record did not get written
    advance(deps, "r1", states.UPLOADING, actor="test")         # the message's retry: the run is already there
    assert [(a["from_state"], a["to_state"]) for a in deps.registry.audit_trail("r1")] == [
        (states.ACCEPTED, states.UPLOADING)]
    assert deps.registry.runs["r1"].outbox == []


def test_a_crash_after_the_transition_leaves_the_record_for_the_sweep_and_files_it_once() -> None:
    deps = make_deps(registry=AuditTableDown(failures=1))
    deps.registry.add_run(RunRecord(run_id="r1", source="datasets/x.jsonl", state=states.ACCEPTED))
    with pytest.raises(ServiceRequestError):
        advance(deps, "r1", states.UPLOADING, actor="test")     # the worker dies here; nobody retries it
    run = deps.registry.runs["r1"]
    outbox.flush(deps, "r1", run.outbox)                        # the outbox sweep, later
    outbox.flush(deps, "r1", run.outbox)                        # …and again (two sweeps raced): still one record
    assert deps.registry.actions("r1") == ["run.uploading"]


def test_a_transition_with_a_large_detail_still_fits_the_runs_outbox() -> None:
    from shared.store.registry import PROPERTY_CHARS, _to_entity
    deps = make_deps()
    deps.registry.add_run(RunRecord(run_id="r1", source="datasets/x.jsonl", state=states.VALIDATING))
    big = {"errors": [f"line {i}: " + "x" * 900 for i in range(40)]}    # ~36K characters of detail
    deps.registry.transition("r1", states.REJECTED, actor="test", detail=big, audit_id="audit-1")
    outbox_json = _to_entity(deps.registry.runs["r1"], "run", "r1")["outbox_json"]
    assert len(outbox_json) <= PROPERTY_CHARS                          # the write would be refused otherwise
