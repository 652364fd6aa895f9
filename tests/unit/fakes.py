"""Pieces the unit tests' fake registries share."""
from __future__ import annotations

import threading
from typing import Any


class InMemoryClaims:
    """The registry's idempotency claims (IN_PROGRESS → COMPLETED, released on failure), kept in
    `self.keys` — which the using fake creates, and a test may set to pretend another worker holds a key;
    and the outbox's bookkeeping (the fakes' runs are in `self.runs`; markers are not kept)."""

    keys: dict[str, str]
    _claims_lock = threading.Lock()

    def claim(self, key: str, *, ttl_seconds: float = 0) -> tuple[str, Any]:
        with self._claims_lock:
            status = self.keys.get(key)
            if status == "COMPLETED":
                return "completed", dict(self._results().get(key) or {})
            if status == "IN_PROGRESS":
                return "in_progress", None
            self.keys[key] = "IN_PROGRESS"
            return "claimed", None

    def complete(self, key: str, result: Any) -> None:
        self.keys[key] = "COMPLETED"
        self._results()[key] = result

    def _results(self) -> dict[str, Any]:   # what completions recorded, as the registry's result_json
        return self.__dict__.setdefault("results", {})  # type: ignore[no-any-return]

    def release(self, key: str) -> None:
        self.keys.pop(key, None)

    def mark_outbox(self, run_id: str) -> None:
        pass

    def clear_outbox(self, run_id: str, sent: Any) -> None:
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
