"""The in-memory fakes of every port (shared.app.ports) the unit tests hand to handlers, and `make_deps`."""
from __future__ import annotations

import copy
import dataclasses
import threading
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from shared.app.bootstrap import Deps
from shared.run.config import HubSettings, Settings
from shared.store.claims import CLAIMED, COMPLETED, IN_PROGRESS, KeyState
from shared.store.registry import (
    ApprovalAttempt,
    ApprovalTaken,
    ConcurrencyError,
    DeploymentRecord,
    Registry,
    RunNotFound,
    RunRecord,
    SlotEntry,
    now_iso,
)


class InMemoryClaims:
    """The registry's idempotency claims (IN_PROGRESS → COMPLETED, released on failure), kept in
    `self.keys` — which the using fake creates, and a test may set to pretend another worker holds a key;
    and the outbox's bookkeeping (the fakes' runs are in `self.runs`; markers are not kept)."""

    keys: dict[str, str]
    _claims_lock = threading.Lock()

    def claim(self, key: str, *, ttl_seconds: float = 0) -> KeyState:
        with self._claims_lock:
            status = self.keys.get(key)
            if status == "COMPLETED":
                return KeyState(COMPLETED, dict(self._results().get(key) or {}))
            if status == "IN_PROGRESS":
                return KeyState(IN_PROGRESS)
            self.keys[key] = "IN_PROGRESS"
            return KeyState(CLAIMED, token=self._new_token(key))

    def _new_token(self, key: str) -> str:
        tokens = self.__dict__.setdefault("tokens", {})
        tokens[key] = f"t{len(tokens)}-{key}-{id(object())}"
        return str(tokens[key])

    def _holds(self, key: str, token: str | None) -> bool:
        return token is None or (self.keys.get(key) == "IN_PROGRESS"
                                 and self.__dict__.get("tokens", {}).get(key) == token)

    def renew(self, key: str, token: str, *, ttl_seconds: float = 0) -> str:
        with self._claims_lock:
            if not self._holds(key, token):
                raise ConcurrencyError(f"claim {key} is no longer ours")
            return self._new_token(key)

    def complete(self, key: str, result: Any, *, token: str | None = None) -> None:
        if not self._holds(key, token):
            raise ConcurrencyError(f"claim {key} is no longer ours")
        self.keys[key] = "COMPLETED"
        self._results()[key] = result

    def _results(self) -> dict[str, Any]:   # what completions recorded, as the registry's result_json
        return self.__dict__.setdefault("results", {})  # type: ignore[no-any-return]

    def release(self, key: str, *, token: str | None = None) -> None:
        if self._holds(key, token):
            self.keys.pop(key, None)

    def claim_status(self, key: str) -> dict[str, str] | None:
        """As the registry's; a test may set `leases[key]` (an ISO time) for when the holder's lease lapses."""
        status = self.keys.get(key)
        if status is None:
            return None
        return {"status": status, "expires_at": self.__dict__.get("leases", {}).get(key, "9999-12-31T00:00:00")}

    def next_attempt(self, step: str, *, after: int) -> int:
        """The registry's per-step attempt counter (shared.store.registry.Registry.next_attempt)."""
        with self._claims_lock:
            counters = self.__dict__.setdefault("attempts", {})
            count, given = counters.get(step, (0, {}))
            if after not in given:
                count += 1
                given = {**given, after: count}
                counters[step] = (count, given)
            return int(given[after])

    def mark_outbox(self, run_id: str, ids: Any = ()) -> None:
        pass

    def clear_outbox(self, run_id: str, sent: Any, *, attempts: int = 5) -> None:
        run = getattr(self, "runs", {}).get(run_id)
        if run is not None:
            run.outbox = [m for m in run.outbox if m.get("id") not in sent]

    def hold_event(self, event_id: str, queue: str, body: str) -> None:
        pass

    def unmark_outbox(self, partition: str, row: str) -> None:
        pass

    def outbox_entries(self) -> list[Any]:
        return []


