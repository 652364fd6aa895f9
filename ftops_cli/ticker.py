"""A daemon thread that calls `tick()` every few seconds while a `with` block runs (the demo's watchers)."""
from __future__ import annotations

import logging
import threading
from typing import Self

log = logging.getLogger(__name__)


class Ticker:
    def __init__(self, every: float, name: str, *, join_seconds: float = 2.0) -> None:
        self.every, self._join_seconds = every, join_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self._join_seconds)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.tick()
            except Exception:   # a storage or process hiccup costs one tick, not the watcher
                log.debug("%s: this tick failed", self._thread.name, exc_info=True)
