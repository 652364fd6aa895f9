"""The ARM deployment client against a scripted SDK client (no I/O): every ARM answer comes out as one
error family with a message naming the account, and a PUT is patient only with what may pass."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

from shared.azure.arm_deployments import (
    PUT_ATTEMPTS,
    ArmAccount,
    ArmDeployments,
    DeploymentError,
    DeploymentQuota,
    DeploymentRefused,
    DeploymentTransient,
    NotManagedByFtops,
    error_from_arm,
)
from shared.azure.spokes import Spokes, account
from shared.run.config import HubSettings
from shared.run.topology import Target

SPOKE = ArmAccount("sub-1", "rg-1", "spoke-east", "spoke-east (eastus)", tenant="t1")
HINT = " — grant Cognitive Services OpenAI Contributor"


def arm_error(status: int, code: str | None = None, message: str = "refused",
              cls: type[HttpResponseError] = HttpResponseError) -> HttpResponseError:
    error = cls(message=message, response=SimpleNamespace(status_code=status, reason="x", headers={},
                                                          text=lambda: "", request=None))
    error.error = SimpleNamespace(code=code, message=message) if code else None
    return error


class ScriptedArm:
    """`deployments` and `accounts` of a CognitiveServicesManagementClient: each call takes the next answer
    (an exception is raised, anything else returned) and is recorded."""

    def __init__(self, *answers: Any) -> None:
        self.answers, self.calls = list(answers), []
        self.deployments = self

    def _next(self, call: str, *args: Any) -> Any:
        self.calls.append((call, *args))
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def begin_create_or_update(self, rg: str, account: str, name: str, body: Any, **kw: Any) -> Any:
        answer = self._next("put", name, kw.get("api_version"))
        body.properties.provisioning_state = "Succeeded"
        body.name = name
        return SimpleNamespace(result=lambda: answer or body)

    def get(self, rg: str, account: str, name: str) -> Any:
        return self._next("get", name)

    def list(self, rg: str, account: str) -> Any:
        return self._next("list") or []

    def begin_delete(self, rg: str, account: str, name: str) -> Any:
        answer = self._next("delete", name)
        return SimpleNamespace(result=lambda: answer)


def client(arm: ScriptedArm) -> tuple[ArmDeployments, list[float]]:
    slept: list[float] = []
    return ArmDeployments(lambda subscription, **_: arm, sleep=slept.append), slept


def put(deployments: ArmDeployments, attempts: int = PUT_ATTEMPTS) -> Any:
    return deployments.put(SPOKE, "bot", {"name": "gpt-4.1-mini.ft-1", "version": "1"}, sku="Standard",
                           capacity=1, tags={"run_id": "r1"}, attempts=attempts,
                           doing="spoke-east (eastus): deploying 'gpt-4.1-mini.ft-1' as 'bot' failed", rights_hint=HINT)


@pytest.mark.parametrize(("answer", "kind"), [
    (arm_error(429, "TooManyRequests", "Rate limit is exceeded."), DeploymentTransient),
    (arm_error(503, None, "Service unavailable"), DeploymentTransient),
    (arm_error(409, "Conflict", "Another operation is in progress."), DeploymentTransient),
    (arm_error(400, "InsufficientQuota", "This operation require 10 new capacity in quota"), DeploymentQuota),
    (arm_error(400, "InvalidResourceProperties", "The specified SKU 'x' is not supported."), DeploymentRefused),
    (arm_error(403, "AuthorizationFailed", "does not have authorization"), DeploymentRefused),
    (ServiceRequestError("connection refused"), DeploymentTransient),
])
def test_every_arm_answer_is_one_kind_of_one_family(answer: Exception, kind: type[DeploymentError]) -> None:
    error = error_from_arm(answer, "deploying x on spoke-east")
    assert type(error) is kind and isinstance(error, DeploymentError)
    assert str(error).startswith("deploying x on spoke-east: ")
    if isinstance(answer, HttpResponseError):
        assert error.status == answer.status_code
        assert str(answer.error.message if answer.error else "Service unavailable") in str(error)
    else:
        assert "ARM unreachable" in str(error)


def test_a_refusal_for_rights_says_what_to_grant_and_is_not_retried() -> None:
    arm = ScriptedArm(arm_error(403, "AuthorizationFailed", "no write permission"))
    deployments, slept = client(arm)
    with pytest.raises(DeploymentRefused) as refused:
        put(deployments)
    assert str(refused.value) == ("spoke-east (eastus): deploying 'gpt-4.1-mini.ft-1' as 'bot' failed: "
                                  "403 AuthorizationFailed: no write permission" + HINT)
    assert [c[0] for c in arm.calls] == ["put"] and slept == []


def test_a_busy_arm_is_given_patience_then_the_put_succeeds() -> None:
    arm = ScriptedArm(arm_error(503, None, "busy"), arm_error(429, "TooManyRequests", "slow down"))
    deployments, slept = client(arm)
    deployed = put(deployments)
    assert deployed.name == "bot" and deployed.provisioning_state == "Succeeded"
    assert [c[0] for c in arm.calls] == ["put"] * 3 and len(slept) == 2 and slept[0] < slept[1]


def test_patience_ends_after_the_last_attempt_and_quota_gets_none() -> None:
    deployments, _ = client(arm := ScriptedArm(*[arm_error(500, None, "down")] * PUT_ATTEMPTS))
    with pytest.raises(DeploymentTransient, match="failed: 500: down"):
        put(deployments)
    assert len(arm.calls) == PUT_ATTEMPTS

    deployments, slept = client(arm := ScriptedArm(arm_error(400, "InsufficientQuota", "no room")))
    with pytest.raises(DeploymentQuota, match="InsufficientQuota: no room"):
        put(deployments)
    assert len(arm.calls) == 1 and slept == []

    deployments, _ = client(arm := ScriptedArm(arm_error(429, "TooManyRequests", "slow down")))
    with pytest.raises(DeploymentTransient):
        put(deployments, attempts=1)   # the evaluation's: its message is retried as a whole
    assert len(arm.calls) == 1


def test_reads_and_deletes_answer_none_or_false_for_missing_and_the_family_for_the_rest() -> None:
    missing = arm_error(404, "DeploymentNotFound", "not found", cls=ResourceNotFoundError)
    deployments, _ = client(ScriptedArm(missing, arm_error(500, None, "down"), missing,
                                        arm_error(403, "AuthorizationFailed", "no delete permission")))
    assert deployments.get(SPOKE, "bot") is None
    with pytest.raises(DeploymentTransient, match=r"^spoke-east \(eastus\): reading deployment 'bot' failed: 500"):
        deployments.get(SPOKE, "bot")
    assert deployments.delete(SPOKE, "bot") is False
    with pytest.raises(DeploymentRefused, match=r"^spoke-east \(eastus\): deleting 'bot' failed: 403"):
        deployments.delete(SPOKE, "bot")


def test_deleting_many_never_raises_and_names_what_is_left() -> None:
    arm = ScriptedArm(None, arm_error(500, None, "down"), arm_error(404, None, "gone", cls=ResourceNotFoundError))
    deployments, _ = client(arm)
    assert deployments.delete_all(SPOKE, ["a", "b", "c"]) == ["b"]


def test_a_spoke_never_replaces_or_deletes_a_deployment_ftops_did_not_create() -> None:
    theirs = SimpleNamespace(name="bot", tags={"team": "search"}, sku=None, properties=SimpleNamespace(
        provisioning_state="Succeeded", model=SimpleNamespace(name="gpt-4o", source=None, source_account=None)))
    hub = HubSettings(endpoint="https://hub", tenant="t1",
                      resource_id="/subscriptions/h/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/hub")
    target = Target("sub-1", "rg-1", "spoke-east", "eastus", "t1", "Standard", 1)
    arm = ScriptedArm(theirs, theirs)
    spokes = Spokes(SimpleNamespace(hub=hub), client(arm)[0], openai_client=lambda *a, **k: None)  # type: ignore[arg-type]
    with pytest.raises(NotManagedByFtops, match="not going to replace: spoke-east \\(eastus\\): deployment 'bot' "
                                                "exists and is not managed by ftops"):
        spokes.deploy(target, "bot", "gpt-4.1-mini.ft-1", tags={"run_id": "r1"})
    with pytest.raises(NotManagedByFtops, match="not going to delete"):
        spokes.delete(target, "bot")
    assert [c[0] for c in arm.calls] == ["get", "get"]                       # no PUT, no DELETE
    assert account(target, hub).label == "spoke-east (eastus)"


def test_quota_counts_the_other_fine_tuned_deployments_that_are_not_going_away() -> None:
    def deployed(name: str, model: str, state: str = "Succeeded") -> Any:
        return SimpleNamespace(name=name, tags={}, sku=None, properties=SimpleNamespace(
            provisioning_state=state, model=SimpleNamespace(name=model, source=None, source_account=None)))
    on_spoke = [deployed("a", "gpt-4.1-mini.ft-a"), deployed("b", "ftchkpt-b"), deployed("base", "gpt-4.1-mini"),
                deployed("old", "gpt-4.1-mini.ft-old", state="Deleting"), deployed("bot", "gpt-4.1-mini.ft-bot")]
    deployments, _ = client(ScriptedArm(on_spoke, on_spoke))
    assert deployments.quota_problem(SPOKE, "bot", quota=3) is None          # replacing `bot` adds none
    assert deployments.quota_problem(SPOKE, "new", quota=3) == (
        "spoke-east (eastus) already has 3 fine-tuned deployments (a, b, bot); its quota is 3: "
        "retire a run or raise the quota first")
