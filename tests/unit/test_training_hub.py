"""Hub and training pieces without I/O: error sorting, the job key, job bodies, results parsing, streaming."""
from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import httpx2
import openai
import pytest

from shared.azure.hub import (
    Hub,
    HubNotFound,
    HubPermanentError,
    HubQuotaExceeded,
    HubTransientError,
    HubUnsupported,
    error_from_openai,
    parse_results_csv,
)
from shared.run.hub_api import SURFACES
from shared.run.settings import RunSettings
from shared.stages.polling import describe_failure
from shared.stages.training import job_key, job_spec
from shared.store.blob_io import BlobReader, upload_parts

REQUEST = httpx2.Request("POST", "https://hub.example/openai/fine_tuning/jobs")


def status_error(status: int, code: str, message: str) -> openai.APIStatusError:
    response = httpx2.Response(status, request=REQUEST, json={"error": {"code": code, "message": message}})
    cls = {400: openai.BadRequestError, 404: openai.NotFoundError, 429: openai.RateLimitError,
           500: openai.InternalServerError}.get(status, openai.APIStatusError)
    return cls(message, response=response, body={"code": code, "message": message})


@pytest.mark.parametrize(("exc", "kind"), [
    (status_error(400, "quotaExceeded", "The quota of 20 queued fine-tuning jobs is reached."), HubQuotaExceeded),
    (status_error(400, "quotaExceeded", "The quota for files is reached. The maximum is 50."), HubQuotaExceeded),
    (status_error(429, "insufficient_quota", "You exceeded your current quota."), HubQuotaExceeded),
    (status_error(429, "429", "Rate limit exceeded; see https://aka.ms/oai/quotaincrease"), HubTransientError),
    (status_error(500, "InternalServerError", "The server had an error."), HubTransientError),
    (openai.APITimeoutError(request=REQUEST), HubTransientError),
    (openai.APIConnectionError(request=REQUEST), HubTransientError),
    (status_error(404, "NotFound", "Fine-tuning job 'x' not found."), HubNotFound),
    (status_error(400, "invalidPayload", "Unsupported method type 'x'."), HubPermanentError),
])
def test_hub_errors_are_sorted_into_wait_retry_or_fail(exc: Exception, kind: type) -> None:
    error = error_from_openai(exc, "create job")
    assert type(error) is kind
    assert str(error).startswith("create job")


def test_a_permanent_error_carries_the_hubs_code_and_message() -> None:
    error = error_from_openai(status_error(400, "invalidPayload", "suffix must be at most 40 characters."), "create job")
    assert error.as_error() == {"code": "invalidPayload", "message": "create job: suffix must be at most 40 "
                                "characters.", "param": None, "status": 400}


def test_the_job_key_changes_with_what_changes_training_and_nothing_else() -> None:
    files = {"train": "a" * 64, "validation": "b" * 64}
    base = RunSettings()
    assert job_key(files, base) == job_key(dict(reversed(files.items())), base)
    assert job_key(files, base) == job_key(files, base.model_copy(update={"owner": "x", "ticket": "T-1"}))
    other = [RunSettings(seed=1), RunSettings(suffix="v2"), RunSettings(base_model="gpt-4o"),
             RunSettings.model_validate({"hyperparameters": {"n_epochs": 3}})]
    assert len({job_key(files, s) for s in [base, *other]}) == 5
    assert job_key({"train": "c" * 64}, base) != job_key(files, base)


