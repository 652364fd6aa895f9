"""Crash points: the app's real dependencies (Azurite, the emulator), with every external effect — a
registry write, a blob write or delete, a hub call that changes something, an ARM deployment PUT or DELETE
(through the `arm_deployments` port, for the spokes and the hub's evaluation deployments alike), a message send —
counted, and one of them failing: before it takes effect, or after it did (the caller never hears so).

The failure is `Crash`, a BaseException: the handlers' `except Exception` (which turns a spoke's error into
a rolled-back environment, say) does not swallow it, as it would not swallow the process dying there.
"""
from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Any

from shared.app.bootstrap import Deps
from shared.azure.arm_deployments import ArmDeployments

REGISTRY_WRITES = frozenset({"create_run", "save_run", "transition", "track_job", "untrack_job", "save_deployment",
                             "update_deployment", "audit", "write_audit", "next_attempt", "claim", "complete", "release", "mark_outbox",
                             "clear_outbox", "hold_event", "unmark_outbox"})
BLOB_WRITES = frozenset({"upload_blob", "delete_blob", "create_append_blob", "append_block", "start_copy_from_url"})
HUB_WRITES = frozenset({"create", "delete", "cancel", "pause", "resume", "complete"})   # files, uploads, jobs
ARM_WRITES = frozenset({"put", "delete", "delete_all"})                # shared.azure.arm_deployments.ArmDeployments
SENDS = frozenset({"send"})


class Crash(BaseException):
    """The process died at an effect (raised before or after the effect happened)."""


class Effects:
    """Counts effects; fails the one numbered `fail_at` (0-based), `when` before or after it takes effect."""

    def __init__(self, fail_at: int | None = None, when: str = "before") -> None:
        self.fail_at, self.when = fail_at, when
        self.seen: list[str] = []
        self.fired: str | None = None
        self._lock = threading.Lock()

    def call(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            n = len(self.seen)
            self.seen.append(name)
        hit = n == self.fail_at
        if hit and self.when == "before":
            self.fired = f"before {name}"
            raise Crash(self.fired)
        try:
            result = fn(*args, **kwargs)
        except Exception:
            if hit:   # the effect failed by itself (e.g. appending to a blob not created yet): nothing to add
                self.fired = f"{name} (failed on its own)"
            raise
        if hit:
            self.fired = f"after {name}"
            raise Crash(self.fired)
        return result


class Watched:
    """Any client: the methods named in `writes` go through `effects`; what it hands out (sub-clients,
    resource groups like `client.fine_tuning.jobs`) is watched as well."""

    def __init__(self, inner: Any, effects: Effects, writes: frozenset[str], label: str) -> None:
        self._inner, self._effects, self._writes, self._label = inner, effects, writes, label

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if callable(value) and name in self._writes:
            return lambda *a, **k: self._effects.call(f"{self._label}.{name}", value, *a, **k)
        if callable(value) and (name.startswith("get_") and name.endswith("_client") or name == "with_options"):
            return lambda *a, **k: Watched(value(*a, **k), self._effects, self._writes, self._label)
        if not callable(value) and hasattr(value, "__dict__") and not isinstance(value, (str, bytes, int, float)):
            return Watched(value, self._effects, self._writes, f"{self._label}.{name}")
        return value


@dataclasses.dataclass
class FaultyDeps(Deps):
    """Deps whose registry, blobs, publisher, hub client and ARM deployments report to `effects`."""
    effects: Effects = dataclasses.field(default_factory=Effects)

    def hub_client(self, *, max_retries: int = 6) -> Any:
        return Watched(super().hub_client(max_retries=max_retries), self.effects, HUB_WRITES, "hub")

    @functools.cached_property
    def arm_deployments(self) -> Any:   # `spokes` is built on this one, so spoke deployments are watched too
        return Watched(ArmDeployments(self.arm_client), self.effects, ARM_WRITES, "arm")


def faulty(deps: Deps, effects: Effects) -> FaultyDeps:
    fields = {f.name: getattr(deps, f.name) for f in dataclasses.fields(Deps) if not f.name.startswith("_")}
    out = FaultyDeps(**fields, effects=effects)
    out.registry = Watched(deps.registry, effects, REGISTRY_WRITES, "registry")
    out.blobs = Watched(deps.blobs, effects, BLOB_WRITES, "blob")
    out.publisher = Watched(deps.publisher, effects, SENDS, "bus")
    return out


class Sent:
    """The real publisher, remembering what it really sent (a send that raised did not happen)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.log: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def send(self, queue: str, event: Any, *, delay_seconds: float = 0) -> None:
        self.inner.send(queue, event, delay_seconds=delay_seconds)
        with self._lock:
            self.log.append((queue, event))

    def about(self, run_id: str, queue: str | None = None) -> list[Any]:
        return [e for q, e in self.log if e.subject == run_id and (queue is None or q == queue)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