class Recording(dict):
    """An environment that records which settings were read (so tests can compare them with docs and infra)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)


class MemoryRegistry(InMemoryClaims):
    """The registry in memory: runs and deployment slots with ETags (a stale write raises ConcurrencyError),
    the audit trail, the active-jobs index and claims. Transitions and slot updates are the real registry's
    code (shared.store.registry.Registry), run over these reads and writes, so the state machine is the same."""

    def __init__(self) -> None:
        self.runs: dict[str, RunRecord] = {}
        self.slots: dict[str, DeploymentRecord] = {}
        self.audits: list[dict[str, Any]] = []
        self.tracked: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.history: dict[str, SlotEntry] = {}            # slot|entry id → entry
        self.heads: dict[str, str] = {}                    # slot → its head's ETag (moved by each swap)
        self.approval_records: dict[str, ApprovalAttempt] = {}
        self.approval_winners: dict[tuple[Any, ...], str] = {}   # run, environment, model, hashes → attempt id
        self._n = 0
        self._lock = threading.RLock()

    def _etag(self) -> str:
        self._n += 1
        return f"e{self._n}"

    def add_run(self, run: RunRecord) -> RunRecord:
        """A run as if an earlier stage had written it (no audit record)."""
        with self._lock:
            run.etag = run.etag or self._etag()
            self.runs[run.run_id] = copy.deepcopy(run)
        return run

    def create_run(self, run: RunRecord, *, actor: str) -> RunRecord | None:
        with self._lock:
            if run.run_id in self.runs:
                return None
            self.add_run(run)
        self.audit(run.run_id, "run.created", actor=actor, to_state=run.state)
        return run

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            run = self.runs.get(run_id)
            return copy.deepcopy(run) if run else None

    def require_run(self, run_id: str) -> RunRecord:
        run = self.get_run(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    def list_runs(self) -> list[RunRecord]:
        with self._lock:
            return [copy.deepcopy(r) for r in self.runs.values()]

    def page_runs(self, *, limit: int = 100, after: str | None = None) -> tuple[list[RunRecord], str | None]:
        with self._lock:   # run id order, as Table storage's
            ids = sorted(i for i in self.runs if after is None or i > after)
            page = [copy.deepcopy(self.runs[i]) for i in ids[:limit]]
            return page, (page[-1].run_id if len(ids) > limit else None)

    def save_run(self, run: RunRecord) -> RunRecord:
        with self._lock:
            if run.etag != self.runs[run.run_id].etag:
                raise ConcurrencyError(run.run_id)
            run.etag = self._etag()
            self.runs[run.run_id] = copy.deepcopy(run)
            return run

    transition = Registry.transition

    def get_deployment(self, environment: str, account: str, deployment: str) -> DeploymentRecord | None:
        with self._lock:
            slot = self.slots.get(f"{environment}|{account}|{deployment}")
            return copy.deepcopy(slot) if slot else None

    def save_deployment(self, record: DeploymentRecord) -> DeploymentRecord:
        with self._lock:
            current = self.slots.get(record.slot)
            if (current.etag if current else None) != record.etag:
                raise ConcurrencyError(record.slot)
            record.etag = self._etag()
            self.slots[record.slot] = copy.deepcopy(record)
            return record

    update_deployment = Registry.update_deployment

    def list_deployments(self, *, run_id: str | None = None, state: str | None = None) -> list[DeploymentRecord]:
        with self._lock:
            return [copy.deepcopy(r) for r in self.slots.values()
                    if (run_id is None or r.run_id == run_id) and (state is None or r.state == state)]

    def audit(self, run_id: str, action: str, *, actor: str, from_state: str | None = None,
              to_state: str | None = None, detail: dict[str, Any] | None = None) -> None:
        with self._lock:
            self.audits.append({"run_id": run_id, "at": now_iso(), "action": action, "actor": actor,
                                "from_state": from_state, "to_state": to_state, "detail": detail or {}})

    def write_audit(self, run_id: str, record: dict[str, Any]) -> None:
        """A record of shared.store.registry.audit_record, filed once under its row (as the audit table does)."""
        import json
        with self._lock:
            if any(a.get("row") == record["RowKey"] for a in self.audits):
                return
            self.audits.append({"run_id": run_id, "row": record["RowKey"], "at": record["at"],
                                "action": record["action"], "actor": record["actor"],
                                "from_state": record.get("from_state"), "to_state": record.get("to_state"),
                                "detail": json.loads(record["detail_json"])})

    def audit_trail(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [{k: v for k, v in a.items() if k not in ("run_id", "row")} for a in self.audits
                    if a["run_id"] == run_id]

    def actions(self, run_id: str) -> list[str]:
        return [a["action"] for a in self.audit_trail(run_id)]

    slot_history = Registry.slot_history
    begin_serving = Registry.begin_serving
    end_serving = Registry.end_serving
    close_slot = Registry.close_slot
    retire_models = Registry.retire_models

    def _history_entries(self, environment: str | None) -> list[SlotEntry]:
        with self._lock:
            return [copy.deepcopy(e) for e in self.history.values() if environment in (None, e.environment)]

    def _history_put(self, entry: SlotEntry) -> None:
        with self._lock:
            entry.etag = self._etag()
            self.history[f"{entry.slot}|{entry.entry_id}"] = copy.deepcopy(entry)

    def _history_head(self, environment: str, account: str, deployment: str) -> str | None:
        with self._lock:
            return self.heads.get(f"{environment}|{account}|{deployment}")

    def _history_swap(self, head: str | None, closing: list[SlotEntry], opening: SlotEntry) -> None:
        with self._lock:   # the entity group transaction: all of it, on condition nothing moved, or none of it
            stale = [e for e in closing if self.history[f"{e.slot}|{e.entry_id}"].etag != e.etag]
            if self.heads.get(opening.slot) != head or stale:
                raise ConcurrencyError(opening.slot)
            self.heads[opening.slot] = self._etag()
            for changed in [*closing, opening]:
                self._history_put(changed)

    def record_approval(self, attempt: ApprovalAttempt) -> ApprovalAttempt:
        with self._lock:   # the insert-if-absent the table does with its winner's marker
            won = self.approval_winners.setdefault((attempt.run_id, attempt.environment, attempt.model,
                                                    attempt.evaluation_report_hash, attempt.dataset_hash),
                                                   attempt.attempt_id)
            attempt.outcome, attempt.winner = ("granted" if won == attempt.attempt_id else "lost"), won
            self.approval_records[attempt.attempt_id] = copy.deepcopy(attempt)
            if won != attempt.attempt_id:
                raise ApprovalTaken(vars(copy.deepcopy(self.approval_records[won])))
            return attempt

    def approval_winner(self, run_id: str, environment: str, model: str, evaluation_report_hash: str | None = None,
                        dataset_hash: str | None = None) -> ApprovalAttempt | None:
        with self._lock:
            won = self.approval_winners.get((run_id, environment, model, evaluation_report_hash, dataset_hash))
            return copy.deepcopy(self.approval_records[won]) if won else None

    def approval_attempts(self, run_id: str) -> list[ApprovalAttempt]:
        with self._lock:
            return sorted((copy.deepcopy(a) for a in self.approval_records.values() if a.run_id == run_id),
                          key=lambda a: a.at)

    def track_job(self, run_id: str, job_id: str) -> None:
        with self._lock:
            self.tracked[run_id] = job_id

    def untrack_job(self, run_id: str) -> None:
        with self._lock:
            self.tracked.pop(run_id, None)

    def tracked_jobs(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self.tracked.items())


class MemoryPublisher:
    """What was sent, in order: (queue, event), with each message's delay."""

    def __init__(self, dead_letters: list[dict[str, Any]] | None = None) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.delays: list[float] = []
        self.dead_letters = dead_letters or []   # as shared.azure.bus.Publisher.peek_dead_letters returns them
        self._lock = threading.Lock()

    def send(self, queue: str, event: Any, *, delay_seconds: float = 0) -> None:
        with self._lock:
            self.sent.append((queue, event))
            self.delays.append(delay_seconds)

    def peek_dead_letters(self, queue: str, *, max_count: int = 100) -> list[dict[str, Any]]:
        return [letter for letter in self.dead_letters if letter["queue"] == queue][:max_count]

    def types(self) -> list[str]:
        return [e.type for _, e in self.sent]

    def deploys(self, queue: str = "ftops-deploy") -> list[str]:
        return [e.id for q, e in self.sent if q == queue]


