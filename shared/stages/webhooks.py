"""The hub's fine-tuning webhooks: push first, poll as fallback.

Azure OpenAI sends `fine_tuning.job.succeeded|failed|cancelled` to a registered endpoint (Learn "Azure OpenAI
in Foundry Models webhooks"), signed as Standard Webhooks prescribe: headers `webhook-id`, `webhook-timestamp`,
`webhook-signature` (`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` with the endpoint's `whsec_`
secret). `receive` answers one delivery, fast (the hub waits about 10 s), and never polls the hub itself:

- the signature and the timestamp's tolerance (300 s) are checked by the openai SDK's own
  `webhooks.verify_signature`; a delivery that fails is refused 401 in the operator API's error shape, and
  neither the secret nor the body is ever logged;
- `webhook-id` is the idempotency key: a conditional insert in the registry's keys table (`claim`), so a
  redelivered event finds its key completed and does nothing more;
- a fine-tuning event for a job ftops follows becomes one `ftops.stage.poll` message (its MessageId named by
  the delivery: a redelivery is a duplicate Service Bus drops), which `shared.stages.polling.handle_poll`
  answers with exactly the per-job code the poll timer runs;
- an event of another type, or for a job ftops does not follow (the hub's webhooks cover every job of the
  resource), is acknowledged and counted, never an error.

The poll timer still runs: a dropped, late or refused webhook only costs the time until its next tick.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.azure import webhook_endpoints
from shared.run.messages import PollRequest, envelope, poll_message_id
from shared.store.claims import hold

if TYPE_CHECKING:
    from openai.resources.webhooks.webhooks import Webhooks

    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)

FINE_TUNING_EVENTS = frozenset(webhook_endpoints.FINE_TUNING_EVENTS)   # the events ftops registers for
TOLERANCE_SECONDS = 300      # the SDK's default and Standard Webhooks' replay window
MAX_BODY_BYTES = 64 * 1024   # a fine-tuning event is a few hundred bytes ("thin": the job id only)
CLAIM_SECONDS = 30.0         # a delivery being handled holds its webhook-id this long (renewed while it works)

_counts: Counter[str] = Counter()
_counts_lock = threading.Lock()


@dataclass(frozen=True)
class WebhookAnswer:
    """What the HTTP trigger answers: `status`, and an `outcome` that says what became of the delivery."""
    status: int
    outcome: str
    message: str = ""

    def json(self) -> str:
        if self.status >= 400:   # the operator API's error shape (shared.operator.api)
            return json.dumps({"error": {"status": self.status, "message": self.message}})
        return json.dumps({"outcome": self.outcome, **({"message": self.message} if self.message else {})})


def counts() -> dict[str, int]:
    """Deliveries this worker answered, by outcome (also logged one line each: App Insights counts them)."""
    with _counts_lock:
        return dict(_counts)


def _answer(status: int, outcome: str, message: str = "", *, webhook_id: str | None = None) -> WebhookAnswer:
    with _counts_lock:
        _counts[outcome] += 1
    log.info("hub webhook %s: %d %s", (webhook_id or "-")[:80], status, outcome)
    return WebhookAnswer(status, outcome, message)


def receive(body: bytes, headers: Mapping[str, str], deps: Deps) -> WebhookAnswer:
    """One webhook delivery from the hub → the answer for the hub (2xx: received, done with; else it retries)."""
    secret = deps.settings.hub_webhook_secret
    if not secret:
        return _answer(503, "not_configured", "webhooks are not configured here (HUB_WEBHOOK_SECRET is unset); "
                                              "the poll timer follows the jobs")
    if len(body) > MAX_BODY_BYTES:
        return _answer(413, "too_large", f"a webhook body is at most {MAX_BODY_BYTES} bytes")
    failure = _unverified(body, headers, secret)
    if failure:
        return _answer(401, "refused", failure)
    webhook_id = _header(headers, "webhook-id")
    try:
        event = json.loads(body)
        event_type, data = event.get("type"), event.get("data")
    except (ValueError, AttributeError):
        return _answer(400, "malformed", "the signed body is not a JSON object", webhook_id=webhook_id)
    if event_type not in FINE_TUNING_EVENTS:
        return _answer(200, "ignored_event_type", f"ftops does not act on {str(event_type)[:60]!r}",
                       webhook_id=webhook_id)
    job_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(job_id, str) or not job_id or len(job_id) > 200:
        return _answer(400, "malformed", f"a {event_type} event names its job in data.id", webhook_id=webhook_id)
    key = "webhook-" + hashlib.sha256(webhook_id.encode()).hexdigest()[:40]
    with hold(deps.registry, key, ttl_seconds=CLAIM_SECONDS) as claim:
        if claim.completed:
            return _answer(200, "duplicate", webhook_id=webhook_id)
        if claim.in_progress:   # another worker is handling this very delivery: the hub tries again later
            return _answer(409, "in_progress", "this delivery is being handled; try again", webhook_id=webhook_id)
        outcome = _hand_over(deps, job_id, event_type, webhook_id)
        claim.complete({"outcome": outcome, "job_id": job_id})
    return _answer(202 if outcome == "handed_to_poller" else 200, outcome, webhook_id=webhook_id)


def _hand_over(deps: Deps, job_id: str, event_type: str, webhook_id: str) -> str:
    """The run following `job_id` gets one poll of it, on the poll queue; a job no run follows is left alone."""
    runs = [run_id for run_id, tracked in deps.registry.tracked_jobs() if tracked == job_id]
    if not runs:
        return "unknown_job"
    for run_id in runs:
        request = PollRequest(run_id=run_id, job_id=job_id, event=event_type, webhook_id=webhook_id[:200])
        deps.publisher.send(deps.settings.poll_queue, envelope(request, message_id=poll_message_id(run_id, webhook_id)))
    return "handed_to_poller"


def _unverified(body: bytes, headers: Mapping[str, str], secret: str) -> str | None:
    """None when the openai SDK accepts the signature and the timestamp; else why not (never the secret)."""
    from openai import InvalidWebhookSignatureError
    try:
        _verifier().verify_signature(body, headers, secret=secret, tolerance=TOLERANCE_SECONDS)
    except InvalidWebhookSignatureError as exc:
        return f"webhook signature refused: {exc}"
    except ValueError as exc:   # a missing header, or a secret that is not base64 after whsec_
        return f"webhook signature refused: {str(exc)[:120]}"
    return None


@functools.cache
def _verifier() -> Webhooks:
    """The SDK's webhook helper; its client never sends a request (the key is a placeholder, as Learn's sample)."""
    from openai import OpenAI
    return OpenAI(api_key="webhooks-only", base_url="https://webhooks.invalid/").webhooks


def _header(headers: Mapping[str, Any], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return ""
