"""Settlement: complete on success, dead-letter what can never succeed, abandon (and retry) the rest."""
import pytest

from shared.handling import PermanentError, settle
from shared.messages import TrainRequest, envelope


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