class MemoryBlobs:
    """Blob storage in memory: (container, name) → bytes, through the SDK calls the handlers make."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], bytes] = {}
        self.metadata: dict[tuple[str, str], dict[str, str]] = {}
        self.writes: dict[tuple[str, str], int] = {}   # uploads per blob: an ETag changes on every write, as Azure's

    def get_blob_client(self, container: str, name: str) -> Any:
        return _MemoryBlob(self.data, container, name, self.metadata, self.writes)

    def get_container_client(self, container: str) -> Any:
        blobs = self

        class Container:
            url = f"memory://{container}"

            def get_blob_client(self, name: str) -> Any:
                return blobs.get_blob_client(container, name)

            def list_blobs(self, name_starts_with: str = "", **_: Any) -> list[Any]:
                return [SimpleNamespace(name=n, size=len(b)) for (c, n), b in sorted(blobs.data.items())
                        if c == container and n.startswith(name_starts_with)]

            def upload_blob(self, name: str, body: Any, **kwargs: Any) -> None:
                blobs.get_blob_client(container, name).upload_blob(body, **kwargs)

            def delete_blob(self, name: str, **_: Any) -> None:
                from azure.core.exceptions import ResourceNotFoundError
                if blobs.data.pop((container, name), None) is None:
                    raise ResourceNotFoundError(f"{container}/{name}: no such blob")
                blobs.metadata.pop((container, name), None)

        return Container()


class _MemoryBlob:
    """One blob; ETags from the content, metadata and number of writes (the same bytes uploaded again get a new one,
    as on Azure), and the SDK's match conditions honoured on upload."""
    def __init__(self, data: dict[tuple[str, str], bytes], container: str, name: str,
                 metadata: dict[tuple[str, str], dict[str, str]] | None = None,
                 writes: dict[tuple[str, str], int] | None = None) -> None:
        self._data, self._key = data, (container, name)
        self._metadata = metadata if metadata is not None else {}
        self._writes = writes if writes is not None else {}

    def _body(self) -> bytes:
        from azure.core.exceptions import ResourceNotFoundError
        if self._key not in self._data:
            raise ResourceNotFoundError(f"{self._key[0]}/{self._key[1]}: no such blob")
        return self._data[self._key]

    def _etag(self) -> str:
        import hashlib
        meta = repr((sorted(self._metadata.get(self._key, {}).items()), self._writes.get(self._key, 0))).encode()
        return f'"0x{hashlib.sha256(self._body() + meta).hexdigest()[:16]}"'

    def get_blob_properties(self) -> Any:
        body = self._body()
        return SimpleNamespace(size=len(body), etag=self._etag(),
                               metadata=dict(self._metadata.get(self._key, {})))

    def download_blob(self, **_: Any) -> Any:
        body = self._body()
        return SimpleNamespace(readall=lambda: body, chunks=lambda: iter([body]), size=len(body),
                               properties=self.get_blob_properties())

    def upload_blob(self, body: Any, *, metadata: dict[str, str] | None = None, etag: str | None = None,
                    match_condition: Any = None, **_: Any) -> dict[str, Any]:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        exists = self._key in self._data
        if match_condition == MatchConditions.IfMissing and exists:
            raise ResourceExistsError(f"{self._key[1]} exists")
        if match_condition == MatchConditions.IfNotModified and (not exists or self._etag() != etag):
            raise ResourceModifiedError(f"{self._key[1]} changed")
        body = body.read() if hasattr(body, "read") else body   # a file, as the SDK takes one
        self._data[self._key] = body.encode() if isinstance(body, str) else bytes(body)
        self._metadata[self._key] = dict(metadata or {})
        self._writes[self._key] = self._writes.get(self._key, 0) + 1
        return {"etag": self._etag()}   # the SDK's BlobClient.upload_blob answers the new version's properties

    def append_block(self, body: Any, **_: Any) -> None:
        self._data[self._key] = self._data.get(self._key, b"") + (body.encode() if isinstance(body, str) else body)
        self._writes[self._key] = self._writes.get(self._key, 0) + 1


