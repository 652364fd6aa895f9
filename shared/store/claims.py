"""The two ways this app stays right when the same work, or the same record, is touched twice at once.

`hold`: work under an idempotency claim (the shape of AWS Powertools' idempotency utility). A conditional
insert marks the key IN_PROGRESS; the work then completes the claim with its result, or releases it so a
retry may claim it again; a failure in the work releases it; a claim a dead worker left expires.

`conditional_update`: read → change → write under the read's ETag, again on a fresh read when someone
else wrote in between, a bounded number of times; then ConcurrencyError, which is transient: the caller's
runtime retries the whole step.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

CLAIMED, COMPLETED, IN_PROGRESS = "claimed", "completed", "in_progress"
_UNREAD: Any = object()


class ConcurrencyError(RuntimeError):
    """Someone else changed the entity since we read it (ETag mismatch). Transient: re-read and retry."""


class KeyStore(Protocol):
    """The registry's idempotency keys."""

    def claim(self, key: str, *, ttl_seconds: float = ...) -> tuple[str, dict[str, Any] | None]: ...
    def complete(self, key: str, result: dict[str, Any]) -> None: ...
    def release(self, key: str) -> None: ...


@dataclass
class Claim:
    """One key as `hold` found it: `owned` (we claimed it: ours to complete or release), `completed` (done
    before; `result` is what that worker recorded) or `in_progress` (another worker holds a fresh claim)."""
    key: str
    status: str
    result: dict[str, Any] | None
    _store: KeyStore = field(repr=False)
    settled: bool = False

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
        """Mark the key done with `result` (what a later delivery finds). Written whoever holds the key:
        a worker that adopts another's finished work marks it done too."""
        # settled before the write: a completion that failed half-way is left to expire, never released
        self.settled = True
        self._store.complete(self.key, result)

    def release(self) -> None:
        """Free the key (if it is ours) so a retry may claim it again: the work is not done."""
        if not self.owned or self.settled:
            return
        self.settled = True
        self._store.release(self.key)


@contextmanager
def hold(store: KeyStore, key: str, *, ttl_seconds: float) -> Iterator[Claim]:
    """Try to claim `key` for `ttl_seconds` and hand over the Claim, whatever its status: the caller decides
    what to do when the key is completed or in progress. Any exception out of the block (BaseException too:
    a worker being stopped frees the key at once rather than after its TTL) releases an owned claim that was
    neither completed nor released; a block that ends normally must settle an owned claim."""
    status, result = store.claim(key, ttl_seconds=ttl_seconds)
    claim = Claim(key, status, result, store)
    try:
        yield claim
    except BaseException:
        claim.release()
        raise
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
