"""A run's hub job, as training and polling share it: the claim on its job key, and tidying the hub's
files once the job is over."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.store.registry import RunRecord

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps
    from shared.app.ports import Hub

log = logging.getLogger(__name__)


def job_claim_key(job_key: str) -> str:
    # the keys table is shared with other steps' keys: a prefix keeps job keys apart
    return f"job-{job_key}"


def free_job_key(deps: Deps, run: RunRecord) -> None:
    """Forget the job key of a run whose job ended without a model (failed, cancelled): a retrain with the
    same data and settings may train again instead of adopting the ended job."""
    if run.job_key:
        deps.registry.release(job_claim_key(run.job_key))


def tidy_hub(deps: Deps, hub: Hub, run: RunRecord, extra_files: list[str] | None = None) -> list[str]:
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
