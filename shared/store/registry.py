"""The registry: runs, deployments, audit trail and idempotency keys in Azure Table Storage.

Every write that depends on what was read is conditional on the entity's ETag, so two instances racing
on the same run cannot both win; every state transition writes exactly one audit record.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode

from shared.run import states
from shared.store.claims import ConcurrencyError, conditional_update

log = logging.getLogger(__name__)


class _NoLongerApplies(Exception):
    """A deployment slot changed under an update so that the update no longer applies: nothing is written."""


class InvalidTransition(RuntimeError):
    """The run is not in a state this transition may leave from. Permanent for this message."""


class RunNotFound(LookupError):
    pass


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def now_precise() -> str:
    """Now to the microsecond: two records of the same second stay apart, and sort in the order they were made."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class RunRecord:
    run_id: str
    source: str
    state: str = states.RECEIVED
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    settings: dict[str, Any] = field(default_factory=dict)   # effective run settings (run.json + defaults)
    owner: str | None = None
    started_by: str | None = None   # verified object id of who started the current model (operator API retrain)
    ticket: str | None = None
    environments: list[str] = field(default_factory=list)    # target environments, in order
    dataset_hash: str | None = None
    validation: dict[str, Any] | None = None                 # summary; the full report is in reports/
    data_files: dict[str, str] = field(default_factory=dict) # role → prepared blob path (train/validation/eval)
    hub_files: dict[str, str] = field(default_factory=dict)  # role → hub file id
    job_key: str | None = None
    job_id: str | None = None
    job_status: str | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    events_cursor: str | None = None                         # newest job event already recorded
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    chosen_model: str | None = None                          # what evaluation chose to deploy
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)  # environment → approval evidence
    error: dict[str, Any] | None = None
    outbox: list[dict[str, Any]] = field(default_factory=list)  # messages written with a transition, not sent yet
    state_since: str | None = None                           # when the run entered its state (not any later save)
    etag: str | None = None

    @property
    def last_environment(self) -> str | None:
        return self.environments[-1] if self.environments else None

    @property
    def terminal(self) -> bool:
        return states.is_terminal(self.state, self.last_environment)


@dataclass
class DeploymentRecord:
    """One deployment slot: environment × spoke account × deployment name. A newer run replaces it in place."""
    environment: str
    account: str
    deployment: str
    region: str
    subscription: str
    resource_group: str
    run_id: str
    model: str
    previous_model: str | None = None
    previous_run_id: str | None = None
    state: str = "active"                # active | failed | rolled_back | retiring | retired
    sku: str = "standard"
    capacity: int = 1
    tags: dict[str, str] = field(default_factory=dict)
    updated_at: str = field(default_factory=now_iso)
    last_ping: str | None = None
    last_ping_ok: bool | None = None
    ping_failures: int = 0
    healed_at: str | None = None
    healing_since: str | None = None     # keep-alive is re-creating it (retire waits); set before ARM is called
    etag: str | None = None

    @property
    def slot(self) -> str:
        return f"{self.environment}|{self.account}|{self.deployment}"


@dataclass
class SlotEntry:
    """One model's time in one deployment slot (environment × account × deployment name): which model, of which
    run, from when, approved by whom, and why it left. A slot's entries, oldest first, are its history: what
    rollback goes back to, what retire marks, what "serving now" and `ftops history` read."""
    environment: str
    account: str
    deployment: str
    region: str
    run_id: str
    model: str
    since: str = field(default_factory=lambda: now_precise())
    came: str = "deployed"            # deployed | rolled back to | restored (auto-retire)
    approved_by: str | None = None    # the approval evidence's approver (name <oid>), gated environments only
    ticket: str | None = None
    until: str | None = None          # None while it serves
    left: str | None = None           # why it left: superseded by … | rolled back … | retired … | auto-retired …
    healthy: bool = True              # served and passed its smoke test; False once a rollback took it out
    retired: bool = False             # its run was retired (or it was auto-retired): never served again
    entry_id: str = ""
    etag: str | None = None

    @property
    def slot(self) -> str:
        return f"{self.environment}|{self.account}|{self.deployment}"

    @property
    def serving(self) -> bool:
        return self.until is None


