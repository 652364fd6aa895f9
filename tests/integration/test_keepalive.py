"""Keep-alive of hundreds of deployments against the emulator: every one gets a real chat completion, and
never more calls in flight than KEEPALIVE_CONCURRENCY."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from benchmarks.keepalive import build, fleet, populate
from shared.stages.keepalive import keepalive_tick

pytestmark = pytest.mark.integration


@pytest.fixture
def accounts(emulator: Any) -> Iterator[list[dict[str, str]]]:
    spread = [{**a, "name": a["name"].replace("bench", "ka")} for a in fleet(40)]
    for account in spread:
        emulator.control.add_account(**account)
    yield spread
    emulator.control.faults(latency_ms=0)
    names = {a["name"] for a in spread}
    ours = [d for d in emulator.control.state()["deployments"] if d["account"] in names]
    with ThreadPoolExecutor(8) as pool:   # 200 control calls, one at a time, took ~9 s
        list(pool.map(lambda d: emulator.control.vanish(d["account"], d["deployment"]), ours))


class CountingSpokes:
    """The real spokes port, counting the pings in flight."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.in_flight, self.peak, self._lock = inner, 0, 0, threading.Lock()

    def ping(self, target: Any, name: str, **kwargs: Any) -> str:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            return self.inner.ping(target, name, **kwargs)
        finally:
            with self._lock:
                self.in_flight -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_hundreds_pinged_within_the_concurrency_bound(emulator: Any, accounts: list[dict[str, str]]) -> None:
    deps = build(emulator, accounts, concurrency=8)
    assert populate(deps, per_spoke=5) == 200
    deps.spokes = counting = CountingSpokes(deps.spokes)
    emulator.control.faults(latency_ms=20)
    emulator.control.clear_requests()
    summary = keepalive_tick(deps)
    assert (summary.total, summary.ok, summary.failed) == (200, 200, 0)
    assert 1 < counting.peak <= 8
    seen = emulator.control.request_stats()                # the same bound, as the spokes saw it
    assert 1 < seen["max_in_flight"] <= 8 and seen["in_flight"] == 0
    chats = [r for r in emulator.control.requests() if r["path"].endswith("/chat/completions")]
    assert len(chats) == 200 and {r["status"] for r in chats} == {200}
    names = {a["name"] for a in accounts}
    pinged = [d for d in emulator.control.state()["deployments"] if d["account"] in names]
    assert len(pinged) == 200 and all(d["last_used_at"] for d in pinged)
    assert all(s.last_ping_ok and s.last_ping for s in deps.registry.list_deployments())
