"""What the demo measures of "push first, poll as fallback": for each run, the time from the emulator seeing
its fine-tuning job succeed to the run first seen `evaluating` (or beyond), and which path got it there: the
hub's webhook (delivered) or the poll timer (no webhook: dropped by the `webhook_drop_rate` fault, or none
registered). The registry is read every WATCH_EVERY seconds, so a figure is good to about that much."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ftops_cli.ticker import Ticker
from ftops_cli.views import table
from shared.run import states

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)
WATCH_EVERY = 0.1
NOT_YET = {states.RECEIVED, states.VALIDATING, states.ACCEPTED, states.UPLOADING, states.WAITING_FOR_QUOTA,
           states.TRAINING, states.TRAINED}


class EvaluatingWatch(Ticker):
    """A thread noting, per run, the wall-clock time it is first seen past `trained`."""

    def __init__(self, deps: Deps, every: float = WATCH_EVERY) -> None:
        super().__init__(every, "demo-evaluating-watch")
        self.deps = deps
        self.seen: dict[str, float] = {}

    def tick(self) -> None:
        now = time.time()
        for run in self.deps.registry.list_runs():
            if run.run_id not in self.seen and run.job_id and run.state not in NOT_YET:
                self.seen[run.run_id] = now


def timings(runs: list[dict[str, Any]], emulator: dict[str, Any], seen: dict[str, float]) -> list[dict[str, Any]]:
    """Per run with a succeeded job: seconds from the job's success (as the emulator saw it) to `evaluating`."""
    ended = {j["id"]: j.get("ended_wall") for j in emulator.get("jobs", []) if j.get("status") == "succeeded"}
    delivered = {w["job_id"] for w in emulator.get("webhooks", []) if w.get("delivered_at")}
    out = []
    for r in runs:
        job, at = r.get("job_id"), seen.get(r["run_id"])
        if job and at is not None and ended.get(job):
            out.append({"run_id": r["run_id"], "job_id": job, "seconds": round(at - ended[job], 2),
                        "via": "webhook" if job in delivered else "poll timer"})
    return out


def render(rows: list[dict[str, Any]], poll_schedule: str) -> list[str]:
    if not rows:
        return []
    return ["", f"job success → evaluating (poll timer {poll_schedule}):",
            *table(["RUN", "SECONDS", "VIA"], [[t["run_id"], f"{t['seconds']:.2f}", t["via"]] for t in rows])]