@dataclass
class ApprovalAttempt:
    """One person's attempt to approve a run's model into an environment, kept whatever came of it: exactly
    one attempt per run × environment × model (with its evidence hashes) wins (a conditional insert of the
    winner's marker)."""
    run_id: str
    environment: str
    approver_oid: str
    ticket: str
    model: str
    approver_name: str | None = None
    dataset_hash: str | None = None
    evaluation_report_hash: str | None = None
    comment: str | None = None
    at: str = field(default_factory=lambda: now_precise())
    attempt_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    outcome: str = "pending"          # pending | granted | lost (another attempt won) | refused
    winner: str | None = None         # the winning attempt's id (for a loser)
    etag: str | None = None


class ApprovalTaken(RuntimeError):
    """Another approval attempt of the same run × environment × model won the conditional write first."""

    def __init__(self, winner: dict[str, Any]) -> None:
        super().__init__(winner.get("attempt_id", ""))
        self.winner = winner


class StorageRefused(RuntimeError):
    """Table Storage refused the write itself (a 4xx other than a conflict: too large, invalid). Retrying the
    same write cannot succeed: permanent."""


# A string property holds 64 KiB (32K UTF-16 code units); an entity 1 MiB. Stored text is bounded below that
# (the full text stays in the reports), so an owner of 40,000 characters or a long finding cannot fail a write.
PROPERTY_CHARS = 30_000
BOUNDED_STRING = 2_000   # a string inside an oversized JSON property is cut to this, then shorter if need be


