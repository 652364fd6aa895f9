"""The two ways this app stays right when the same work, or the same record, is touched twice at once.

`hold`: work under an idempotency claim (the shape of AWS Powertools' idempotency utility). A conditional
insert marks the key IN_PROGRESS for a short lease (LEASE_SECONDS) that a thread renews while the work
runs; the work then completes the claim with its result, or releases it so a retry may claim it again; a
failure in the work releases it. A worker killed outright (SIGKILL, out of memory) stops renewing: its
lease lapses within a minute and the next delivery takes the key over at once (`taken_over`: it cleans up
what the dead worker left). Every write of a claim is fenced by the ETag the holder last wrote: a worker
whose lease was taken over can neither renew, complete nor release the new holder's claim.

`conditional_update`: read → change → write under the read's ETag, again on a fresh read when someone
else wrote in between, a bounded number of times; then ConcurrencyError, which is transient: the caller's
runtime retries the whole step.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

CLAIMED, COMPLETED, IN_PROGRESS = "claimed", "completed", "in_progress"
LEASE_SECONDS = 60.0   # a claim lives this long unless its holder renews it (every third of it, while it works)
_UNREAD: Any = object()
log = logging.getLogger(__name__)


class ConcurrencyError(RuntimeError):
    """Someone else changed the entity since we read it (ETag mismatch). Transient: re-read and retry."""


@dataclass(frozen=True)
class KeyState:
    """What claiming a key found: `status` (claimed | completed | in_progress), the completed work's
    `result`, the claim's fencing `token` (its ETag; only with it may the holder renew, complete or release)
    and whether the key was `taken_over` from a worker whose lease had lapsed."""
    status: str
    result: dict[str, Any] | None = None
    token: str | None = None
    taken_over: bool = False


class KeyStore(Protocol):
    """The registry's idempotency keys."""

    def claim(self, key: str, *, ttl_seconds: float = ...) -> KeyState: ...
    def renew(self, key: str, token: str, *, ttl_seconds: float) -> str: ...
    def complete(self, key: str, result: dict[str, Any], *, token: str | None = None) -> None: ...
    def release(self, key: str, *, token: str | None = None) -> None: ...


@dataclass
class Claim:
    """One key as `hold` found it: `owned` (we claimed it: ours to complete or release), `completed` (done
    before; `result` is what that worker recorded) or `in_progress` (another worker holds a live lease).
    `taken_over`: ours, from a worker that died holding it. `lost`: a renewal found the lease taken over
    (this worker stalled past it): completing then fails, releasing does nothing."""
    key: str
    status: str
    result: dict[str, Any] | None
    _store: KeyStore = field(repr=False)
    settled: bool = False
    token: str | None = None
    taken_over: bool = False
    lost: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def owned(self) -> bool:
        return self.status == CLAIMED

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def in_progress(self) -> bool:
        return self.status == IN_PROGRESS

    def complete(self, result: dict[str, Any]) -> None:
        """Mark the key done with `result` (what a later delivery finds). Ours: only while we still hold it
        (fenced by its ETag; ConcurrencyError if another worker took it over). Not ours (a worker that adopts
        another's finished work): written whoever holds the key."""
        with self._lock:
            # settled before the write: a completion that failed half-way is left to expire, never released
            self.settled = True
            self._store.complete(self.key, result, token=self.token if self.owned else None)

    def release(self) -> None:
        """Free the key (if it is ours, and still ours) so a retry may claim it again: the work is not done."""
        with self._lock:
            if not self.owned or self.settled:
                return
            self.settled = True
            if not self.lost:
                self._store.release(self.key, token=self.token)

    def renew(self, ttl_seconds: float) -> bool:
        """Extend the lease; False (and `lost`) once another worker holds the key."""
        with self._lock:
            if self.settled or self.lost or self.token is None:
                return False
            try:
                self.token = self._store.renew(self.key, self.token, ttl_seconds=ttl_seconds)
                return True
            except ConcurrencyError:
                self.lost = True
                log.warning("claim %s: the lease was taken over by another worker", self.key)
                return False


@contextmanager
def hold(store: KeyStore, key: str, *, ttl_seconds: float = LEASE_SECONDS) -> Iterator[Claim]:
    """Try to claim `key` for a lease of `ttl_seconds` and hand over the Claim, whatever its status: the
    caller decides what to do when the key is completed or in progress. While the block runs, a thread
    renews an owned lease every third of it. Any exception out of the block (BaseException too: a worker
    being stopped frees the key at once) releases an owned claim that was neither completed nor released;
    a block that ends normally must settle an owned claim."""
    state = store.claim(key, ttl_seconds=ttl_seconds)
    claim = Claim(key, state.status, state.result, store, token=state.token, taken_over=state.taken_over)
    stop = threading.Event()
    renewer = None
    if claim.owned:
        def keep_alive() -> None:
            while not stop.wait(max(ttl_seconds / 3, 0.05)):
                try:
                    if not claim.renew(ttl_seconds):
                        return
                except Exception:   # a transient storage error: the next renewal tries again
                    log.warning("claim %s: renewing the lease failed; trying again", key, exc_info=True)
        renewer = threading.Thread(target=keep_alive, name=f"lease-{key[:24]}", daemon=True)
        renewer.start()
    try:
        yield claim
    except BaseException:
        stop.set()
        claim.release()
        raise
    finally:
        stop.set()
        if renewer is not None:
            renewer.join()
    if claim.owned and not claim.settled:
        claim.release()
        raise RuntimeError(f"claim {key}: the work ended without completing or releasing it")


def conditional_update[T, U, W](read: Callable[[], T], change: Callable[[T], U | None],
                                write: Callable[[U], W], *, gives_up: str, attempts: int = 5,
                                first: Any = _UNREAD) -> W | T:
    """`write(change(read()))`, where `write` is conditional on what was read (its ETag) and raises
    ConcurrencyError when someone wrote in between: then read again, at most `attempts` times in all.

    `change` applies the update to what was read and returns what to write; it raises to refuse (the
    record left the state this update is for), or returns None when there is nothing to write: then what
    was read is returned as it is. `first`: a record the caller read already, used instead of the first
    read. `gives_up`: the message of the ConcurrencyError raised when every attempt lost the race.
    """
    # `first` is a T, but typed Any: mypy would infer T from it alone (before the callables) and make T the
    # record where `read` may return None.
    current: T = first
    for attempt in range(attempts):
        if attempt or current is _UNREAD:
            current = read()
        changed = change(current)
        if changed is None:
            return current
        try:
            return write(changed)
        except ConcurrencyError:
            continue
    raise ConcurrencyError(gives_up)