class FixedClock:
    """A clock the test moves: `now` is what the handlers see."""

    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


@dataclass
class MemoryDeps(Deps):
    """Deps over the fakes above; `arm` answers `arm_client` (a fake ARM management client) and there is no
    model endpoint unless a test hands in `chat_port`."""
    arm: Any = None

    def arm_client(self, subscription: str, **_: Any) -> Any:
        if self.arm is None:
            raise AssertionError("this test gave no ARM client")
        return self.arm

    def openai_client(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unit tests reach models through chat_port")

    def hub_client(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unit tests reach the hub through hub_port")


def settings_for_tests(**changes: Any) -> Settings:
    """Local-transport settings with a hub; `changes` are Settings fields."""
    hub = HubSettings(endpoint="https://hub", tenant="tenant-contoso", resource_id=(
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/hub"))
    base: dict[str, Any] = {"storage_connection": "UseDevelopmentStorage=true", "blob_service_uri": None,
                            "queue_service_uri": None, "table_service_uri": None, "transport": "local",
                            "servicebus_namespace": None, "hub": hub}
    return Settings(**{**base, **changes})


def make_deps(settings: Settings | None = None, *, registry: Any = None, publisher: Any = None, blobs: Any = None,
              hub: Any = None, chat: Any = None, clock: Any = None, arm: Any = None,
              topology: Any = None, spokes: Any = None) -> MemoryDeps:
    """Deps for a unit test: in-memory registry, publisher and blobs unless given; the topology parsed from
    the settings' SPOKES_CONFIG as the bootstrap does (or `topology`); `hub` (a fake Hub) answers every
    `deps.hub()`; `spokes` (a fake of shared.azure.spokes.Spokes) is `deps.spokes`."""
    from shared.app.bootstrap import SYSTEM_CLOCK
    from shared.run.topology import load_topology
    settings = settings or settings_for_tests()
    deps = MemoryDeps(settings=settings, blobs=blobs if blobs is not None else MemoryBlobs(),
                      registry=registry if registry is not None else MemoryRegistry(),
                      publisher=publisher if publisher is not None else MemoryPublisher(),
                      credential=_no_credential,
                      topology=topology or (load_topology(settings) if settings.spokes_config else None),
                      clock=clock or SYSTEM_CLOCK,
                      hub_port=(lambda *, max_retries=6: hub) if hub is not None else None,
                      chat_port=chat, arm=arm)
    if spokes is not None:
        deps.spokes = spokes   # the spokes port (a cached property of Deps): the test's fake instead
    return deps


def _no_credential(*_: Any, **__: Any) -> Any:
    raise AssertionError("unit tests use no credential")


class ScriptedChat:
    """The chat port answering with the test's functions: `reply` for candidates, `judge` for score_model."""

    def __init__(self, reply: Any, judge: Any = None) -> None:
        self.reply, self.judge = reply, judge

    def reply_fn(self, base_model: str) -> Any:
        return self.reply

    def judge_fn(self) -> Any:
        if self.judge is None:
            raise AssertionError("this test gave no judge")
        return self.judge


def with_chat(deps: Deps, reply: Any, judge: Any = None) -> Deps:
    """The same deps (same registry, blobs, publisher) whose models answer through `reply` and `judge`."""
    return dataclasses.replace(deps, chat_port=ScriptedChat(reply, judge))
