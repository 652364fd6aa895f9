"""Plain data the emulator keeps: topology, simulated clock, faults, and the records it serves.

Nothing here knows about HTTP; the route modules translate requests into these records and back.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class ApiError(Exception):
    """An error answered in Azure's `{"error": {...}}` shape (data plane and ARM share it)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


@dataclass
class Account:
    name: str
    subscription: str
    resource_group: str
    region: str
    tenant: str
    role: str = "spoke"
    # Learn quotas-limits (2026-02-17): 10 fine-tuned deployments; 3 training jobs running at once (Standard and
    # Global training; 5 on Developer training, set max_running_jobs=5 for such a hub)
    max_finetuned_deployments: int = 10
    max_running_jobs: int = 3
    contributors: list[str] | None = None  # principals with a role on it (RBAC); None: anyone of its tenant

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.CognitiveServices/accounts/{self.name}"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Account:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        missing = {"name", "subscription", "resource_group", "region", "tenant"} - known.keys()
        if missing:
            raise ValueError(f"account {data.get('name')!r} lacks {sorted(missing)}")
        if known.get("role", "spoke") not in ("hub", "spoke"):
            raise ValueError(f"account {data['name']!r}: role must be hub or spoke")
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Topology:
    accounts: list[Account] = field(default_factory=list)

    @classmethod
    def coerce(cls, value: Topology | dict[str, Any] | str | Path) -> Topology:
        if isinstance(value, Topology):
            return value
        if isinstance(value, (str, Path)):
            value = json.loads(Path(value).read_text(encoding="utf-8"))
        return cls(accounts=[Account.from_dict(a) for a in value.get("accounts", [])])

    def to_dict(self) -> dict[str, Any]:
        return {"accounts": [a.to_dict() for a in self.accounts]}


@dataclass
class Durations:
    """Simulated seconds each phase takes; defaults finish a small job in ~5 real s at time_scale 1."""

    file_processing: float = 0.5
    validation: float = 1.0
    queue: float = 0.5
    training: float = 3.0
    deployment: float = 0.5
    deletion: float = 0.3
    max_queued_jobs: int = 20
    max_jobs: int = 100   # training jobs per resource, in any state (Learn quotas-limits)
    # model name (`gpt-4.1-mini`) → {"fineTune": iso, "inference": iso}: over the Models API's built-in dates
    model_deprecations: dict[str, dict[str, str]] = field(default_factory=dict)
    pausing: float = 0.0  # pause: `pausing` this long, then `paused` (0: at once, as before)
    resuming: float = 0.0  # resume: `resuming` this long, then `running`
    # ARM says Succeeded, yet the data plane answers 404 DeploymentNotFound ("If you created the deployment within
    # the last 5 minutes, please wait a moment and try again") this long: real answers, docs/azure-sources.md
    not_ready_seconds: float = 0.3
    warmup_seconds: float = 0.0  # then chat answers 429 this long (0: not at all)
    results: float = 0.5  # after "Job succeeded.": postprocessing until the results file is there
    # region → tokens-per-minute quota (thousands = capacity units) per subscription, model and sku;
    # a region not listed is unlimited
    tpm_quota: dict[str, int] = field(default_factory=dict)
    # real seconds between a failed webhook delivery and its next attempt (Standard Webhooks: retry with backoff)
    webhook_retry_seconds: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])


@dataclass
class Faults:
    rate_429: float = 0.0
    rate_500: float = 0.0
    next_429: int = 0  # deterministic: the next N faultable calls get 429
    next_500: int = 0
    latency_ms: float = 0.0
    retry_after_ms: int = 200  # what 429s advertise; Azure sends retry-after and retry-after-ms
    scope: str = "all"  # "all" | "data" | "arm": which surface the rate faults hit
    fail_next_jobs: int = 0
    job_failure: str = "generic"  # "generic" | "safety" (model evaluation) | "safety_data" | or job_error
    job_error: dict[str, str] | None = None
    fail_deployments_on: list[str] = field(default_factory=list)
    accounts: list[str] | None = None  # the request faults above hit only these accounts (None/[]: all)
    fail_next_deployments: dict[str, int] = field(default_factory=dict)  # account → next N PUTs end Failed
    status_override: dict[str, str] = field(default_factory=dict)  # job id (or "next") → status on the wire
    overfit_next_jobs: int = 0  # the next N jobs over-fit: the checkpoint one epoch before the end wins
    webhook_drop_rate: float = 0.0  # this share of webhook deliveries is lost outright (never attempted)
    drop_next_webhooks: int = 0     # deterministic: the next N deliveries are lost

    def update(self, data: dict[str, Any]) -> None:
        for key, value in data.items():
            if key not in self.__dataclass_fields__:
                raise ApiError(400, "UnknownFault", f"unknown fault {key!r}")
            if key in ("fail_next_deployments", "status_override"):
                if not isinstance(value, dict | None):
                    raise ApiError(400, "InvalidFault", f"{key} must be an object")
                value = dict(value or {})
            if key == "accounts" and not isinstance(value, list | None):
                raise ApiError(400, "InvalidFault", "accounts must be a list of account names")
            setattr(self, key, value)


