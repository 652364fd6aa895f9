"""A fine-tuning job trained to success on the emulator through the real openai SDK, its clock advanced
instead of waited on: for tests that need a fine-tuned model to exist before the stage they test."""
from __future__ import annotations

from typing import Any

import openai

from shared.run.hub_api import FILE_EXPIRY


def file_expiry(client: Any) -> Any:
    """`expires_after` where the surface has it (v1 requires it; 2024-10-21's upload refuses it), as ftops sends."""
    return FILE_EXPIRY if "/openai/v1" in str(client.base_url) else openai.NOT_GIVEN


def trained_job(client: Any, emulator: Any, data: bytes, *, base_model: str, suffix: str | None = None) -> Any:
    """Upload `data` as train.jsonl, fine-tune `base_model` on it (the model named with `suffix`); the job, succeeded."""
    upload = client.files.create(file=("train.jsonl", data), purpose="fine-tune", expires_after=file_expiry(client))
    for _ in range(60):
        if client.files.retrieve(upload.id).status == "processed":
            break
        emulator.control.advance(5)
    job = client.fine_tuning.jobs.create(model=base_model, training_file=upload.id,
                                         suffix=suffix if suffix is not None else openai.NOT_GIVEN)
    for _ in range(200):
        job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status in ("succeeded", "failed", "cancelled"):
            break
        emulator.control.advance(30)
    assert job.status == "succeeded" and job.fine_tuned_model, job
    return job
