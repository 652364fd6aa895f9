"""The claim helper (work under an idempotency key) and the conditional-update helper (ETag retries),
against the in-memory registry's keys."""
from __future__ import annotations

from typing import Any

import pytest
from fakes import InMemoryClaims

from shared.store import claims
from shared.store.claims import ConcurrencyError


class Keys(InMemoryClaims):
    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.completions = 0

    def complete(self, key: str, result: Any, *, token: str | None = None) -> None:
        self.completions += 1
        super().complete(key, result, token=token)


class Died(BaseException):
    """The worker stopped in the middle (not an Exception: no handler of ours swallows it)."""


def deliver(store: Keys, key: str, work: Any) -> claims.Claim:
    """One delivery of a message whose work is idempotent on `key`: runs `work` only if it owns the key."""
    with claims.hold(store, key, ttl_seconds=60) as claim:
        if claim.owned:
            claim.complete(work())
    return claim


def raise_(failure: BaseException) -> Any:
    raise failure


# --- hold ----------------------------------------------------------------------------------------------
def test_a_second_delivery_finds_the_work_done_with_its_result() -> None:
    store, done = Keys(), []
    first = deliver(store, "deploy-1", lambda: done.append(1) or {"state": "deployed:dev"})
    again = deliver(store, "deploy-1", lambda: done.append(2) or {"state": "other"})
    assert first.owned and again.completed
    assert again.result == {"state": "deployed:dev"} and done == [1]


def test_work_that_fails_frees_the_key_for_the_retry() -> None:
    store = Keys()
    for failure in (RuntimeError("hub 503"), Died()):
        with pytest.raises(type(failure)):
            deliver(store, "train-1", lambda f=failure: raise_(f))
        assert "train-1" not in store.keys
    assert deliver(store, "train-1", lambda: {"job_id": "ftjob-1"}).owned
    assert store.keys["train-1"] == "COMPLETED"


def test_a_key_another_worker_holds_is_neither_worked_on_nor_released() -> None:
    store = Keys()
    store.keys["evaluate-1"] = "IN_PROGRESS"
    with pytest.raises(RuntimeError), claims.hold(store, "evaluate-1", ttl_seconds=60) as claim:
        assert claim.in_progress and not claim.owned
        claim.release()                      # not ours: nothing happens
        raise RuntimeError("sending the retry failed")
    assert store.keys["evaluate-1"] == "IN_PROGRESS"


def test_released_on_purpose_the_key_is_free_for_the_next_delivery() -> None:
    store = Keys()
    with claims.hold(store, "evaluate-2", ttl_seconds=60) as claim:
        claim.release()                      # e.g. waiting for quota: the delayed re-send must find it free
    assert deliver(store, "evaluate-2", lambda: {"state": "evaluated"}).owned


def test_a_completion_cut_short_is_left_to_expire_not_released() -> None:
    class Dying(Keys):
        def complete(self, key: str, result: Any, *, token: str | None = None) -> None:
            raise Died()

    store = Dying()
    with pytest.raises(Died):
        deliver(store, "deploy-2", lambda: {"state": "deployed:dev"})
    assert store.keys["deploy-2"] == "IN_PROGRESS"   # the next delivery waits for it, or takes it over once stale


def test_a_failure_after_the_completion_keeps_the_key_completed() -> None:
    store = Keys()
    with pytest.raises(RuntimeError), claims.hold(store, "train-2", ttl_seconds=60) as claim:
        claim.complete({"job_id": "ftjob-2"})
        raise RuntimeError("tidying the hub failed")
    assert store.keys["train-2"] == "COMPLETED"


def test_a_worker_that_adopts_finished_work_marks_the_key_done() -> None:
    store = Keys()
    store.keys["train-3"] = "IN_PROGRESS"
    with claims.hold(store, "train-3", ttl_seconds=60) as claim:
        claim.complete({"job_id": "ftjob-3"})
    assert store.keys["train-3"] == "COMPLETED" and store.completions == 1


def test_work_that_ends_without_settling_its_claim_is_an_error_and_frees_the_key() -> None:
    store = Keys()
    with pytest.raises(RuntimeError, match="without completing or releasing"), \
            claims.hold(store, "deploy-3", ttl_seconds=60):
        pass
    assert "deploy-3" not in store.keys


# --- conditional_update --------------------------------------------------------------------------------
class Versioned:
    """One record with an ETag; `rivals` writes by someone else land between our read and our write."""

    def __init__(self, rivals: int = 0) -> None:
        self.value, self.etag, self.rivals = {"n": 0, "tags": []}, 0, rivals
        self.reads = self.writes = 0

    def read(self) -> dict[str, Any]:
        self.reads += 1
        seen = {**self.value, "tags": list(self.value["tags"]), "etag": self.etag}
        if self.rivals:
            self.rivals -= 1
            self.value = {**self.value, "n": self.value["n"] + 100}
            self.etag += 1
        return seen

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        self.writes += 1
        if record["etag"] != self.etag:
            raise ConcurrencyError("changed since it was read")
        self.etag += 1
        self.value = {k: v for k, v in record.items() if k != "etag"}
        return record


def add_one(record: dict[str, Any]) -> dict[str, Any]:
    record["n"] += 1
    return record


def test_a_lost_race_is_replayed_on_a_fresh_read_so_no_write_is_lost() -> None:
    store = Versioned(rivals=2)
    saved = claims.conditional_update(store.read, add_one, store.write, gives_up="too many")
    assert store.value["n"] == 201 == saved["n"]      # both rivals' writes kept, ours on top
    assert store.writes == 3


def test_it_gives_up_after_the_attempts_with_a_transient_error() -> None:
    store = Versioned(rivals=10)
    with pytest.raises(ConcurrencyError, match="run r1: too many concurrent updates"):
        claims.conditional_update(store.read, add_one, store.write, attempts=3,
                                  gives_up="run r1: too many concurrent updates")
    assert store.writes == 3 and store.value["n"] == 300


def test_nothing_to_change_writes_nothing_and_returns_what_was_read() -> None:
    store = Versioned()
    current = claims.conditional_update(store.read, lambda r: None, store.write, gives_up="too many")
    assert current["n"] == 0 and store.writes == 0


def test_a_refusal_is_not_retried() -> None:
    store = Versioned(rivals=1)

    def refuse(record: dict[str, Any]) -> dict[str, Any]:
        raise LookupError("the run left the state this update is for")

    with pytest.raises(LookupError):
        claims.conditional_update(store.read, refuse, store.write, gives_up="too many")
    assert store.reads == 1 and store.writes == 0


def test_a_record_read_earlier_is_written_first_and_reread_only_after_a_conflict() -> None:
    store = Versioned()
    held = store.read()
    assert claims.conditional_update(store.read, add_one, store.write, first=held, gives_up="x")["n"] == 1
    assert store.reads == 1                            # no second read when the first write wins
    stale = {**held}                                   # the same record, now outdated by our own write
    assert claims.conditional_update(store.read, add_one, store.write, first=stale, gives_up="x")["n"] == 2
    assert store.reads == 2 and store.writes == 3
