"""Versioned, typed messages: every message on every queue and topic is a CloudEvents 1.0 JSON envelope.

`type` says what it is (`ftops.command.approve`, `ftops.run.trained`, …), `dataschema` its version,
`subject` the run id, `id` the Service Bus MessageId. `parse_message` is the one edge where bytes become
a typed command; anything it refuses is dead-lettered by the caller with the reason it gives.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.run.echo import echo

SOURCE = "/ftops"
SCHEMA_V1 = "urn:ftops:schema:v1"


class InvalidMessage(ValueError):
    """Cannot be parsed, unknown type or version: dead-letter, never retry."""


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- internal stage requests -------------------------------------------------------------------------
class TrainRequest(_Data):
    run_id: str
    attempt: int = 0   # > 0: a re-send (quota wait, busy elsewhere): MessageId train-<run_id>-<job key>-a<attempt>


class EvaluateRequest(_Data):
    run_id: str
    attempt: int = 0   # > 0: a re-send, whatever the reason (MessageId evaluate-<run_id>-<job>-a<attempt>)
    quota_waits: int = 0   # how many of the re-sends so far waited out a hub quota refusal
    infra_waits: int = 0   # how many waited out a deployment that could not be asked (gone, not ready, 5xx)


class PollRequest(_Data):
    """Poll one job now: a hub webhook said it ended (shared.stages.webhooks), so the poller's own code for one
    job runs without waiting for the timer. `event` is the webhook's type, `webhook_id` its id (logs only)."""
    run_id: str
    job_id: str
    event: str
    webhook_id: str
    attempt: int = 0   # > 0: a re-send while the succeeded job's results file is not posted yet (…-a<attempt>)


class DeployRequest(_Data):
    run_id: str
    environment: str
    attempt: int = 0   # > 0: re-sent because another worker held the environment (…-a<attempt>)


# --- commands: their data; shared.run.command_table says which channel takes each and who handles it ----
class TrainCommand(_Data):
    blob: str = Field(description="path of the dataset blob or run.json in the datasets container")
    settings: dict[str, Any] = Field(default_factory=dict)
    requested_by: str | None = None


class RunCommand(_Data):
    """cancel, pause, resume, retire: act on one run."""
    run_id: str
    requested_by: str | None = None
    reason: str | None = None


class RetrainCommand(_Data):
    run_id: str
    settings: dict[str, Any] = Field(default_factory=dict)
    requested_by: str | None = None


# approve, reject, rollback, retire: still parsed on the commands queue so that such a message is
# dead-lettered with the reason (use the operator API), not as an unknown type; the API uses its own bodies.
class ApproveCommand(_Data):
    run_id: str
    environment: str
    approver: str
    ticket: str
    comment: str | None = None


class RejectCommand(_Data):
    run_id: str
    environment: str
    approver: str
    reason: str
    ticket: str | None = None


class RollbackCommand(_Data):
    environment: str
    run_id: str | None = None
    deployment: str | None = None
    requested_by: str | None = None
    reason: str | None = None


STAGE_TYPES: dict[str, type[_Data]] = {
    "ftops.stage.train": TrainRequest,
    "ftops.stage.evaluate": EvaluateRequest,
    "ftops.stage.deploy": DeployRequest,
    "ftops.stage.poll": PollRequest,
}
_TYPE_OF = {v: k for k, v in STAGE_TYPES.items()}


# Each command's data by name; shared.run.command_table says which channel takes it and who handles it.
COMMAND_PREFIX = "ftops.command."
COMMAND_PAYLOADS: dict[str, type[_Data]] = {
    "train": TrainCommand, "cancel": RunCommand, "pause": RunCommand, "resume": RunCommand,
    "retrain": RetrainCommand, "approve": ApproveCommand, "reject": RejectCommand, "rollback": RollbackCommand,
    "retire": RunCommand, "claim": RunCommand,
}


