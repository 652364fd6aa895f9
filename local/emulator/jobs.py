"""Fine-tuning job records and their simulated training run (steps, metrics, checkpoints, results.csv).

Progress is computed from the emulator clock on demand, so no background thread is needed: a job that
runs holds a list of running segments (pause/resume split them) and everything else follows from
"how many running seconds have elapsed at time t".
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from .knowledge import Example

TERMINAL = ("succeeded", "failed", "cancelled")
# the webhook event each terminal status sends (Learn webhooks, "Webhook events reference"; webhooks.py)
JOB_EVENTS = {"succeeded": "fine_tuning.job.succeeded", "failed": "fine_tuning.job.failed",
              "cancelled": "fine_tuning.job.cancelled"}
HOLDING = ("running", "pausing", "paused", "resuming")  # statuses that hold one of the account's training slots

METRICS_EVERY = 10    # Learn's tutorial: metrics events at steps 10, 20, …
# The two safety failures in Learn's words (fine-tuning-safety-evaluation); Azure's error codes for them are
# not documented, these are the emulator's. "stage": when the job fails (data: at validation).
FAILURES: dict[str, dict[str, str]] = {
    "generic": {"code": "server_error", "message": "The job failed due to an internal error."},
    "safety": {
        "code": "model_evaluation_failed", "stage": "model",
        "message": "This model is unable to be deployed. Model evaluation identified that this fine tuned model "
        "scores above acceptable thresholds for [Violence, Self Harm]. Please review your training data set "
        "and resubmit the job.",
    },
    "safety_data": {
        "code": "invalid_training_file", "stage": "data",
        "message": "The provided training data failed RAI checks for harm types: [hate_fairness, self_harm, "
        "violence]. Please fix the data and try again.",
    },
}


def _unresolved(value: Any, auto: int) -> Any:
    return auto if value in (None, "auto") else value


def _unit(*parts: object) -> float:
    """Deterministic pseudo-random number in [0, 1) from its inputs (seeded noise for metrics)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


@dataclass
class Event:
    id: str
    created_at: float
    message: str
    level: str = "info"
    type: str = "message"
    data: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "fine_tuning.job.event",
            "created_at": int(self.created_at),
            "level": self.level,
            "message": self.message,
            "type": self.type,
            "data": self.data,
        }


