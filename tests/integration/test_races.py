"""Races, interleaved deterministically: one handler is stopped at a chosen external effect while another
runs to its end (or fails), then the first goes on. No sleeps: the interleaving is the effect's position.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared.azure.arm_deployments import DeploymentError
from shared.run import states
from shared.run.messages import DeployRequest, RunCommand
from shared.run.topology import load_topology
from shared.stages import keepalive
from shared.stages.deployment import handle_deploy
from shared.stages.rollback import retire
from tests.integration.faults import Effects, faulty
from tests.integration.test_deployment_emulator import DEV, add_run, served

pytestmark = pytest.mark.integration


class At(Effects):
    """Runs `meanwhile` once, just before (or just after) the first effect named `name` takes effect."""

    def __init__(self, name: str, meanwhile: Callable[[], Any], when: str = "before") -> None:
        super().__init__()
        self.name, self.meanwhile, self.when_ = name, meanwhile, when
        self.ran = False

    def call(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(name)
        hit = name == self.name and not self.ran
        if hit and self.when_ == "before":
            self.ran = True
            self.meanwhile()
        result = fn(*args, **kwargs)
        if hit and self.when_ == "after":
            self.ran = True
            self.meanwhile()
        return result


@pytest.fixture(scope="module")
def model(emulator: Any) -> str:
    from tests.integration.test_deployment_emulator import _train
    return _train(emulator, "race")


def _deployed(deps: Any, model: str, name: str) -> str:
    run_id = add_run(deps, model, name=name)
    handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
    return run_id


def _retire(deps: Any, run_id: str) -> None:
    retire(RunCommand(run_id=run_id, requested_by="operator", reason="done"), deps)


def test_a_retire_while_keepalive_recreates_a_vanished_deployment_waits_and_removes_it(
        make_deps: Callable[..., Any], emulator: Any, instant_deployments: None, model: str) -> None:
    """The tick has decided to heal (the slot was active) and is about to ask ARM; the retire comes now."""
    deps = make_deps()
    run_id = _deployed(deps, model, "race-heal")
    emulator.control.vanish(DEV[1], "race-heal")
    snapshot = deps.registry.get_deployment("dev", DEV[1], "race-heal")
    refused: list[Exception] = []

    def retire_now() -> None:
        try:
            _retire(deps, run_id)
        except DeploymentError as exc:   # told to come back: the operator API answers so, the CLI retries
            refused.append(exc)

    tick = At("arm.put", retire_now)
    keepalive._keep(faulty(deps, tick), load_topology(deps.settings), snapshot)
    assert tick.ran
    if refused:            # the retire's retry, once the heal is done
        _retire(deps, run_id)
    assert deps.registry.require_run(run_id).state == states.RETIRED
    assert served(emulator, "race-heal") == {}          # nothing re-created behind the retire's back
    assert {s.state for s in deps.registry.list_deployments(run_id=run_id)} == {"retired"}


def test_a_keepalive_tick_between_retires_delete_and_its_record_does_not_recreate(
        make_deps: Callable[..., Any], emulator: Any, instant_deployments: None, model: str) -> None:
    """The retire has deleted on ARM but not yet marked the slots; a tick working from an earlier read of
    them finds the deployment gone and would heal it."""
    deps = make_deps()
    run_id = _deployed(deps, model, "race-retire")
    topology = load_topology(deps.settings)
    snapshots = [s for s in deps.registry.list_deployments(run_id=run_id)]   # the tick's earlier read
    outcomes: list[str] = []

    def tick_now() -> None:
        outcomes.extend(keepalive._keep(deps, topology, s)[0] for s in snapshots)

    retiring = At("arm.delete", tick_now, when="after")
    _retire(faulty(deps, retiring), run_id)
    assert retiring.ran and "healed" not in outcomes, outcomes
    assert deps.registry.require_run(run_id).state == states.RETIRED
    assert served(emulator, "race-retire") == {}
    assert {s.state for s in deps.registry.list_deployments(run_id=run_id)} == {"retired"}


class _Sends(list):
    """A publisher remembering what it sent, that dies (Crash) at the send numbered `die_at` (from 0)."""

    def __init__(self, inner: Any, die_at: int | None = None) -> None:
        super().__init__()
        self.inner, self.die_at, self.calls = inner, die_at, 0

    def send(self, queue: str, event: Any, *, delay_seconds: float = 0) -> None:
        from tests.integration.faults import Crash
        self.calls += 1
        if self.calls - 1 == self.die_at:
            raise Crash("died before sending")
        self.inner.send(queue, event, delay_seconds=delay_seconds)
        self.append(event.type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_transition_finishing_meanwhile_does_not_drop_another_ones_outbox_marker(
        make_deps: Callable[..., Any]) -> None:
    """B marks its messages; A transitions, sends and clears in full; B writes its transition and dies before
    sending. The sweep must still find B's event (its marker is B's own)."""
    import dataclasses

    from shared.store import outbox
    from shared.store.events import advance
    from tests.integration.faults import Crash
    from tests.integration.test_training import make_run
    deps = make_deps()
    run_id = make_run(deps)                                       # accepted
    sends = _Sends(deps.publisher)
    deps = dataclasses.replace(deps, publisher=sends)
    dying = dataclasses.replace(deps, publisher=_Sends(sends, die_at=0))

    def a_finishes() -> None:
        advance(deps, run_id, states.UPLOADING, actor="a")

    b = At("registry.transition", a_finishes)
    with pytest.raises(Crash):
        advance(faulty(dying, b), run_id, states.TRAINING, actor="b")
    assert b.ran and deps.registry.require_run(run_id).state == states.TRAINING
    assert "ftops.run.training" not in sends                      # B died before sending it

    outbox.sweep(deps, grace_seconds=0)                           # the next poll tick

    assert "ftops.run.training" in sends
    assert deps.registry.require_run(run_id).outbox == [] and deps.registry.outbox_entries() == []