def payload_type(event_type: str) -> type[_Data] | None:
    """The data class of a message type: a stage request, or a command of shared.run.command_table."""
    if event_type.startswith(COMMAND_PREFIX):
        return COMMAND_PAYLOADS.get(event_type.removeprefix(COMMAND_PREFIX))
    return STAGE_TYPES.get(event_type)


class CloudEvent(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    source: str = SOURCE
    type: str
    subject: str | None = None
    time: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str = SCHEMA_V1
    data: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json()


def envelope(data: _Data, *, message_id: str | None = None, type_: str | None = None,
             subject: str | None = None) -> CloudEvent:
    """Wrap a typed payload; `message_id` makes sends idempotent (Service Bus duplicate detection)."""
    event_type = type_ or _TYPE_OF[type(data)]
    run_id = getattr(data, "run_id", None)
    return CloudEvent(id=message_id or uuid.uuid4().hex, type=event_type, subject=subject or run_id,
                      data=data.model_dump(mode="json"))


def _about(thing: str | None) -> str:
    return hashlib.sha256(str(thing).encode()).hexdigest()[:12]


# Stage requests are named by what they are about (the job, the model): a retrain's second job or model is
# new work, not a duplicate of the first one's request (Service Bus drops a repeated MessageId).
def evaluate_message_id(run_id: str, job_id: str | None) -> str:
    return f"evaluate-{run_id}-{_about(job_id)}"


def poll_message_id(run_id: str, webhook_id: str) -> str:
    """One poll per webhook delivery id: the hub's redelivery of the same event is dropped as a duplicate."""
    return f"poll-{run_id}-{_about(webhook_id)}"


def deploy_message_id(run_id: str, environment: str, model: str | None) -> str:
    suffix = f"-{hashlib.sha256(model.encode()).hexdigest()[:10]}" if model else ""
    return f"deploy-{run_id}-{environment}{suffix}"


def deploy_request(run_id: str, environment: str, model: str | None) -> CloudEvent:
    """The one way a deploy request is made (evaluation, the deploy stage's next environment, approvals)."""
    return envelope(DeployRequest(run_id=run_id, environment=environment),
                    message_id=deploy_message_id(run_id, environment, model))


def run_event(state: str, run_id: str, detail: dict[str, Any] | None = None, *, event_id: str | None = None
              ) -> CloudEvent:
    """An event on the topic: ftops.run.<state>. The id is stable per transition so republishing dedups."""
    return CloudEvent(id=event_id or uuid.uuid4().hex, type=f"ftops.run.{state.split(':')[0]}",
                      subject=run_id, data={"run_id": run_id, "state": state, **(detail or {})})


def parse_message(body: bytes | str) -> tuple[CloudEvent, _Data]:
    """Bytes from a queue → (envelope, typed payload). Raises InvalidMessage with a reason a person can act on."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"body is not JSON: {echo(exc)}") from exc
    except RecursionError as exc:
        raise InvalidMessage("body is not JSON: nested too deeply to parse") from exc
    if not isinstance(raw, dict):
        raise InvalidMessage("body is not a JSON object (a CloudEvents 1.0 envelope is expected)")
    try:
        event = CloudEvent.model_validate(raw)
    except ValidationError as exc:
        raise InvalidMessage(f"not a CloudEvents 1.0 envelope: {_errors(exc)}") from exc
    model = payload_type(event.type)
    if model is None:
        raise InvalidMessage(f"unknown message type {event.type!r}")
    if event.dataschema != SCHEMA_V1:
        raise InvalidMessage(f"unknown version {event.dataschema!r} of {event.type} (this app reads {SCHEMA_V1})")
    try:
        return event, model.model_validate(event.data)
    except ValidationError as exc:
        raise InvalidMessage(f"{event.type} data is invalid: {_errors(exc)}") from exc


def command_name(event: CloudEvent) -> str:
    return event.type.rsplit(".", 1)[-1]


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{echo('.'.join(str(p) for p in e['loc']) or '<root>')}: {echo(e['msg'])}"
                     for e in exc.errors())
