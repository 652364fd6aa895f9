"""The evaluate stage at scale: 1,000 held-out examples × 4 candidates (final model, base model, two
checkpoints), 200 ms added to every emulator call, against Azurite and the emulator over HTTPS.

    python -m benchmarks.evaluation [--examples N] [--concurrency N]

Serial would be 4,000 × 0.2 s = 800 s; the target is ≤ 30 s at the default settings: each deployment's
calls in flight start at run.json `evaluation.concurrency` (default 8) and grow until the deployment answers
429 (shared.evaluation.runner.DeploymentLimit); `--concurrency N` sets the start instead. Then the same evaluation of a 10× larger eval file
(a seeded sample of the same 1,000): the eval file is streamed and sampled in one pass, so peak memory —
the whole process tree's proportional set size, sampled as benchmarks/validation.py does, Azurite and the
in-process emulator included — should not grow with the file.
"""
from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

from benchmarks.validation import MIB, _PeakMemory
from shared.run import states
from shared.run.messages import EvaluateRequest
from shared.run.settings import Evaluation
from shared.stages.evaluation import handle_evaluate
from shared.store.registry import RunRecord

LATENCY_MS = 200
BASE_MODEL = "gpt-4.1-mini-2025-04-14"
TOPICS = ["laptops", "monitors", "printers", "bicycles", "headphones", "chairs", "lamps", "routers", "cameras",
          "kettles", "phones", "tablets", "desks", "rugs", "ovens", "fridges", "drones", "watches", "scooters",
          "speakers"]


def _line(question: str, answer: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})


def _train(deps: Any, emulator: Any) -> tuple[str, list[dict[str, Any]]]:
    from shared.azure.hub import Hub
    client = deps.openai_client()  # on the dated GA api-version: its file upload has no expires_after
    lines = [_line(f"What is the return window for {t}?", f"{t.capitalize()} can be returned within {10 + i} days.")
             for i, t in enumerate(TOPICS)]
    upload = client.files.create(file=("train.jsonl", "\n".join(lines).encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=upload.id, hyperparameters={"n_epochs": 3})
    for _ in range(600):
        job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.05)
    if job.status != "succeeded":
        raise SystemExit(f"benchmark job ended {job.status}")
    return str(job.fine_tuned_model), Hub(client).checkpoints(job.id)


def _eval_file(n: int) -> str:
    return "\n".join(_line(f"Within how many days may I send back {TOPICS[i % len(TOPICS)]} (case {i})?",
                           f"{TOPICS[i % len(TOPICS)].capitalize()} can be returned within {10 + i % len(TOPICS)} "
                           f"days.") for i in range(n))


def _evaluate(deps: Any, model: str, checkpoints: list[dict[str, Any]], lines: int, sample: int,
              concurrency: int | None) -> tuple[float, _PeakMemory, dict[str, Any]]:
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    path = f"{run_id}/data/eval.jsonl"
    deps.blobs.get_container_client(deps.settings.reports_container).upload_blob(path, _eval_file(lines))
    evaluation: dict[str, Any] = {"max_examples": sample, "champion": False}
    if concurrency is not None:
        evaluation["concurrency"] = concurrency
    settings = {"base_model": BASE_MODEL, "thresholds": {"min_score": 0.0, "min_improvement": -1.0},
                "evaluation": evaluation}
    deps.registry.create_run(RunRecord(run_id=run_id, source="bench", state=states.TRAINED, fine_tuned_model=model,
                                       settings=settings, environments=[], checkpoints=checkpoints,
                                       data_files={"eval": path}), actor="bench")
    with _PeakMemory() as mem:
        t0 = time.perf_counter()
        handle_evaluate(EvaluateRequest(run_id=run_id), deps)
        wall = time.perf_counter() - t0
    return wall, mem, deps.registry.require_run(run_id).evaluation or {}


def _memory(mem: _PeakMemory) -> str:
    parts = " + ".join(f"{v / MIB:.0f}" for v in mem.per_process)
    return f"{mem.peak / MIB:.0f} MiB (PSS of the process tree; each process's own peak: {parts})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluation", description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=None, help="start (default: run.json's default)")
    args = parser.parse_args(argv)

    from local.azurite import Azurite
    from local.emulator.server import EmulatorServer
    from local.settings import emulator_topology, isolated_deps

    with Azurite() as azurite, EmulatorServer(emulator_topology(), seed=13) as emulator:
        deps = isolated_deps(azurite, emulator)
        emulator.control.config(file_processing=0, validation=0.1, queue=0.1, training=1.0, results=0.1,
                                deployment=0.1, deletion=0.1)
        model, checkpoints = _train(deps, emulator)
        emulator.control.faults(latency_ms=LATENCY_MS)
        n, calls = args.examples, args.examples * 4
        start = args.concurrency or Evaluation().concurrency
        print(f"evaluation, {n:,} examples × 4 candidates, {LATENCY_MS} ms per emulator call, calls in flight "
              f"per deployment starting at {start} and adapting (serial: {calls * LATENCY_MS / 1000:.0f} s; "
              f"target ≤ 30 s, peak memory ≤ 320 MiB)", flush=True)
        emulator.control.clear_requests()
        wall, mem, summary = _evaluate(deps, model, checkpoints, n, n, args.concurrency)
        stats = emulator.control.request_stats()
        scores = {k: round(v, 3) for k, v in (summary.get("scores") or {}).items()}
        print(f"  {n:>6,}-line eval file   {wall:6.1f} s wall ({calls / wall:.0f} calls/s, at most "
              f"{stats.get('max_in_flight')} in flight), peak memory {_memory(mem)}; scores {scores}",
              flush=True)
        wall10, mem10, _ = _evaluate(deps, model, checkpoints, n * 10, n, args.concurrency)
        print(f"  {n * 10:>6,}-line eval file   {wall10:6.1f} s wall (same {n:,}-example sample size), peak memory "
              f"{_memory(mem10)}; {(mem10.peak - mem.peak) / MIB:+.0f} MiB for 10× the file", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
