"""Messages are validated at the edge: what cannot be handled is refused with a reason a person can act on."""
import json

import pytest

from shared.run.messages import (
    ApproveCommand,
    InvalidMessage,
    TrainRequest,
    envelope,
    parse_message,
    run_event,
)


def test_round_trip_keeps_id_subject_and_payload():
    event = envelope(TrainRequest(run_id="r-1"), message_id="train-r-1")
    parsed, data = parse_message(event.to_json())
    assert (parsed.id, parsed.subject, parsed.type) == ("train-r-1", "r-1", "ftops.stage.train")
    assert data == TrainRequest(run_id="r-1")


@pytest.mark.parametrize("body, reason", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"specversion": "0.3", "type": "ftops.stage.train", "id": "1"}), "not a CloudEvents 1.0"),
    (json.dumps({"specversion": "1.0", "type": "ftops.command.launch", "id": "1", "data": {}}), "unknown message type"),
    (json.dumps({"specversion": "1.0", "type": "ftops.stage.train", "id": "1", "dataschema": "urn:ftops:schema:v9",
                 "data": {"run_id": "r"}}), "unknown version"),
    (json.dumps({"specversion": "1.0", "type": "ftops.command.approve", "id": "1",
                 "data": {"run_id": "r", "environment": "prod"}}), "approver"),
])
def test_refusals_name_the_problem(body, reason):
    with pytest.raises(InvalidMessage, match=reason):
        parse_message(body)


def test_unknown_fields_are_refused_not_ignored():
    event = envelope(ApproveCommand(run_id="r", environment="prod", approver="a", ticket="T-1"),
                     type_="ftops.command.approve")
    raw = json.loads(event.to_json())
    raw["data"]["aprover"] = "typo"
    with pytest.raises(InvalidMessage, match="aprover"):
        parse_message(json.dumps(raw))


def test_run_event_type_is_the_state_kind():
    event = run_event("deployed:prod", "r-1", {"regions": 2})
    assert event.type == "ftops.run.deployed"
    assert event.data == {"run_id": "r-1", "state": "deployed:prod", "regions": 2}


def test_a_deeply_nested_body_is_refused_not_a_crash():
    # json raises RecursionError past ~1,000 levels: it must become a dead-letter reason, not escape settlement.
    with pytest.raises(InvalidMessage, match="nested too deeply"):
        parse_message(b"[" * 20_000 + b"]" * 20_000)


def test_an_unknown_key_is_echoed_short_and_masked():
    raw = json.loads(envelope(TrainRequest(run_id="r-1")).to_json())
    key = "x" * 200_000 + "AccountKey=" + "Ab1+" * 20
    raw["data"][key] = 1
    with pytest.raises(InvalidMessage) as err:
        parse_message(json.dumps(raw))
    reason = str(err.value)
    assert len(reason) < 400 and "AccountKey=" not in reason and "200,091 chars" in reason
