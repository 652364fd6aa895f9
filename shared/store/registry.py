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
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableServiceClient, TableTransactionError, UpdateMode

from shared.run import states
from shared.store.claims import (
    CLAIMED,
    COMPLETED,
    IN_PROGRESS,
    LEASE_SECONDS,
    ConcurrencyError,
    KeyState,
    conditional_update,
)

log = logging.getLogger(__name__)


class _NoLongerApplies(Exception):
    """A deployment slot changed under an update so that the update no longer applies: nothing is written."""


class InvalidTransition(RuntimeError):
    """The run is not in a state this transition may leave from. Permanent for this message."""


class RunNotFound(LookupError):
    pass


def _expiry(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


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
    owner: str | None = None        # as run.json (or the train request) names it: a claim until `claimed_by`
    started_by: str | None = None   # verified object id of who started the current model (operator API start/retrain)
    claimed_by: str | None = None   # verified object id of the owner, once they confirmed it (operator API claim)
    makers: list[dict[str, str]] = field(default_factory=list)   # every verified {oid, as}: started/claimed/retrained
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
    retires_on: str | None = None        # the day Azure retires the model it serves (Models API), as last read
    retirement_warned: str | None = None # the retirement day already announced (ftops.run.model_retiring)
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
CREATED_ROW = "00000000T000000.000000Z-created"   # run.created's audit row: before every other of the run
OUTBOX_AUDIT_CHARS = 8_000  # a transition's audit detail travels in the run's outbox (30K for all its messages)
ATTEMPTS_REMEMBERED = 32   # copies whose re-send number a step's counter remembers (a redelivery asks again)
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


def bounded_json(value: Any, chars: int = PROPERTY_CHARS) -> str:
    """JSON text that fits a property (or `chars`): long strings inside are cut (with a marker) until it does."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    limit = BOUNDED_STRING
    while len(text) > chars and limit >= 50:
        text = json.dumps(_shrink(value, limit), separators=(",", ":"), default=str)
        limit //= 4
    if len(text) > chars:
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


_HEAD = "~head|"   # a slot's head row: "~" is never the first character of an account name


def _history_row(entry: SlotEntry) -> str:
    return f"{entry.account}|{entry.deployment}|{entry.entry_id}"


def audit_record(action: str, *, actor: str, from_state: str | None = None, to_state: str | None = None,
                 detail: dict[str, Any] | None = None, row_suffix: str | None = None,
                 detail_chars: int = PROPERTY_CHARS) -> dict[str, Any]:
    """One audit record as the audit table stores it (less its partition, the run id). Its row sorts by
    time; `row_suffix` (an id derived from the transition) makes the row the same whenever it is written.
    `detail_chars`: a record that travels in a run's outbox shares that property with the messages."""
    suffix = hashlib.sha256(row_suffix.encode()).hexdigest()[:12] if row_suffix else uuid.uuid4().hex[:8]
    record = {"RowKey": f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}-{suffix}", "action": action,
              "actor": bounded(actor, 1_000), "at": now_iso(), "detail_json": bounded_json(detail or {}, detail_chars)}
    if from_state:
        record["from_state"] = from_state
    if to_state:
        record["to_state"] = to_state
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
        """Insert a new run; None if a run with this id already exists (a duplicate event). Its `run.created`
        audit record is written first, under a row of its own that sorts first (written once: a duplicate
        event or a retry after a crash finds it there), so a run never exists without it."""
        record = audit_record("run.created", actor=actor, to_state=run.state, detail={"source": run.source})
        try:
            self._tables["audit"].create_entity({"PartitionKey": run.run_id, **record, "RowKey": CREATED_ROW})
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            raise _refused(exc, f"the audit record run.created of run {run.run_id}") from exc
        try:
            meta = self._tables["runs"].create_entity(_to_entity(run, "run", run.run_id))
        except ResourceExistsError:
            return None
        except HttpResponseError as exc:
            raise _refused(exc, f"run {run.run_id}") from exc
        run.etag = meta.get("etag")
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
                   attempts: int = 5, from_states: Collection[str] | None = None, audit_id: str | None = None,
                   **updates: Any) -> RunRecord:
        """Move a run to `target` (with field updates) as one conditional write plus one audit record.

        With `audit_id` (shared.store.events.advance, which marks it in the outbox table first) the audit
        record is written in the same conditional write, into the run's outbox, ahead of the transition's
        messages; flushing the outbox files it under a row derived from the id, so a crash or a transient
        storage error between the two can delay it, never lose it. Without one it is written after the run.

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
            run.state, unsent = target, len(run.outbox)
            for key, value in updates.items():
                if key == "outbox":   # appended, and only by the write that changes the state: a repeat adds nothing
                    value = run.outbox + (list(value) if source_state != target else [])
                setattr(run, key, value)
            if audit_id is not None and source_state != target:
                record = audit_record(action, actor=actor, from_state=source_state, to_state=target, detail=detail,
                                      row_suffix=audit_id, detail_chars=OUTBOX_AUDIT_CHARS)
                run.outbox = [*run.outbox[:unsent], {"id": audit_id, "audit": record}, *run.outbox[unsent:]]
            return run

        action = f"run.{states.split(target)[0]}"
        run = conditional_update(lambda: self.require_run(run_id), change, self.save_run, attempts=attempts,
                                 gives_up=f"run {run_id}: too many concurrent updates, will retry")
        if source_state != target and audit_id is None:
            self.audit(run_id, action, actor=actor, from_state=source_state, to_state=target, detail=detail)
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
        self.write_audit(run_id, audit_record(action, actor=actor, from_state=from_state, to_state=to_state,
                                              detail=detail))

    def write_audit(self, run_id: str, record: dict[str, Any]) -> None:
        """File one record of `audit_record` under its own row: writing it again (a flush repeated after a
        crash) replaces it with itself, never adds a second."""
        entity = {"PartitionKey": run_id, **record}
        try:
            self._tables["audit"].upsert_entity(entity, mode=UpdateMode.REPLACE)
        except HttpResponseError as exc:
            raise _refused(exc, f"the audit record {record.get('action')} of run {run_id}") from exc

    def audit_trail(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._tables["audit"].query_entities("PartitionKey eq @pk", parameters={"pk": run_id})
        return [{"at": r["at"], "action": r["action"], "actor": r["actor"], "from_state": r.get("from_state"),
                 "to_state": r.get("to_state"), "detail": json.loads(r.get("detail_json") or "{}")}
                for r in sorted(rows, key=lambda r: r["RowKey"])]

    # --- idempotency keys (Powertools style: IN_PROGRESS → COMPLETED, released on failure; a short lease ---
    # --- that the holder renews, taken over once it lapses; every write fenced by the holder's ETag) -------
    def claim(self, key: str, *, ttl_seconds: float = LEASE_SECONDS) -> KeyState:
        """claimed (we now hold `key`: its token is the ETag to fence renew/complete/release with; taken_over
        if a dead worker's lapsed lease was taken), completed (done before: its result), or in_progress
        (another worker holds a live lease)."""
        table = self._tables["keys"]
        entity = {"PartitionKey": "key", "RowKey": key, "status": "IN_PROGRESS", "expires_at": _expiry(ttl_seconds)}
        try:
            return KeyState(CLAIMED, token=table.create_entity(entity).get("etag"))
        except ResourceExistsError:
            pass
        try:
            current = table.get_entity("key", key)
        except ResourceNotFoundError:
            return self.claim(key, ttl_seconds=ttl_seconds)  # released in between
        if current["status"] == "COMPLETED":
            return KeyState(COMPLETED, json.loads(current.get("result_json") or "{}"))
        if current["expires_at"] > datetime.now(UTC).isoformat():
            return KeyState(IN_PROGRESS)
        try:  # a lapsed lease: its worker died (or stalled) holding it; take it over, conditionally
            meta = self._replace("keys", entity, current.metadata["etag"])
        except ConcurrencyError:
            return KeyState(IN_PROGRESS)
        log.warning("claim %s: took over a lease that lapsed at %s", key, current["expires_at"])
        return KeyState(CLAIMED, token=meta.get("etag"), taken_over=True)

    def claim_status(self, key: str) -> dict[str, str] | None:
        """{status: IN_PROGRESS|COMPLETED, expires_at} of `key`, or None: what `ftops status --stuck` reads."""
        try:
            entity = self._tables["keys"].get_entity("key", key)
        except ResourceNotFoundError:
            return None
        return {"status": entity["status"], "expires_at": entity.get("expires_at") or ""}

    def renew(self, key: str, token: str, *, ttl_seconds: float = LEASE_SECONDS) -> str:
        """Extend our lease on `key`; the new token. ConcurrencyError if it is no longer ours."""
        entity = {"PartitionKey": "key", "RowKey": key, "status": "IN_PROGRESS", "expires_at": _expiry(ttl_seconds)}
        return str(self._replace("keys", entity, token).get("etag"))

    def complete(self, key: str, result: dict[str, Any], *, token: str | None = None) -> None:
        """Mark `key` done. With our `token`: only if we still hold it (ConcurrencyError if not)."""
        entity = {"PartitionKey": "key", "RowKey": key, "status": "COMPLETED", "expires_at": "",
                  "result_json": json.dumps(result)}
        if token is not None:
            self._replace("keys", entity, token)
        else:
            self._tables["keys"].upsert_entity(entity, mode=UpdateMode.REPLACE)

    def release(self, key: str, *, token: str | None = None) -> None:
        """Free `key`. With our `token`: only if we still hold it (a claim taken over is the new holder's)."""
        try:
            if token is None:
                self._tables["keys"].delete_entity("key", key)
            else:
                self._tables["keys"].delete_entity("key", key, etag=token, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            pass
        except (ResourceModifiedError, HttpResponseError) as exc:
            if getattr(exc, "status_code", None) != 412:
                raise
            log.warning("claim %s: not released, another worker holds it now", key)

    # --- re-sent requests: one attempt counter per step, across every reason for waiting ----------------
    def next_attempt(self, step: str, *, after: int) -> int:
        """The number of the next copy of `step`'s request (its MessageId ends `-a<n>`), counted across every
        reason a copy is re-sent (busy elsewhere, quota, …), so two chains of copies never mint the same id.
        The copy numbered `after` asking again (a redelivery after it sent, then died) gets the same number:
        its re-send is a duplicate Service Bus drops, not a second live chain."""
        row = "attempt-" + hashlib.sha256(step.encode()).hexdigest()[:40]

        def read() -> dict[str, Any]:
            try:
                entity = self._tables["keys"].get_entity("attempt", row)
            except ResourceNotFoundError:
                return {"count": 0, "given": {}, "etag": None}
            return {"count": int(entity["count"]), "given": json.loads(entity.get("given_json") or "{}"),
                    "etag": entity.metadata["etag"]}

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            if str(after) in current["given"]:
                return None
            count = current["count"] + 1
            given = dict(list(current["given"].items())[-(ATTEMPTS_REMEMBERED - 1):])
            return {**current, "count": count, "given": {**given, str(after): count}}

        def write(new: dict[str, Any]) -> dict[str, Any]:
            entity = {"PartitionKey": "attempt", "RowKey": row, "step": bounded(step, 1_000),
                      "count": new["count"], "given_json": json.dumps(new["given"])}
            if new["etag"] is None:
                try:
                    self._tables["keys"].create_entity(entity)
                except ResourceExistsError as exc:
                    raise ConcurrencyError(f"attempt counter of {step} created concurrently") from exc
            else:
                self._replace("keys", entity, new["etag"])
            return new

        result = conditional_update(read, change, write, attempts=10,
                                    gives_up=f"{step}: too many concurrent re-sends, will retry")
        return int(result["given"][str(after)])

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
        run's same model already: that entry, unchanged (a duplicate).

        Closing and appending are one conditional write (`_history_swap`), guarded by the slot's head row, so
        runs that start serving one slot at the same instant queue up: one model serves at a time and each
        entry ends when the next begins."""
        def read() -> tuple[str | None, list[SlotEntry]]:
            head = self._history_head(entry.environment, entry.account, entry.deployment)
            return head, [e for e in self.slot_history(entry.environment, account=entry.account,
                                                       deployment=entry.deployment) if e.serving]

        def change(current: tuple[str | None, list[SlotEntry]]) -> tuple[str | None, list[SlotEntry]] | None:
            head, serving = current
            if any((e.run_id, e.model) == (entry.run_id, entry.model) for e in serving):
                return None
            moment = now_precise()
            for open_entry in serving:
                open_entry.until, open_entry.left = moment, open_entry.left or previous_left
                open_entry.healthy = previous_healthy and open_entry.healthy
            entry.since, entry.entry_id = moment, f"{moment}-{uuid.uuid4().hex[:8]}"
            return head, serving

        def write(swap: tuple[str | None, list[SlotEntry]]) -> tuple[str | None, list[SlotEntry]]:
            self._history_swap(swap[0], swap[1], entry)
            return swap

        _, serving = conditional_update(read, change, write, attempts=20,
                                        gives_up=f"slot {entry.slot}: too many models starting at once")
        same = [e for e in serving if (e.run_id, e.model) == (entry.run_id, entry.model)]
        return same[0] if same else entry

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
        return [_from_entity(SlotEntry, r) for r in rows if not r["RowKey"].startswith(_HEAD)]

    def _history_put(self, entry: SlotEntry) -> None:
        self._tables["slothistory"].upsert_entity(_to_entity(entry, entry.environment, _history_row(entry)),
                                                  mode=UpdateMode.REPLACE)

    def _history_head(self, environment: str, account: str, deployment: str) -> str | None:
        """The ETag of the slot's head row (None: no model has served the slot yet)."""
        try:
            head = self._tables["slothistory"].get_entity(environment, f"{_HEAD}{account}|{deployment}")
        except ResourceNotFoundError:
            return None
        return str(head.metadata["etag"])

    def _history_swap(self, head: str | None, closing: list[SlotEntry], opening: SlotEntry) -> None:
        """Close `closing` and append `opening` in one entity group transaction (one environment is one
        partition), on condition that nobody moved the slot's head or changed a closing entry since they were
        read: ConcurrencyError otherwise."""
        if_unchanged = {"mode": UpdateMode.REPLACE, "match_condition": MatchConditions.IfNotModified}
        head_row = {"PartitionKey": opening.environment, "RowKey": f"{_HEAD}{opening.account}|{opening.deployment}",
                    "serving": opening.entry_id}
        operations: list[Any] = [("create", head_row) if head is None else ("update", head_row, {**if_unchanged,
                                                                                               "etag": head})]
        operations += [("update", _to_entity(e, e.environment, _history_row(e)), {**if_unchanged, "etag": e.etag})
                       for e in closing]
        operations.append(("create", _to_entity(opening, opening.environment, _history_row(opening))))
        try:
            self._tables["slothistory"].submit_transaction(operations)
        except TableTransactionError as exc:
            if exc.status_code in (409, 412):
                raise ConcurrencyError(f"slot {opening.slot} changed since it was read") from exc
            raise

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
