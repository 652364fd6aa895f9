"""Poll tick with 10,000 finished runs in the registry and 20 active jobs on the hub, 200 ms added latency
per hub call, against Azurite (the real Table Storage registry) and the emulator over HTTPS.

Serial would be 20 jobs × 3 calls × 0.2 s = 12 s; the target is ≤ 2 s, and the tick must not grow with the
number of finished runs (it reads the active-jobs index, never the runs table). The emulator runs one job
per resource and queues the rest, and a queued job has no checkpoints to ask for, so the worst case (every
job running: status, events and checkpoints each) is measured too, by reporting every job as running."""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from shared.azure.hub import Hub
from shared.run import states
from shared.stages.polling import poll_tick
from shared.store.registry import RunRecord

ACTIVE, FINISHED, LATENCY_MS = 20, 10_000, 200


class EveryJobRunning:
    """The real hub, but every job reads as running, so the tick asks for checkpoints too (worst case)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def retrieve(self, job_id: str) -> Any:
        return dataclasses.replace(self._hub.retrieve(job_id), status="running")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hub, name)


def _finished_runs(deps: Any, count: int) -> None:
    """Insert finished runs in batches of 100 (one entity group transaction each)."""
    from azure.data.tables import TableServiceClient
    table = TableServiceClient.from_connection_string(deps.settings.storage_connection).get_table_client(
        f"{deps.settings.table_prefix}runs")
    for start in range(0, count, 100):
        table.submit_transaction([("create", {
            "PartitionKey": "run", "RowKey": f"done-{i:05d}", "source": f"datasets/done-{i}.jsonl",
            "state": "deployed:prod", "job_id": f"ftjob-done{i}", "job_status": "succeeded",
            "settings_json": "{}", "environments_json": '["dev","test","prod"]'})
            for i in range(start, min(count, start + 100))])


def _active_jobs(deps: Any, count: int) -> None:
    client = deps.openai_client()  # on the dated GA api-version: its file upload has no expires_after
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(20)]
    file_id = client.files.create(file=("bench.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()),
                                  purpose="fine-tune").id
    for i in range(count):
        job = client.fine_tuning.jobs.create(model="gpt-4.1-mini-2025-04-14", training_file=file_id, seed=i)
        run_id = f"active-{i:02d}"
        deps.registry.create_run(RunRecord(run_id=run_id, source="bench", state=states.ACCEPTED), actor="bench")
        deps.registry.transition(run_id, states.UPLOADING, actor="bench")
        deps.registry.transition(run_id, states.TRAINING, actor="bench", job_id=job.id)
        deps.registry.track_job(run_id, job.id)


def with_hub(deps: Any, hub: Any) -> Any:
    """The same deps whose hub port answers with `hub` (one client for the whole measurement)."""
    return dataclasses.replace(deps, hub_port=lambda *, max_retries=6: hub)


def _tick(deps: Any, hub: Any, label: str) -> float:
    summary = poll_tick(with_hub(deps, hub))
    print(f"  {label:<44} {summary.seconds:6.2f} s  ({summary.jobs} jobs, {summary.hub_calls} hub calls, "
          f"at most {summary.max_in_flight} in flight, errors {summary.errors})", flush=True)
    return summary.seconds


def main() -> None:
    from local.azurite import Azurite
    from local.emulator.server import EmulatorServer
    from local.settings import emulator_topology, isolated_deps

    with Azurite() as azurite, EmulatorServer(emulator_topology(), seed=11) as emulator:
        deps = isolated_deps(azurite, emulator)
        emulator.control.config(file_processing=0, validation=0.2, queue=0.2, training=36_000)
        _active_jobs(deps, ACTIVE)
        time.sleep(0.5)                                  # validated; one running, the rest queued
        hub = deps.hub(max_retries=2)
        poll_tick(with_hub(deps, hub))                   # first look: history, statuses (not measured)
        poll_tick(with_hub(deps, EveryJobRunning(hub)))
        _tick(deps, EveryJobRunning(hub), "no added latency, every job running")
        emulator.control.faults(latency_ms=LATENCY_MS)
        concurrency = deps.settings.poll_concurrency
        print(f"poll tick, {ACTIVE} active jobs, {LATENCY_MS} ms per hub call, POLL_CONCURRENCY={concurrency} "
              f"(serial: {ACTIVE * 3 * LATENCY_MS / 1000:.0f} s; target ≤ 2 s)")
        base = _tick(deps, hub, "0 finished runs")
        t0 = time.monotonic()
        _finished_runs(deps, FINISHED)
        print(f"  (inserted {FINISHED:,} finished runs in {time.monotonic() - t0:.1f} s)")
        after = _tick(deps, hub, f"{FINISHED:,} finished runs")
        _tick(deps, EveryJobRunning(hub), f"{FINISHED:,} finished, every job running")
        print(f"  finished runs changed the tick by {after - base:+.2f} s")


if __name__ == "__main__":
    main()
