"""Changing fields of a run without a state change, only while it is still in the states the step works in."""
from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from shared.store.claims import conditional_update
from shared.store.registry import RunRecord

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps


class Superseded(RuntimeError):
    """The run left the states this step works in (e.g. a cancel won the race): stop, do nothing more."""


def update_run(deps: Deps, run_id: str, allowed: Collection[str], *, attempts: int = 5, **updates: Any) -> RunRecord:
    """Change fields of a run without a state change, only while it is in `allowed` (conditional on ETag)."""
    def change(run: RunRecord) -> RunRecord:
        if run.state not in allowed:
            raise Superseded(f"run {run_id} is {run.state!r} now")
        for key, value in updates.items():
            setattr(run, key, value)
        return run

    return conditional_update(
        lambda: deps.registry.require_run(run_id), change, deps.registry.save_run, attempts=attempts,
        gives_up=f"run {run_id}: too many concurrent updates, will retry")
