"""Who did it, verified: the owner a run.json names is a claim until that person confirms it; four eyes
compares only verified object ids (starter, claimer, retrainer, owner); a command from the commands queue is
recorded as a claim; a request nobody could be verified for is counted, never written one by one.

The operator API runs over the in-memory fakes with a verifier that hands back a given caller (the token
checks themselves are tests/unit/test_access.py and the integration tests)."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fakes import FixedClock, MemoryDeps, make_deps, settings_for_tests

from local.settings import DEMO_SPOKES
from shared.azure.access import AccessDenied, Caller
from shared.operator import api
from shared.operator.unverified import UnverifiedTraffic
from shared.run import states
from shared.run.messages import RetrainCommand, RunCommand, envelope
from shared.stages.commands import handle_command
from shared.store.registry import RunRecord

MODEL = "gpt-4.1-mini-2025-04-14.ft-new"
APPROVER = "6f1c2d3e-0000-4000-8000-0000000000a1"     # listed for prod in local/spokes.demo.json
APPROVER_2 = "6f1c2d3e-0000-4000-8000-0000000000c3"   # the other one listed
OWNER = "6f1c2d3e-0000-4000-8000-0000000000b2"
NOBODY = "0badc0de-0000-4000-8000-000000000000"        # a GUID that names no one who will ever confirm


class As:
    """The token check, standing in: every request comes from this verified caller."""

    def __init__(self, oid: str, *roles: str, name: str = "Someone", person: bool = True) -> None:
        self.caller = Caller(oid=oid, tenant="tenant-contoso", name=name, roles=frozenset(roles), person=person)

    def verify(self, authorization: str | None) -> Caller:
        return self.caller


class Forged:
    def verify(self, authorization: str | None) -> Caller:
        raise AccessDenied(401, "the token is invalid (DecodeError)", claims={"oid": APPROVER, "name": "Approver"})


@pytest.fixture
def deps() -> MemoryDeps:
    return make_deps(settings_for_tests(spokes_config=DEMO_SPOKES.read_text()),
                     clock=FixedClock(datetime(2026, 12, 7, 9, 1, tzinfo=UTC)))


def waiting_run(deps: MemoryDeps, owner: str = OWNER, **fields: Any) -> RunRecord:
    """A blob-drop run (its owner as run.json names it) whose model waits for prod."""
    run = RunRecord(**{"run_id": "run-1", "source": "datasets/run-1/run.json",
                       "state": states.awaiting_approval("prod"), "chosen_model": MODEL,
                       "settings": {"deployment_name": "bot", "owner": owner}, "owner": owner,
                       "environments": ["dev", "test", "prod"], "dataset_hash": "sha256:abc", **fields})
    return deps.registry.add_run(run)


def call(deps: MemoryDeps, action: str, who: Any, body: dict[str, Any] | None = None, run_id: str = "run-1",
         traffic: UnverifiedTraffic | None = None) -> api.ApiResponse:
    return api.handle(action, authorization="Bearer t", params={"run_id": run_id}, deps=deps, verifier=who,
                      body=json.dumps(body or {}).encode(), unverified=traffic or UnverifiedTraffic("_operator"))


def approve(deps: MemoryDeps, who: Any) -> api.ApiResponse:
    return call(deps, "approve", who, {"environment": "prod", "ticket": "CHG-1", "model": MODEL})


# --- 1. the owner is a claim until confirmed -----------------------------------------------------------
def test_an_approver_cannot_ride_on_an_owner_guid_they_wrote_into_run_json(deps: MemoryDeps) -> None:
    waiting_run(deps, owner=NOBODY)   # the attack: drop a run naming any GUID as owner, then approve it
    answer = approve(deps, As(APPROVER, "Approver.prod"))
    assert answer.status == 409 and "waits for its owner" in answer.body["error"]["message"]
    assert "ftops claim run-1" in answer.body["error"]["message"]
    assert deps.registry.runs["run-1"].approvals == {} and not deps.publisher.deploys()


def test_the_named_owner_confirms_the_run_and_then_another_approver_may_approve(deps: MemoryDeps) -> None:
    waiting_run(deps)
    assert call(deps, "claim", As(APPROVER, "Approver.prod")).status == 403     # not the owner: refused, audited
    refused = [a for a in deps.registry.audits if a["action"] == "api.claim.refused"]
    assert refused and refused[0]["actor"] == f"Someone <{APPROVER}>"
    answer = call(deps, "claim", As(OWNER, name="Owen Owner"))
    assert answer.status == 200, answer.body
    assert "owner.confirmed" in deps.registry.actions("run-1")
    assert approve(deps, As(APPROVER, "Approver.prod")).status == 202
    assert deps.publisher.deploys()


def test_a_run_promoted_towards_prod_with_an_unconfirmed_owner_says_what_it_waits_for(deps: MemoryDeps) -> None:
    from shared.stages.deployment import _promote
    run = waiting_run(deps, state=states.deployed("test"))
    _promote(deps, run, deps.require_topology().environment("test"), run.environments, deps.require_topology())
    [entered] = [a for a in deps.registry.audits if a["to_state"] == states.awaiting_approval("prod")]
    assert "ftops claim run-1" in entered["detail"]["waiting_for_owner"]


def test_ftops_status_says_a_run_waits_for_its_owner_before_an_approver(deps: MemoryDeps) -> None:
    from ftops_cli.views import reason
    run = waiting_run(deps)
    assert reason(run) == f"waiting for its owner {OWNER} to confirm it (ftops claim run-1), then for an approver of prod"
    run.claimed_by = OWNER
    assert reason(run) == "waiting for an approver of prod (ftops approve)"


# --- four eyes: verified starter, claimer and retrainer ----------------------------------------------------
@pytest.mark.parametrize(("fields", "who", "why"), [
    ({"started_by": APPROVER, "makers": [{"oid": APPROVER, "as": "started"}]}, APPROVER, "started"),
    ({"owner": APPROVER_2, "claimed_by": APPROVER_2, "makers": [{"oid": APPROVER_2, "as": "claimed"}]},
     APPROVER_2, "owns"),
    ({"started_by": OWNER, "makers": [{"oid": APPROVER, "as": "started"}, {"oid": OWNER, "as": "retrained"}]},
     APPROVER, "started run run-1"),
], ids=["starter", "claimer", "first-starter-after-a-retrain"])
def test_whoever_started_claimed_or_retrained_the_run_cannot_approve_it(deps: MemoryDeps, fields: dict[str, Any],
                                                                         who: str, why: str) -> None:
    waiting_run(deps, **({"owner": OWNER} | fields))
    answer = approve(deps, As(who, "Approver.prod"))
    assert answer.status == 403 and "four eyes" in answer.body["error"]["message"]
    assert why in answer.body["error"]["message"] and deps.registry.runs["run-1"].approvals == {}


# --- 2. the commands queue: claims recorded as claims; a queue retrain needs a verified person again ------
def test_a_queue_retrain_is_recorded_as_a_claim_and_reopens_nothing_until_a_verified_person_stands_behind_it(
        deps: MemoryDeps) -> None:
    waiting_run(deps, state=states.deployed("prod"), claimed_by=OWNER, makers=[{"oid": OWNER, "as": "claimed"}])
    forged_name = f"Demo Approver <{APPROVER}>"    # the verified form, typed into a message
    command = RetrainCommand(run_id="run-1", settings={"hyperparameters": {"n_epochs": 2}}, requested_by=forged_name)
    handle_command(envelope(command, type_="ftops.command.retrain"), command, deps)
    run = deps.registry.runs["run-1"]
    [retrained] = [a for a in deps.registry.audits if a["to_state"] == states.UPLOADING]
    assert retrained["actor"] == f"unverified: {forged_name} via ftops-commands"
    assert (run.started_by, run.claimed_by) == (None, None)
    run.state, run.chosen_model = states.awaiting_approval("prod"), MODEL   # trained and evaluated again
    answer = approve(deps, As(APPROVER, "Approver.prod"))   # the sender approving their own retrain
    assert answer.status == 409 and "waits for its owner" in answer.body["error"]["message"]
    assert call(deps, "claim", As(OWNER)).status == 200     # the owner stands behind it again
    assert approve(deps, As(APPROVER, "Approver.prod")).status == 202


def test_every_queue_command_names_its_sender_as_unverified(deps: MemoryDeps) -> None:
    from shared.app.settlement import PermanentError
    waiting_run(deps)
    command = RunCommand(run_id="run-1", requested_by=None)
    with pytest.raises(PermanentError, match="only a run waiting to train or training"):
        handle_command(envelope(command, type_="ftops.command.cancel"), command, deps)
    [letter] = [a for a in deps.registry.audits if a["action"] == "command_deadlettered"]
    assert letter["detail"]["requested_by"] == "unverified: unnamed sender via ftops-commands"


# --- 3. unverified callers are counted, not written --------------------------------------------------------
def test_unverified_requests_write_no_record_and_no_event_only_one_count_per_window(deps: MemoryDeps) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    reader = InMemoryMetricReader()
    counter = MeterProvider(metric_readers=[reader]).get_meter("t").create_counter("ftops.operator.unverified_requests")
    traffic = UnverifiedTraffic("_operator", counter=counter)
    waiting_run(deps)
    for n in range(25):   # invented run ids, and a real run's approve
        assert call(deps, "retrain", Forged(), run_id=f"invented-{n}", traffic=traffic).status == 401
    assert approve_unverified(deps, traffic).status == 401
    assert deps.registry.audits == [] and deps.publisher.sent == []
    deps.clock.at += timedelta(minutes=5)   # type: ignore[attr-defined]
    call(deps, "list_runs", As(OWNER, "Reader"), traffic=traffic)   # the next request closes the window
    [record] = deps.registry.audits
    assert record["run_id"] == "_operator" and record["action"] == "api.unverified_requests"
    assert record["detail"]["requests"] == 26 and record["actor"] == "ftops.operator-api"
    assert {(b["action"], b["count"]) for b in record["detail"]["by"]} == {("retrain", 25), ("approve", 1)}
    [metric] = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
    assert sum(p.value for p in metric.data.data_points) == 26


def approve_unverified(deps: MemoryDeps, traffic: UnverifiedTraffic) -> api.ApiResponse:
    return call(deps, "approve", Forged(), {"environment": "prod", "ticket": "T", "model": MODEL}, traffic=traffic)


def test_a_verified_callers_refusal_is_still_audited_but_an_invented_run_id_opens_no_partition(deps: MemoryDeps
                                                                                                ) -> None:
    answer = call(deps, "retrain", As(APPROVER, "Reader"), run_id="invented-1")
    assert answer.status == 403
    [refusal] = deps.registry.audits
    assert refusal["run_id"] == "_operator" and refusal["actor"] == f"Someone <{APPROVER}>"
    assert refusal["detail"]["params"] == {"run_id": "invented-1"}