class Clock:
    """Emulator time: real elapsed time × time_scale, plus whatever /_emulator/advance added."""

    def __init__(self, time_scale: float = 1.0) -> None:
        self.time_scale = time_scale
        self._wall0 = time.time()
        self._mono0 = time.monotonic()
        self.offset = 0.0

    def now(self) -> float:
        return self._wall0 + (time.monotonic() - self._mono0) * self.time_scale + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ApiError(400, "InvalidArgument", "cannot advance the clock backwards")
        self.offset += seconds


@dataclass
class FileRecord:
    id: str
    account: str
    filename: str
    purpose: str
    content: bytes
    created_at: float
    ready_at: float
    error: str | None = None  # set when the content is not valid JSONL
    expires_at: float | None = None  # `expires_after` (v1): gone from then on

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def status(self, now: float) -> str:
        if now < self.ready_at:
            return "pending"
        return "error" if self.error else "processed"

    def to_json(self, now: float) -> dict[str, Any]:
        status = self.status(now)
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": status,
            "status_details": self.error if status == "error" else None,
            "expires_at": int(self.expires_at) if self.expires_at is not None else None,
        }


@dataclass
class UploadRecord:
    id: str
    account: str
    filename: str
    purpose: str
    mime_type: str
    bytes: int
    created_at: float
    status: str = "pending"
    parts: dict[str, bytes] = field(default_factory=dict)
    file_id: str | None = None


@dataclass
class DeploymentRecord:
    account: str
    name: str
    sku: dict[str, Any]
    properties: dict[str, Any]  # as PUT, minus provisioningState
    tags: dict[str, str] | None
    state: str  # Creating | Accepted | Succeeded | Failed | Deleting
    ready_at: float
    fail: bool = False
    finetuned: bool = False
    delete_at: float | None = None
    last_used_at: float | None = None
    serving_at: float = 0.0  # a new deployment answers 404 DeploymentNotFound before this, ARM Succeeded or not
    warm_at: float = 0.0  # chat completions answer 429 before this (warmup_seconds after serving_at)
    expires_at: float | None = None  # DeveloperTier: deleted 24 h after creation, whatever its use

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.properties.get("model") or {})


@dataclass
class Operation:
    """An ARM async operation (Azure-AsyncOperation / Location target)."""

    id: str
    account: str
    deployment: str
    kind: str  # "put" | "delete"
    created_at: float


class RequestLog:
    """The last `size` non-control requests, plus how many were in flight at once (overall and per account)."""

    def __init__(self, size: int) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)
        self.in_flight = 0
        self.max_in_flight = 0
        self.by_account: dict[str, int] = {}
        self.max_by_account: dict[str, int] = {}
        self._open: set[int] = set()  # entries started here and not finished (a reset forgets the old ones)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self.entries))

    def started(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        self._open.add(id(entry))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        account = entry.get("account")
        if account:
            self.by_account[account] = self.by_account.get(account, 0) + 1
            self.max_by_account[account] = max(self.max_by_account.get(account, 0), self.by_account[account])

    def finished(self, entry: dict[str, Any]) -> None:
        if id(entry) not in self._open:
            return
        self._open.discard(id(entry))
        self.in_flight -= 1
        account = entry.get("account")
        if account:
            self.by_account[account] -= 1

    def clear(self) -> None:
        """Forget the entries; the maxima restart from what is in flight now."""
        self.entries.clear()
        self.max_in_flight = self.in_flight
        self.max_by_account = {a: n for a, n in self.by_account.items() if n}

    def stats(self) -> dict[str, Any]:
        return {"in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
                "max_in_flight_by_account": dict(self.max_by_account)}
