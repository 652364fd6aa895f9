"""Settlement: complete on success, dead-letter what can never succeed, abandon (and retry) the rest."""
import pytest

from shared.app.settlement import PermanentError, settle
from shared.run.messages import TrainRequest, envelope


class Actions:
    def __init__(self):
        self.calls = []

    def complete(self, msg):
        self.calls.append(("complete",))

    def abandon(self, msg):
        self.calls.append(("abandon",))

    def deadletter(self, msg, deadletter_reason=None, deadletter_error_description=None):
        self.calls.append(("deadletter", deadletter_reason, deadletter_error_description))


class Msg:
    def __init__(self, body):
        self.body, self.message_id = body, "m-1"


def good():
    return Msg(envelope(TrainRequest(run_id="r"), message_id="m-1").to_json().encode())


def test_success_completes():
    actions, seen = Actions(), []
    settle(good(), actions, lambda e, d: seen.append(d.run_id), accepts="ftops.stage.train")
    assert seen == ["r"] and actions.calls == [("complete",)]


def test_garbage_is_dead_lettered_on_first_delivery_with_the_reason():
    actions = Actions()
    settle(Msg(b"{oops"), actions, lambda e, d: None, accepts="ftops.stage.train")
    assert actions.calls[0][:2] == ("deadletter", "InvalidMessage") and "not JSON" in actions.calls[0][2]


def test_a_message_on_the_wrong_queue_is_dead_lettered():
    actions = Actions()
    settle(good(), actions, lambda e, d: None, accepts="ftops.stage.deploy")
    assert actions.calls[0][0] == "deadletter" and "does not belong" in actions.calls[0][2]


def test_permanent_errors_are_dead_lettered_and_transient_ones_retried():
    actions = Actions()
    settle(good(), actions, lambda e, d: (_ for _ in ()).throw(PermanentError("approver not listed")),
           accepts="ftops.stage.train")
    assert actions.calls == [("deadletter", "PermanentError", "approver not listed")]
    actions = Actions()
    with pytest.raises(TimeoutError):
        settle(good(), actions, lambda e, d: (_ for _ in ()).throw(TimeoutError("hub slow")), accepts="ftops.stage.train")
    assert actions.calls == [("abandon",)]


def test_a_table_refusing_a_write_is_dead_lettered_not_retried():
    from azure.core.exceptions import HttpResponseError

    from shared.store.registry import Registry, StorageRefused

    class Refusing:   # Table Storage answering 400 PropertyValueTooLarge to any write
        def update_entity(self, *a, **k):
            exc = HttpResponseError(message="The property value exceeds the maximum allowed size (64KB).")
            exc.status_code = 400
            raise exc

    registry = Registry.__new__(Registry)
    registry._tables = {"runs": Refusing()}

    def handler(event, data):
        registry._replace("runs", {"PartitionKey": "run", "RowKey": data.run_id}, "etag")

    with pytest.raises(StorageRefused):
        handler(None, TrainRequest(run_id="r"))
    actions = Actions()
    settle(good(), actions, handler, accepts="ftops.stage.train")
    assert actions.calls[0][:2] == ("deadletter", "StorageRefused") and "400" in actions.calls[0][2]


def test_stored_text_is_bounded_with_a_marker():
    import json

    from shared.store.registry import PROPERTY_CHARS, bounded, bounded_json
    assert bounded("short") == "short"
    cut = bounded("x" * 40_000)
    assert len(cut) <= PROPERTY_CHARS and cut.endswith("[truncated: 40,000 chars in all]")
    assert len(bounded("😀" * 20_000).encode("utf-16-le")) // 2 <= PROPERTY_CHARS   # two units each
    errors = {"message": "; ".join(["line 3: " + "y" * 9_000] * 5), "code": "bad"}
    stored = json.loads(bounded_json(errors))
    assert stored["code"] == "bad" and "[truncated:" in stored["message"]


@pytest.mark.parametrize("name, data", [
    ("approve", {"run_id": "r1", "environment": "prod", "approver": "boss@contoso.example", "ticket": "T"}),
    ("reject", {"run_id": "r1", "environment": "prod", "approver": "boss@contoso.example", "reason": "no"}),
    ("retire", {"run_id": "r1", "requested_by": "ci"}),
    ("rollback", {"environment": "prod"}),
])
def test_operator_actions_on_the_commands_queue_are_dead_lettered_and_audited(name, data):
    from fakes import make_deps

    from shared.run.messages import CloudEvent
    from shared.stages.commands import handle_command
    deps = make_deps()
    event = CloudEvent(type=f"ftops.command.{name}", data=data)
    actions = Actions()
    settle(Msg(event.to_json().encode()), actions, lambda e, d: handle_command(e, d, deps), accepts="ftops.command.")
    [(verb, reason, description)] = actions.calls
    assert (verb, reason) == ("deadletter", "OperatorActionNotAccepted")
    assert f"{name} is not accepted on the commands queue" in description and f"ftops {name}" in description
    [audit] = deps.registry.audits
    assert audit["run_id"] == data.get("run_id", "_operator") and audit["action"] == f"{name}.refused"
    assert audit["actor"] == f"unverified: {data.get('approver') or data.get('requested_by') or 'unnamed sender'} via ftops-commands"
    assert not deps.registry.runs and not deps.registry.slots and not deps.registry.keys   # nothing else moved
    assert deps.publisher.types() == ["ftops.run.command_deadlettered"]   # other systems hear of it too
