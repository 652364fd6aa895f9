"""Small pieces training and polling share: guarded field updates of a run, the job-key claim, and
tidying the hub once a job is over."""
from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from shared.claims import conditional_update
from shared.registry import RunRecord

if TYPE_CHECKING:
    from shared.bootstrap import Deps

log = logging.getLogger(__name__)


class Superseded(RuntimeError):
    """The run left the states this step works in (e.g. a cancel won the race): stop, do nothing more."""


def claim_name(job_key: str) -> str:
    # the keys table is shared with other steps' keys: a prefix keeps job keys apart
    return f"job-{job_key}"


def free_job_key(deps: Deps, run: RunRecord) -> None:
    """Forget the job key of a run whose job ended without a model (failed, cancelled): a retrain with the
    same data and settings may train again instead of adopting the ended job."""
    if run.job_key:
        deps.registry.release(claim_name(run.job_key))


def update_run(deps: Deps, run_id: str, allowed: Collection[str], *, attempts: int = 5, **updates: Any) -> RunRecord:
    """Change fields of a run without a state change, only while it is in `allowed` (conditional on ETag)."""
    def change(run: RunRecord) -> RunRecord:
        if run.state not in allowed:
            raise Superseded(f"run {run_id} is {run.state!r} now")
        for key, value in updates.items():
            setattr(run, key, value)
        return run

    return conditional_update(  # type: ignore[no-any-return]
        lambda: deps.registry.require_run(run_id), change, deps.registry.save_run, attempts=attempts,
        gives_up=f"run {run_id}: too many concurrent updates, will retry")


def tidy_hub(deps: Deps, hub: Any, run: RunRecord, extra_files: list[str] | None = None) -> list[str]:
    """After a terminal job: delete the run's files from the hub (unless retention says keep), so the hub
    stays under its 50-file / 1 GB limits. Failures are logged, never fatal: the run's outcome stands."""
    if deps.settings.hub_file_retention != "delete":
        return []
    ids = [i for i in [*run.hub_files.values(), *(extra_files or [])] if i]
    if not ids:
        return []
    try:
        deleted = hub.delete_files(ids)
    except Exception as exc:  # noqa: BLE001 - cleanup must not undo a recorded outcome
        log.warning("run %s: could not delete hub files %s: %s", run.run_id, ids, exc)
        return []
    log.info("run %s: deleted %d hub file(s)", run.run_id, len(deleted))
    return deleted