def test_job_bodies_per_method() -> None:
    files = {"train": "file-t", "validation": "file-v"}
    supervised = job_spec(RunSettings.model_validate({"hyperparameters": {"n_epochs": 2}, "suffix": "s"}), files)
    common = {"model": supervised.model, "training_file": "file-t", "validation_file": "file-v", "seed": 42,
              "suffix": "s"}
    # v1 (the default) deprecates top-level hyperparameters: they go inside `method`
    assert supervised.body() == {**common, "method": {"type": "supervised",
                                                      "supervised": {"hyperparameters": {"n_epochs": 2}}}}
    # 2024-10-21 has no `method`: top-level hyperparameters only
    assert supervised.body(SURFACES["2024-10-21"]) == {**common, "hyperparameters": {"n_epochs": 2}}
    dpo = job_spec(RunSettings.model_validate({"method": "dpo", "hyperparameters": {"beta": 0.2}}), files).body()
    assert dpo["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}} and "hyperparameters" not in dpo
    grader = {"type": "string_check", "name": "g", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}", "operation": "eq"}
    rft = job_spec(RunSettings.model_validate({"method": "reinforcement", "grader": grader}), files).body()
    assert rft["method"]["reinforcement"]["grader"] == grader


def test_results_csv_becomes_per_step_rows_and_final_values() -> None:
    csv = (b"step,train_loss,train_mean_token_accuracy,valid_loss,validation_mean_token_accuracy,full_valid_loss,"
           b"full_valid_mean_token_accuracy\n1,1.5,0.3,1.6,0.28,,\n2,0.9,0.6,,,1.0,0.55\n")
    metrics = parse_results_csv(csv)
    assert metrics["steps"] == [
        {"step": 1, "train_loss": 1.5, "train_mean_token_accuracy": 0.3, "valid_loss": 1.6,
         "validation_mean_token_accuracy": 0.28},
        {"step": 2, "train_loss": 0.9, "train_mean_token_accuracy": 0.6, "full_valid_loss": 1.0,
         "full_valid_mean_token_accuracy": 0.55}]
    assert metrics["final"]["valid_loss"] == 1.6 and metrics["final"]["train_loss"] == 0.9


@pytest.mark.parametrize(("message", "check", "harm_types"), [
    # Learn's two sample messages (fine-tuning-safety-evaluation), word for word
    (("The provided training data failed RAI checks for harm types: [hate_fairness, self_harm, violence]. "
      "Please fix the data and try again."), "training data", ["hate_fairness", "self_harm", "violence"]),
    (("This model is unable to be deployed. Model evaluation identified that this fine tuned model scores above "
      "acceptable thresholds for [Violence, Self Harm]. Please review your training data set and resubmit the "
      "job."), "model evaluation", ["Violence", "Self Harm"]),
    ("The provided training data failed RAI checks for harm types: sexual", "training data", ["sexual"]),
])
def test_the_documented_safety_failures_name_their_check_and_harm_types(message, check, harm_types) -> None:
    described = describe_failure({"code": "whatever_azure_sends", "message": message})
    assert described["safety"] and described["safety_check"] == check and described["harm_types"] == harm_types
    assert all(h in described["reason"] for h in harm_types) and message in described["reason"]


def test_other_failures_keep_the_hubs_words_even_when_they_mention_safety() -> None:
    other = describe_failure({"code": "server_error", "message": "The job failed due to an internal error."})
    assert not other["safety"] and other["reason"] == ("The hub failed the job (server_error): The job failed "
                                                       "due to an internal error.")
    vague = describe_failure({"code": "invalid_training_file", "message": "harmful safety content filter"})
    assert not vague["safety"] and vague["harm_types"] == []
    assert "without a reason" in describe_failure(None)["message"]


class FakeBlob:
    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.chunk, self.downloads = data, chunk, 0

    def get_blob_properties(self) -> Any:
        return SimpleNamespace(size=len(self.data))

    def download_blob(self) -> Any:
        self.downloads += 1
        return SimpleNamespace(chunks=lambda: (self.data[i:i + self.chunk] for i in range(0, len(self.data), self.chunk)))


def test_blob_reader_streams_and_restarts_for_a_resend() -> None:
    blob = FakeBlob(bytes(range(256)) * 40, chunk=1000)
    reader = BlobReader(blob, len(blob.data))
    assert reader.seek(0, io.SEEK_END) == len(blob.data) and blob.downloads == 0   # length without reading
    reader.seek(0)
    first = b"".join(iter(lambda: reader.read(777), b""))
    reader.seek(0)
    assert first == blob.data == reader.read() and blob.downloads == 2
    with pytest.raises(io.UnsupportedOperation):
        reader.seek(5)


def test_parts_recut_chunks_without_holding_the_file() -> None:
    parts = list(upload_parts(iter([b"abc", b"defgh", b"ij"]), 4))
    assert parts == [b"abcd", b"efgh", b"ij"]


def test_small_files_use_one_request_and_large_ones_the_uploads_api() -> None:
    calls: list[str] = []
    client = SimpleNamespace(
        files=SimpleNamespace(create=lambda **kw: calls.append("files.create") or SimpleNamespace(id="file-1")),
        uploads=SimpleNamespace(
            create=lambda **kw: calls.append(f"uploads.create {kw['bytes']}") or SimpleNamespace(id="up-1"),
            parts=SimpleNamespace(create=lambda upload_id, data: calls.append(f"part {len(data)}")
                                  or SimpleNamespace(id=f"part-{len(calls)}")),
            complete=lambda upload_id, part_ids, md5: calls.append(f"complete {len(part_ids)}")
            or SimpleNamespace(file=SimpleNamespace(id="file-2"))))
    hub = Hub(client, surface=SURFACES["2025-04-01-preview"], multipart_threshold=100, part_size=40)
    assert hub.upload_file(FakeBlob(b"x" * 100, 30), "small.jsonl") == "file-1"
    assert hub.upload_file(FakeBlob(b"x" * 101, 30), "big.jsonl") == "file-2"
    assert calls == ["files.create", "uploads.create 101", "part 40", "part 40", "part 21", "complete 3"]
    # the v1 API has no uploads API: the Files API takes it (up to its 512 MB), nothing is refused below that
    calls.clear()
    v1 = Hub(client, surface=SURFACES["v1"], multipart_threshold=100, part_size=40)
    assert v1.upload_file(FakeBlob(b"x" * 101, 30), "big.jsonl") == "file-1" and calls == ["files.create"]


class HugeBlob(FakeBlob):
    def get_blob_properties(self) -> Any:
        return SimpleNamespace(size=600 * 1024**2)


def test_what_the_configured_hub_api_lacks_is_refused_before_any_call() -> None:
    calls: list[str] = []
    client = SimpleNamespace(
        files=SimpleNamespace(create=lambda **kw: calls.append("files.create")),
        fine_tuning=SimpleNamespace(jobs=SimpleNamespace(
            create=lambda **kw: calls.append("create"), pause=lambda job_id: calls.append("pause"),
            resume=lambda job_id: calls.append("resume"))))
    ga, preview = Hub(client, surface=SURFACES["2024-10-21"]), Hub(client, surface=SURFACES["2025-04-01-preview"])
    dpo = job_spec(RunSettings.model_validate({"method": "dpo"}), {"train": "file-t"})
    grader = {"type": "string_check", "name": "g", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}", "operation": "eq"}
    rft = job_spec(RunSettings.model_validate({"method": "reinforcement", "grader": grader}), {"train": "file-t"})
    refusals = {
        "pause on GA": lambda: ga.pause("ftjob-1"), "resume on GA": lambda: ga.resume("ftjob-1"),
        "dpo on GA": lambda: ga.create_job(dpo), "reinforcement on the preview": lambda: preview.create_job(rft),
        "600 MB on v1": lambda: Hub(client, surface=SURFACES["v1"]).upload_file(HugeBlob(b"", 1), "huge.jsonl"),
    }
    for what, call in refusals.items():
        with pytest.raises(HubUnsupported) as caught:
            call()
        assert "HUB_API_VERSION" in str(caught.value), what
    assert "needs 'v1'" in str(caught.value) or "2025-04-01-preview" in str(caught.value)
    assert calls == []


def test_an_unknown_hub_api_version_stops_start_up_naming_the_setting() -> None:
    from shared.run.config import ConfigError, Settings
    env = {"DatasetStorage": "UseDevelopmentStorage=true", "FTOPS_TRANSPORT": "local",
           "HUB_ENDPOINT": "https://hub.example", "HUB_RESOURCE_ID": "/subscriptions/s/resourceGroups/g/x/accounts/h"}
    assert Settings.from_env(env).hub.api_version == "v1"
    with pytest.raises(ConfigError, match="HUB_API_VERSION '2023-05-15'"):
        Settings.from_env({**env, "HUB_API_VERSION": "2023-05-15"})


def test_jobs_are_sent_with_versioned_model_ids() -> None:
    """Learn's examples send versioned ids; an unversioned run.json name goes out with the table's version."""
    files = {"train": "file-t"}
    assert job_spec(RunSettings(), files).model == "gpt-4.1-mini-2025-04-14"
    assert job_spec(RunSettings(base_model="gpt-4o"), files).model == "gpt-4o-2024-08-06"
    assert job_spec(RunSettings(base_model="gpt-35-turbo-1106"), files).model == "gpt-35-turbo-1106"


def test_adoption_finds_a_job_that_echoes_the_resolved_model_version() -> None:
    """After a crash, the job is found by its files and model even when the hub echoes the versioned id
    and what was sent was unversioned (older runs) — but never a job of another version."""
    def job(model: str, jid: str) -> SimpleNamespace:
        return SimpleNamespace(id=jid, status="running", model=model, training_file="file-t", validation_file=None,
                               fine_tuned_model=None, trained_tokens=None, error=None, result_files=[],
                               created_at=1, seed=42)
    jobs = [job("gpt-4o-2024-05-13", "ftjob-other"), job("gpt-4.1-mini-2025-04-14", "ftjob-mine")]
    page = SimpleNamespace(data=jobs, has_more=False)
    client = SimpleNamespace(fine_tuning=SimpleNamespace(jobs=SimpleNamespace(list=lambda **_: page)))
    hub = Hub(client)
    for sent in ("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"):
        found = hub.find_job(training_file="file-t", validation_file=None, model=sent)
        assert found is not None and found.id == "ftjob-mine"
    assert hub.find_job(training_file="file-t", validation_file=None, model="gpt-4o-2024-08-06") is None