def bounded(text: str, limit: int = PROPERTY_CHARS) -> str:
    """`text` if it fits a property, else its start and a marker saying how much was cut."""
    if len(text.encode("utf-16-le")) // 2 <= limit:
        return text
    room = keep = max(0, limit - 64)
    while (units := len(text[:keep].encode("utf-16-le")) // 2) > room:   # outside the BMP: two units each
        keep -= units - room
    return f"{text[:keep]}…[truncated: {len(text):,} chars in all]"


def _shrink(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return bounded(value, limit)
    if isinstance(value, dict):
        return {bounded(str(k), 200): _shrink(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_shrink(v, limit) for v in value]
    return value


def bounded_json(value: Any) -> str:
    """JSON text that fits a property: long strings inside are cut (with a marker) until it does."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    limit = BOUNDED_STRING
    while len(text) > PROPERTY_CHARS and limit >= 50:
        text = json.dumps(_shrink(value, limit), separators=(",", ":"), default=str)
        limit //= 4
    if len(text) > PROPERTY_CHARS:
        text = json.dumps({"truncated": True, "chars": len(text)})
    return text


def _to_entity(record: Any, partition: str, row: str) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row}
    for f in dataclasses.fields(record):
        if f.name == "etag":
            continue
        value = getattr(record, f.name)
        if f.name == "outbox":   # messages are sent as they are: kept small by shared.store.outbox (large → blob)
            entity["outbox_json"] = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, (dict, list)):
            entity[f"{f.name}_json"] = bounded_json(value)
        elif isinstance(value, str):
            entity[f.name] = bounded(value)
        elif value is not None:
            entity[f.name] = value
    return entity


def _refused(exc: HttpResponseError, what: str) -> Exception:
    """A 4xx from Table Storage that is not a conflict is permanent (StorageRefused); the rest stays as it is."""
    status = exc.status_code or 0
    if 400 <= status < 500 and status not in (404, 408, 409, 412, 429):
        return StorageRefused(f"Table Storage refused {what}: {status} {getattr(exc, 'error_code', '') or ''}".strip())
    return exc


def _from_entity[R: (RunRecord, DeploymentRecord, SlotEntry, ApprovalAttempt)](cls: type[R], entity: Any) -> R:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name == "etag":
            continue
        if f"{f.name}_json" in entity:
            kwargs[f.name] = json.loads(entity[f"{f.name}_json"])
        elif f.name in entity:
            kwargs[f.name] = entity[f.name]
    record = cls(**kwargs)
    record.etag = entity.metadata.get("etag") if hasattr(entity, "metadata") else None
    return record


class Registry:
    def __init__(self, service: TableServiceClient, *, prefix: str = "") -> None:
        self._service = service
        names = {n: f"{prefix}{n}" for n in ("runs", "deployments", "audit", "keys", "activejobs", "outbox",
                                              "slothistory", "approvals")}
        self._tables = {n: service.get_table_client(t) for n, t in names.items()}

    def ensure_tables(self) -> None:
        for client in self._tables.values():
            try:
                self._service.create_table_if_not_exists(client.table_name)
            except ResourceExistsError:
                pass

    # --- runs ---------------------------------------------------------------------------------------
    def create_run(self, run: RunRecord, *, actor: str) -> RunRecord | None:
        """Insert a new run; None if a run with this id already exists (a duplicate event)."""
        try:
            meta = self._tables["runs"].create_entity(_to_entity(run, "run", run.run_id))
        except ResourceExistsError:
            return None
        except HttpResponseError as exc:
            raise _refused(exc, f"run {run.run_id}") from exc
        run.etag = meta.get("etag")
        self.audit(run.run_id, "run.created", actor=actor, to_state=run.state, detail={"source": run.source})
        return run

    def get_run(self, run_id: str) -> RunRecord | None:
        try:
            return _from_entity(RunRecord, self._tables["runs"].get_entity("run", run_id))
        except ResourceNotFoundError:
            return None

    def require_run(self, run_id: str) -> RunRecord:
        run = self.get_run(run_id)
        if run is None:
            raise RunNotFound(f"run {run_id!r} is not in the registry")
        return run

    def list_runs(self) -> list[RunRecord]:
        """Every run (oldest first): for sweeps that must see them all. A person's view pages (`page_runs`)."""
        entities = self._tables["runs"].query_entities("PartitionKey eq 'run'")
        return sorted((_from_entity(RunRecord, e) for e in entities), key=lambda r: r.created_at)

    def page_runs(self, *, limit: int = 100, after: str | None = None) -> tuple[list[RunRecord], str | None]:
        """At most `limit` runs in run id order (Table storage's own order), from the first after `after`,
        and the cursor of the next page (None: this was the last). One query of one page: the time does not
        grow with the number of runs."""
        query, params = "PartitionKey eq 'run'", {}
        if after:
            query, params = "PartitionKey eq 'run' and RowKey gt @after", {"after": after}
        pages = self._tables["runs"].query_entities(query, parameters=params, results_per_page=limit).by_page()
        runs: list[RunRecord] = []

        def continued() -> bool:   # azure.core's page iterator: typed as a plain Iterator by the SDK
            return getattr(pages, "continuation_token", None) is not None

        for page in pages:   # the service may answer a page short, with a continuation: take the next one
            runs += [_from_entity(RunRecord, e) for e in page]
            if len(runs) >= limit or not continued():
                break
        more = len(runs) > limit or continued()
        runs = runs[:limit]
        return runs, (runs[-1].run_id if more and runs else None)

    def save_run(self, run: RunRecord) -> RunRecord:
        """Conditional update of a run read earlier (its ETag); ConcurrencyError if it changed since."""
        run.updated_at = now_iso()
        meta = self._replace("runs", _to_entity(run, "run", run.run_id), run.etag)
        run.etag = meta.get("etag")
        return run

    def transition(self, run_id: str, target: str, *, actor: str, detail: dict[str, Any] | None = None,
                   attempts: int = 5, from_states: Collection[str] | None = None, **updates: Any) -> RunRecord:
        """Move a run to `target` (with field updates) as one conditional write plus one audit record.

        Already in `target`: returns the run unchanged (duplicate delivery). A transition the state
        machine does not allow raises InvalidTransition. ETag conflicts are retried on a fresh read.
        `from_states` narrows where this caller may leave from (a train handler must not revive a run that a
        cancel just ended, although `cancelled → uploading` is allowed for a retrain).
        """
        source_state = ""

        def change(run: RunRecord) -> RunRecord | None:
            nonlocal source_state
            source_state = run.state
            if from_states is not None and run.state not in from_states:
                raise InvalidTransition(f"run {run_id}: is {run.state!r}, not one of {sorted(from_states)}")
            if run.state == target and not set(updates) - {"outbox"}:
                return None
            if run.state != target and not states.can_transition(run.state, target):
                raise InvalidTransition(f"run {run_id}: cannot go from {run.state!r} to {target!r}")
            if run.state != target:
                run.state_since = now_iso()
            run.state = target
            for key, value in updates.items():
                if key == "outbox":   # appended, and only by the write that changes the state: a repeat adds nothing
                    value = run.outbox + (list(value) if source_state != target else [])
                setattr(run, key, value)
            return run

        run = conditional_update(lambda: self.require_run(run_id), change, self.save_run, attempts=attempts,
                                 gives_up=f"run {run_id}: too many concurrent updates, will retry")
        if source_state != target:
            self.audit(run_id, f"run.{states.split(target)[0]}", actor=actor, from_state=source_state,
                       to_state=target, detail=detail)
        return run

    # --- jobs being followed by the poller (an index, so a tick never scans finished runs) ----------
    def track_job(self, run_id: str, job_id: str) -> None:
        self._tables["activejobs"].upsert_entity({"PartitionKey": "job", "RowKey": run_id, "job_id": job_id})

    def untrack_job(self, run_id: str) -> None:
        try:
            self._tables["activejobs"].delete_entity("job", run_id)
        except ResourceNotFoundError:
            pass

    def tracked_jobs(self) -> list[tuple[str, str]]:
        return [(e["RowKey"], e["job_id"]) for e in self._tables["activejobs"].query_entities("PartitionKey eq 'job'")]

    # --- the outbox: messages written with a transition, sent after it (shared.store.outbox) -----------------
    def mark_outbox(self, run_id: str, ids: Collection[str] = ()) -> None:
        """Note, before a transition, that the run may hold these unsent messages: a sweep finds them after a
        crash. One marker per message: a transition clearing its own messages never removes the marker of
        another one being written at the same time (a marker per run would be deleted under its feet)."""
        markers = [("upsert", {"PartitionKey": "run", "RowKey": f"{run_id}|{i}", "marked_at": now_iso()},
                    {"mode": UpdateMode.REPLACE}) for i in ids]
        if markers:
            self._tables["outbox"].submit_transaction(markers)

    def clear_outbox(self, run_id: str, sent: Collection[str], *, attempts: int = 5) -> None:
        """Drop the messages `sent` (by id) from the run's outbox, then their markers."""
        def change(run: RunRecord | None) -> RunRecord | None:
            left = [m for m in run.outbox if m.get("id") not in sent] if run is not None else []
            if run is None or len(left) == len(run.outbox):
                return None
            run.outbox = left
            return run

        conditional_update(lambda: self.get_run(run_id), change, self.save_run, attempts=attempts,
                           gives_up=f"run {run_id}: too many concurrent updates while clearing its outbox")
        for message_id in sent:
            self.unmark_outbox("run", f"{run_id}|{message_id}")

    def unmark_outbox(self, partition: str, row: str) -> None:
        try:
            self._tables["outbox"].delete_entity(partition, row)
        except ResourceNotFoundError:
            pass

    def hold_event(self, event_id: str, queue: str, body: str) -> None:
        """An event that is no transition (a healed deployment, a refused command), kept until it is sent."""
        self._tables["outbox"].upsert_entity({"PartitionKey": "event", "RowKey": event_id, "queue": queue,
                                              "body": body, "marked_at": now_iso()}, mode=UpdateMode.REPLACE)

    def outbox_entries(self) -> list[dict[str, Any]]:
        """Every marker and held event: {partition, row, marked_at, queue?, body?}."""
        return [{"partition": e["PartitionKey"], "row": e["RowKey"], "marked_at": e.get("marked_at", ""),
                 "queue": e.get("queue"), "body": e.get("body")} for e in self._tables["outbox"].list_entities()]

    # --- deployments --------------------------------------------------------------------------------
    def get_deployment(self, environment: str, account: str, deployment: str) -> DeploymentRecord | None:
        try:
            entity = self._tables["deployments"].get_entity("deployment", f"{environment}|{account}|{deployment}")
        except ResourceNotFoundError:
            return None
        return _from_entity(DeploymentRecord, entity)

    def save_deployment(self, record: DeploymentRecord) -> DeploymentRecord:
        """Insert (no ETag) or conditionally replace (ETag) a deployment slot."""
        record.updated_at = now_iso()
        entity = _to_entity(record, "deployment", record.slot)
        if record.etag is None:
            try:
                meta = self._tables["deployments"].create_entity(entity)
            except ResourceExistsError as exc:
                raise ConcurrencyError(f"deployment slot {record.slot} was created concurrently") from exc
            except HttpResponseError as exc:
                raise _refused(exc, f"deployment slot {record.slot}") from exc
        else:
            meta = self._replace("deployments", entity, record.etag)
        record.etag = meta.get("etag")
        return record

    def update_deployment(self, slot: DeploymentRecord, *,
                          still_applies: Callable[[DeploymentRecord], bool] | None = None, attempts: int = 5,
                          **changes: Any) -> DeploymentRecord | None:
        """Apply `changes` to a slot read earlier (in place) and save it conditionally; on an ETag conflict
        re-read the slot and apply them again. None, without writing, if the slot is gone or the fresh read
        fails `still_applies`; ConcurrencyError if every attempt lost the race."""
        def change(fresh: DeploymentRecord | None) -> DeploymentRecord:
            if fresh is None or (fresh is not slot and still_applies is not None and not still_applies(fresh)):
                raise _NoLongerApplies
            for key, value in changes.items():
                setattr(fresh, key, value)
            return fresh

        try:
            return conditional_update(lambda: self.get_deployment(slot.environment, slot.account, slot.deployment),
                                      change, self.save_deployment, first=slot, attempts=attempts,
                                      gives_up=f"deployment slot {slot.slot}: too many concurrent updates")
        except _NoLongerApplies:
            return None

    def list_deployments(self, *, run_id: str | None = None, state: str | None = None) -> list[DeploymentRecord]:
        records = [_from_entity(DeploymentRecord, e)
                   for e in self._tables["deployments"].query_entities("PartitionKey eq 'deployment'")]
        return [r for r in records if (run_id is None or r.run_id == run_id) and (state is None or r.state == state)]

    # --- audit --------------------------------------------------------------------------------------
    def audit(self, run_id: str, action: str, *, actor: str, from_state: str | None = None,
              to_state: str | None = None, detail: dict[str, Any] | None = None) -> None:
        row = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:8]}"
        entity = {"PartitionKey": run_id, "RowKey": row, "action": action, "actor": bounded(actor, 1_000),
                  "at": now_iso(), "detail_json": bounded_json(detail or {})}
        if from_state:
            entity["from_state"] = from_state
        if to_state:
            entity["to_state"] = to_state
        try:
            self._tables["audit"].create_entity(entity)
        except HttpResponseError as exc:
            raise _refused(exc, f"the audit record {action} of run {run_id}") from exc

    def audit_trail(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._tables["audit"].query_entities("PartitionKey eq @pk", parameters={"pk": run_id})
        return [{"at": r["at"], "action": r["action"], "actor": r["actor"], "from_state": r.get("from_state"),
                 "to_state": r.get("to_state"), "detail": json.loads(r.get("detail_json") or "{}")}
                for r in sorted(rows, key=lambda r: r["RowKey"])]

    # --- idempotency keys (Powertools style: IN_PROGRESS → COMPLETED, released on failure, stale expires) -
    def claim(self, key: str, *, ttl_seconds: float = 900) -> tuple[str, dict[str, Any] | None]:
        """('claimed', None) if we now own `key`; ('completed', result) if done before; ('in_progress', None)
        if another worker holds a fresh claim."""
        table = self._tables["keys"]
        expires = (datetime.now(UTC) + timedelta(seconds=ttl_seconds)).isoformat()
        entity = {"PartitionKey": "key", "RowKey": key, "status": "IN_PROGRESS", "expires_at": expires}
        try:
            table.create_entity(entity)
            return "claimed", None
        except ResourceExistsError:
            pass
        try:
            current = table.get_entity("key", key)
        except ResourceNotFoundError:
            return self.claim(key, ttl_seconds=ttl_seconds)  # released in between
        if current["status"] == "COMPLETED":
            return "completed", json.loads(current.get("result_json") or "{}")
        if current["expires_at"] > datetime.now(UTC).isoformat():
            return "in_progress", None
        try:  # a stale claim from a worker that died: take it over, conditionally
            self._replace("keys", entity, current.metadata["etag"])
            return "claimed", None
        except ConcurrencyError:
            return "in_progress", None

    def complete(self, key: str, result: dict[str, Any]) -> None:
        self._tables["keys"].upsert_entity({"PartitionKey": "key", "RowKey": key, "status": "COMPLETED",
                                            "expires_at": "", "result_json": json.dumps(result)},
                                           mode=UpdateMode.REPLACE)

    def release(self, key: str) -> None:
        try:
            self._tables["keys"].delete_entity("key", key)
        except ResourceNotFoundError:
            pass

    def _replace(self, table: str, entity: dict[str, Any], etag: str | None) -> dict[str, Any]:
        try:
            return self._tables[table].update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                                     match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceExistsError) as exc:
            raise ConcurrencyError(str(exc)) from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise ConcurrencyError(f"{table}/{entity['RowKey']} changed since it was read") from exc
            raise _refused(exc, f"{table}/{entity['RowKey']}") from exc

    # --- slot history (SlotEntry): which model each slot served, from when, and why it left ------------------
    def slot_history(self, environment: str | None = None, *, account: str | None = None,
                     deployment: str | None = None, run_id: str | None = None) -> list[SlotEntry]:
        """Entries oldest first, narrowed to an environment, a spoke account, a deployment name, a run."""
        entries = [e for e in self._history_entries(environment)
                   if (account is None or e.account == account) and (deployment is None or e.deployment == deployment)
                   and (run_id is None or e.run_id == run_id)]
        return sorted(entries, key=lambda e: (e.since, e.entry_id))

    def begin_serving(self, entry: SlotEntry, *, previous_left: str, previous_healthy: bool = True) -> SlotEntry:
        """The slot serves `entry`'s model from now: the entry it served before is closed at this moment
        (`previous_left`, and unhealthy when a rollback took it out) and this one appended. Serving the same
        run's same model already: that entry, unchanged (a duplicate)."""
        moment = now_precise()
        for open_entry in [e for e in self.slot_history(entry.environment, account=entry.account,
                                                         deployment=entry.deployment) if e.serving]:
            if (open_entry.run_id, open_entry.model) == (entry.run_id, entry.model):
                return open_entry
            self.end_serving(open_entry, left=previous_left, healthy=previous_healthy and open_entry.healthy,
                             until=moment)
        entry.since = moment
        entry.entry_id = entry.entry_id or f"{moment}-{uuid.uuid4().hex[:8]}"
        self._history_put(entry)
        return entry

    def end_serving(self, entry: SlotEntry, *, left: str, healthy: bool | None = None,
                    retired: bool | None = None, until: str | None = None) -> None:
        entry.until, entry.left = entry.until or until or now_precise(), entry.left or left
        if healthy is not None:
            entry.healthy = healthy
        if retired is not None:
            entry.retired = retired
        self._history_put(entry)

    def close_slot(self, environment: str, account: str, deployment: str, *, left: str, retired: bool = False) -> None:
        """The slot serves nothing any more (deleted): its open entry is closed."""
        for entry in self.slot_history(environment, account=account, deployment=deployment):
            if entry.serving:
                self.end_serving(entry, left=left, retired=retired or None)

    def retire_models(self, run_id: str, *, reason: str) -> int:
        """Every entry of the run's models, in every slot, marked retired: no rollback brings them back."""
        marked = 0
        for entry in self.slot_history(run_id=run_id):
            if not entry.retired:
                entry.retired = True
                entry.left = entry.left or (reason if not entry.serving else None)
                self._history_put(entry)
                marked += 1
        return marked

    def _history_entries(self, environment: str | None) -> list[SlotEntry]:
        query = "PartitionKey eq @pk" if environment else "PartitionKey ne ''"
        rows = self._tables["slothistory"].query_entities(query, parameters={"pk": environment or ""})
        return [_from_entity(SlotEntry, r) for r in rows]

    def _history_put(self, entry: SlotEntry) -> None:
        row = f"{entry.account}|{entry.deployment}|{entry.entry_id}"
        self._tables["slothistory"].upsert_entity(_to_entity(entry, entry.environment, row), mode=UpdateMode.REPLACE)

    # --- approval attempts (ApprovalAttempt): each its own record; one wins by a conditional insert ----------
    def record_approval(self, attempt: ApprovalAttempt) -> ApprovalAttempt:
        """Keep the attempt, then try to win: the winner's marker (run × environment × model) is inserted only
        if none exists. ApprovalTaken (with the winner's attempt) when another attempt holds it."""
        table = self._tables["approvals"]
        table.upsert_entity(_to_entity(attempt, attempt.run_id, attempt.attempt_id), mode=UpdateMode.REPLACE)
        marker = {"PartitionKey": attempt.run_id, "RowKey": _winner_row(attempt.environment, attempt.model,
                                                                        attempt.evaluation_report_hash,
                                                                        attempt.dataset_hash),
                  "attempt_id": attempt.attempt_id}
        try:
            table.create_entity(marker)
        except ResourceExistsError:
            won = table.get_entity(attempt.run_id, marker["RowKey"])["attempt_id"]
            if won != attempt.attempt_id:
                attempt.outcome, attempt.winner = "lost", won
                table.upsert_entity(_to_entity(attempt, attempt.run_id, attempt.attempt_id), mode=UpdateMode.REPLACE)
                winner = table.get_entity(attempt.run_id, won)
                raise ApprovalTaken(vars(_from_entity(ApprovalAttempt, winner))) from None
        attempt.outcome, attempt.winner = "granted", attempt.attempt_id
        table.upsert_entity(_to_entity(attempt, attempt.run_id, attempt.attempt_id), mode=UpdateMode.REPLACE)
        return attempt

    def approval_winner(self, run_id: str, environment: str, model: str, evaluation_report_hash: str | None = None,
                        dataset_hash: str | None = None) -> ApprovalAttempt | None:
        table = self._tables["approvals"]
        try:
            won = table.get_entity(run_id, _winner_row(environment, model, evaluation_report_hash,
                                                       dataset_hash))["attempt_id"]
            return _from_entity(ApprovalAttempt, table.get_entity(run_id, won))
        except ResourceNotFoundError:
            return None

    def approval_attempts(self, run_id: str) -> list[ApprovalAttempt]:
        rows = self._tables["approvals"].query_entities("PartitionKey eq @pk", parameters={"pk": run_id})
        attempts = [_from_entity(ApprovalAttempt, r) for r in rows if not r["RowKey"].startswith("winner|")]
        return sorted(attempts, key=lambda a: a.at)


def _winner_row(environment: str, model: str, report_hash: str | None, dataset_hash: str | None) -> str:
    """One winner per thing approved: the model with its evidence (a new evaluation report is a new decision)."""
    bound = f"{model}|{report_hash or ''}|{dataset_hash or ''}"
    return f"winner|{environment}|{hashlib.sha256(bound.encode()).hexdigest()[:32]}"
