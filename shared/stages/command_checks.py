"""What a bus command (train, cancel, pause, resume, retrain) needs to succeed, checked the same way by
the handler that runs it and by the `ftops` command before it sends it — so a command that cannot
succeed is refused at the keyboard instead of dead-lettered later where nobody looks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.app.settlement import PermanentError
from shared.run import states
from shared.run.hub_api import HubSurface, UnsupportedOnSurface
from shared.run.settings import RunSettings, RunSettingsError, parse_run_settings
from shared.store.registry import RunRecord

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

STARTABLE = frozenset({states.ACCEPTED, states.UPLOADING, states.WAITING_FOR_QUOTA})
CANCELLABLE = STARTABLE | {states.TRAINING}


def cancel_needed(run: RunRecord) -> bool:
    """False: already cancelled (nothing to do). Raises when the run is past cancelling."""
    if run.state == states.CANCELLED:
        return False
    if run.state not in CANCELLABLE:
        raise PermanentError(f"run {run.run_id} is {run.state}: only a run waiting to train or training can be "
                             "cancelled")
    return True


def check_job_action(run: RunRecord, action: str, hub_api: HubSurface) -> str:
    """pause / resume: only a training run's job, and only on a hub API that has the path. The job's id."""
    if run.state != states.TRAINING or not run.job_id:
        raise PermanentError(f"run {run.run_id} is {run.state}: only a training run's job can be {action}d")
    try:
        hub_api.require_pause_resume(action)
    except UnsupportedOnSurface as exc:
        raise PermanentError(f"run {run.run_id}: cannot {action} job {run.job_id}: {exc}") from exc
    return run.job_id


def retrain_settings(run: RunRecord, changes: dict[str, Any]) -> tuple[RunSettings, bool]:
    """The run's settings with the changes, and whether a retrain is needed (False: the same retrain is
    already under way). Raises when the settings are invalid or the state does not allow a retrain."""
    if "owner" in changes and changes["owner"] != (run.settings or {}).get("owner"):
        # the owner is who four eyes are checked against: a command must not swap it for the approver
        raise PermanentError(f"run {run.run_id}: retrain cannot change the owner; drop a new run instead")
    try:
        settings = parse_run_settings({**run.settings, **changes}, source=f"retrain {run.run_id}")
    except RunSettingsError as exc:
        raise PermanentError(str(exc)) from exc
    if run.state in CANCELLABLE:
        if run.settings == settings.model_dump(mode="json") and run.state != states.ACCEPTED:
            return settings, False
        raise PermanentError(f"run {run.run_id} is {run.state}: cancel it, or wait for it to finish, to retrain")
    if not states.can_transition(run.state, states.UPLOADING):
        raise PermanentError(f"run {run.run_id} is {run.state}: it cannot be retrained")
    return settings, True


def check_train(deps: Deps, blob: str, changes: dict[str, Any]) -> tuple[str, str]:
    """(blob name in the datasets container, its ETag) of the dataset a train command names, if it can
    start a run: a top-level .jsonl or a folder's run.json that exists, with settings that parse."""
    from azure.core.exceptions import ResourceNotFoundError

    container = deps.settings.datasets_container
    name = dataset_blob_name(deps, blob)
    if "/" not in name and not name.endswith(".jsonl"):   # intake would only reject it (not_a_dataset)
        raise PermanentError(f"{blob}: not a .jsonl file; name a JSONL dataset or a folder's run.json")
    client = deps.blobs.get_blob_client(container, name)
    try:
        etag = client.get_blob_properties().etag
    except ResourceNotFoundError:
        raise PermanentError(f"{container}/{name} does not exist") from None
    run_json = client.download_blob().readall() if name.endswith("/run.json") else None
    defaults = {"base_model": deps.settings.default_base_model}
    try:
        current = parse_run_settings(run_json, defaults=defaults, source=name)
        merged = parse_run_settings({**current.model_dump(exclude_unset=True), **changes}, defaults=defaults,
                                    source="--settings")
    except RunSettingsError as exc:
        raise PermanentError(str(exc)) from exc
    configured = deps.require_topology().names
    unknown = [e for e in merged.environments or [] if e not in configured]
    if unknown:
        raise PermanentError(f"environments: {', '.join(unknown)} not configured in SPOKES_CONFIG")
    return name, etag


def dataset_blob_name(deps: Deps, blob: str) -> str:
    """`datasets/x.jsonl` or `x.jsonl` → the blob name inside the datasets container, if it can start a run."""
    from shared.stages.intake import drop_started_by
    container = deps.settings.datasets_container
    name = blob[len(container) + 1:] if blob.startswith(f"{container}/") else blob.lstrip("/")
    if ".." in name.split("/"):
        raise PermanentError(f"{blob}: '..' is not allowed in a dataset path")
    if drop_started_by(name) is None:
        raise PermanentError(f"{blob}: a file inside a folder cannot start a run; name its run.json")
    return name
