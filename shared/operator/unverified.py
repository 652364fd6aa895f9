"""Requests whose caller cannot be verified (no token, a forged, expired or misdirected one) are counted, not
recorded one by one: anyone on the internet can send them, so they must not grow the audit table or raise
events. Each is counted on a metric (`ftops.operator.unverified_requests`, by action) and, per window, one
aggregated audit record (`api.unverified_requests` under the operator partition) says how many came, for
which actions and why they were refused. The record of a window is written by the first request (any
request) after it ends, by each instance for its own count. Refusals of a *verified* caller are audited one
by one as before (shared.operator.api).
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)
WINDOW = timedelta(minutes=5)
MAX_KEYS = 50          # distinct (action, reason) pairs kept per window; the rest are counted as "other"
REASON_CHARS = 80
ACTION = "api.unverified_requests"
ACTOR = "ftops.operator-api"
METRIC = "ftops.operator.unverified_requests"


def _meter_counter() -> Any:
    from opentelemetry import metrics  # exported to Application Insights when telemetry is configured
    return metrics.get_meter("ftops.operator").create_counter(
        METRIC, unit="{request}", description="operator API requests whose caller could not be verified")


class UnverifiedTraffic:
    """The count of one process, its records under `partition`; `counter`: an OpenTelemetry counter (tests
    hand in their own meter's)."""

    def __init__(self, partition: str, *, window: timedelta = WINDOW, counter: Any = None) -> None:
        self.partition, self.window = partition, window
        self._counter = counter
        self._lock = threading.Lock()
        self._start: datetime | None = None
        self._counts: Counter[tuple[str, str]] = Counter()

    def count(self, deps: Deps, action: str, reason: str) -> None:
        """One request refused before anyone was verified."""
        self.tick(deps)
        key = (action[:40], " ".join(reason.split())[:REASON_CHARS])
        with self._lock:
            if key not in self._counts and len(self._counts) >= MAX_KEYS:
                key = (key[0], "other")
            self._counts[key] += 1
        (self._counter or self._default_counter()).add(1, {"action": key[0]})

    def tick(self, deps: Deps) -> None:
        """Close the window if it has ended: its one aggregated record is written now."""
        now = deps.clock.now()
        start = datetime.fromtimestamp(now.timestamp() // self.window.total_seconds() * self.window.total_seconds(),
                                       tz=now.tzinfo)
        with self._lock:
            if self._start == start:
                return
            ended, counts = self._start, dict(self._counts)
            self._start, self._counts = start, Counter()
        if ended is not None and counts:
            self._write(deps, ended, counts)

    def _write(self, deps: Deps, start: datetime, counts: dict[tuple[str, str], int]) -> None:
        detail = {"window_start": start.isoformat(), "window_end": (start + self.window).isoformat(),
                  "requests": sum(counts.values()),
                  "by": [{"action": a, "reason": r, "count": n} for (a, r), n in sorted(counts.items())]}
        try:
            deps.registry.audit(self.partition, ACTION, actor=ACTOR, detail=detail)
        except Exception:
            log.exception("could not write the count of unverified operator API requests (%s)", detail["requests"])

    def _default_counter(self) -> Any:
        if self._counter is None:
            self._counter = _meter_counter()
        return self._counter