@dataclass
class Job:
    id: str
    account: str
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    method: dict[str, Any]  # {"type": ..., "<type>": {"hyperparameters": {...}}} as requested
    requested: dict[str, Any]  # the requested hyperparameters ("auto" resolved at validation)
    created_at: float
    run_seconds: float
    fail_with: dict[str, str] | None = None
    status: str = "pending"    # validating, then queued (queued_at set): `pending` either way, as Azure shows
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list)
    n_validation: int = 0
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    segments: list[list[float | None]] = field(default_factory=list)  # [start, end|None] running spans
    error: dict[str, Any] | None = None
    result_files: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    metadata: dict[str, str] | None = None
    transition_at: float | None = None  # when `pausing` becomes `paused`, or `resuming` becomes `running`

    # --- identity ---------------------------------------------------------------------------
    @property
    def hex(self) -> str:
        return self.id.removeprefix("ftjob-")

    @property
    def model_hex(self) -> str:
        """The fine-tuned model's own id: Learn's examples never reuse the job id's hex."""
        return hashlib.sha256(f"{self.id}:model".encode()).hexdigest()[:32]

    @property
    def model_base(self) -> str:
        return f"{self.model}.ft-{self.model_hex}"

    @property
    def fine_tuned_name(self) -> str:
        return f"{self.model_base}-{self.suffix}" if self.suffix else self.model_base

    # --- size of the run ----------------------------------------------------------------------
    @property
    def n_epochs(self) -> int:
        return int(self.hyperparameters.get("n_epochs", 1))

    @property
    def steps_per_epoch(self) -> int:
        batch = int(self.hyperparameters.get("batch_size", 1))
        return max(1, math.ceil(len(self.examples) / batch))

    @property
    def total_steps(self) -> int:
        return self.n_epochs * self.steps_per_epoch

    @property
    def trained_tokens(self) -> int:
        return sum(e.tokens for e in self.examples) * self.n_epochs

    def resolve_hyperparameters(self) -> None:
        """Resolve "auto" the way the cookbook describes: target 3 epochs, at least ~100 example-passes."""
        n = max(1, len(self.examples))
        epochs = self.requested.get("n_epochs", "auto")
        if epochs in (None, "auto"):
            epochs = 3
            if n * 3 < 100:
                epochs = min(25, 100 // n)
            elif n * 3 > 25_000:
                epochs = max(1, 25_000 // n)
        batch = self.requested.get("batch_size", "auto")
        if batch in (None, "auto"):
            batch = max(1, min(256, round(n * 0.002)))
        lrm = self.requested.get("learning_rate_multiplier", "auto")
        if lrm in (None, "auto"):
            lrm = 1.0
        self.hyperparameters = {"n_epochs": int(epochs), "batch_size": int(batch), "learning_rate_multiplier": lrm}
        if self.method.get("type") == "dpo":
            beta = self.requested.get("beta", "auto")
            self.hyperparameters["beta"] = 0.1 if beta in (None, "auto") else beta

    # --- simulated time -----------------------------------------------------------------------
    def run_elapsed(self, t: float) -> float:
        total = 0.0
        for start, end in self.segments:
            assert start is not None
            stop = t if end is None else min(end, t)
            total += max(0.0, stop - start)
        return total

    def time_at_elapsed(self, target: float) -> float | None:
        """When running time reaches `target` (None if the job is paused before that)."""
        done = 0.0
        for start, end in self.segments:
            assert start is not None
            if end is None or done + (end - start) >= target:
                return start + (target - done)
            done += end - start
        return None

    def settle(self, now: float) -> None:
        """`pausing` → `paused` and `resuming` → `running` once their simulated time has passed."""
        t = self.transition_at
        if t is None or t > now or self.status not in ("pausing", "resuming"):
            return
        if self.status == "pausing":
            self.status = "paused"
            self.add_event(t, "Job paused.")
        else:
            self.segments.append([t, None])
            self.status = "running"
            self.add_event(t, "Job resumed.")
        self.transition_at = None

    def steps_done(self, t: float) -> int:
        if not self.segments:
            return 0
        fraction = min(1.0, self.run_elapsed(t) / self.run_seconds) if self.run_seconds > 0 else 1.0
        return int(self.total_steps * fraction)

    def step_time(self, step: int) -> float:
        at = self.time_at_elapsed(self.run_seconds * step / self.total_steps)
        return at if at is not None else (self.finished_at or 0.0)

    # --- metrics --------------------------------------------------------------------------------
    def metrics(self, step: int, full_valid: bool = False) -> dict[str, Any]:
        progress = step / self.total_steps
        noise = (_unit(self.id, self.seed, step) - 0.5) * 0.1
        train_loss = round(1.8 * math.exp(-3.0 * progress) + 0.15 + noise, 4)
        data: dict[str, Any] = {
            "step": step,
            "train_loss": train_loss,
            "train_mean_token_accuracy": round(min(0.99, 1.0 - train_loss / 2.2), 4),
        }
        if self.n_validation:
            valid_loss = round(train_loss + 0.05 + abs(noise) / 2, 4)
            data["valid_loss"] = valid_loss
            data["valid_mean_token_accuracy"] = round(min(0.99, 1.0 - valid_loss / 2.2), 4)
            if full_valid:
                data["full_valid_loss"] = round(valid_loss + 0.01, 4)
                data["full_valid_mean_token_accuracy"] = round(min(0.99, 1.0 - (valid_loss + 0.01) / 2.2), 4)
        return data

    def results_csv(self) -> bytes:
        columns = [
            "step", "train_loss", "train_mean_token_accuracy", "valid_loss",
            "validation_mean_token_accuracy", "full_valid_loss", "full_valid_mean_token_accuracy",
        ]
        lines = [",".join(columns)]
        for step in range(1, self.total_steps + 1):
            m = self.metrics(step, full_valid=step % self.steps_per_epoch == 0)
            m["validation_mean_token_accuracy"] = m.pop("valid_mean_token_accuracy", None)
            lines.append(",".join("" if m.get(c) is None else str(m[c]) for c in columns))
        return ("\n".join(lines) + "\n").encode()

    # --- checkpoints (the last three epochs are kept) ---------------------------------------------
    def checkpoint_steps(self) -> list[tuple[int, int]]:
        """(epoch, step) of the kept checkpoints, oldest first."""
        first = max(1, self.n_epochs - 2)
        return [(e, e * self.steps_per_epoch) for e in range(first, self.n_epochs + 1)]

    def checkpoint_id(self, step: int) -> str:
        return "ftchkpt-" + hashlib.sha256(f"{self.id}:{step}".encode()).hexdigest()[:32]

    def checkpoint_model(self, step: int) -> str:
        return f"{self.model_base}:ckpt-step-{step}"

    def checkpoints(self, t: float) -> list[dict[str, Any]]:
        if self.status == "failed" or not self.examples:
            return []
        done = self.steps_done(t)
        out = []
        for _, step in self.checkpoint_steps():
            if step <= done:
                out.append({
                    "id": self.checkpoint_id(step),
                    "object": "fine_tuning.job.checkpoint",
                    "created_at": int(self.step_time(step)),
                    "fine_tuned_model_checkpoint": self.checkpoint_model(step),
                    "fine_tuning_job_id": self.id,
                    "step_number": step,
                    "metrics": self.metrics(step, full_valid=True),
                })
        return list(reversed(out))  # newest first, like the API

    def knowledge_fraction(self, step: int) -> float:
        """Share of the examples a checkpoint has learnt: earlier epochs know fewer."""
        return 1.0 if step >= self.total_steps else step / self.total_steps

    # --- events --------------------------------------------------------------------------------
    def add_event(self, t: float, message: str, level: str = "info") -> None:
        suffix = hashlib.sha256(f"{self.id}:{len(self.events)}:{message}".encode()).hexdigest()[:24]
        self.events.append(Event(id=f"ftevent-{suffix}", created_at=t, message=message, level=level))

    def all_events(self, t: float) -> list[Event]:
        """Message events plus a metrics event every METRICS_EVERY steps; newest first."""
        events = [e for e in self.events if e.created_at <= t]
        for step in range(METRICS_EVERY, self.steps_done(t) + 1, METRICS_EVERY):
            digest = hashlib.sha256(f"{self.id}:step:{step}".encode()).hexdigest()[:24]
            events.append(Event(
                id=f"ftevent-{digest}", created_at=self.step_time(step),
                message=f"Step {step}: training loss={self.metrics(step)['train_loss']}",
                type="metrics", data=self.metrics(step, full_valid=step % self.steps_per_epoch == 0),
            ))
        # stable order: time, then metrics before the message that follows them at the same instant
        events.sort(key=lambda e: (e.created_at, 0 if e.type == "metrics" else 1))
        return list(reversed(events))

    # --- wire ----------------------------------------------------------------------------------
    def estimated_finish(self, t: float) -> int | None:
        if self.status != "running":
            return None
        return int(t + max(0.0, self.run_seconds - self.run_elapsed(t)))

    def to_json(self, t: float) -> dict[str, Any]:
        method = dict(self.method)
        kind = method.get("type", "supervised")
        if self.hyperparameters:
            method[kind] = {**method.get(kind, {}), "hyperparameters": dict(self.hyperparameters)}
        # before validation resolves "auto", Azure shows -1 for it (Learn's tutorial: n_epochs -1, batch_size -1)
        hyper = self.hyperparameters or {
            "n_epochs": _unresolved(self.requested.get("n_epochs"), -1),
            "batch_size": _unresolved(self.requested.get("batch_size"), -1),
            "learning_rate_multiplier": _unresolved(self.requested.get("learning_rate_multiplier"), 1)}
        return {
            "id": self.id,
            "object": "fine_tuning.job",
            "created_at": int(self.created_at),
            "error": self.error,
            "fine_tuned_model": self.fine_tuned_name if self.status == "succeeded" else None,
            "finished_at": int(self.finished_at) if self.finished_at and self.status in TERMINAL else None,
            "estimated_finish": self.estimated_finish(t),
            "hyperparameters": {k: v for k, v in hyper.items() if k != "beta"},
            "method": method,
            "model": self.model,
            "organization_id": "org-emulator",
            "result_files": list(self.result_files),
            "seed": self.seed,
            "status": self.status,
            "suffix": self.suffix,
            "trained_tokens": self.trained_tokens if self.status == "succeeded" else None,
            "training_file": self.training_file,
            "validation_file": self.validation_file,
            "integrations": [],
            "metadata": self.metadata,
        }
