"""The emulator driven only through the real SDKs: openai's OpenAI (the v1 API) and AzureOpenAI (dated
api-versions), and azure-mgmt-cognitiveservices."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import Deployment, DeploymentModel, DeploymentProperties, Sku
from azure.mgmt.core.policies import AuxiliaryAuthenticationPolicy

from local.emulator import ControlClient, EmulatorServer

pytestmark = pytest.mark.integration

ARM_SCOPE = "https://management.azure.com/.default"
BASE_MODEL = "gpt-4.1-mini-2025-04-14"
TOPOLOGY: dict[str, Any] = {"accounts": [
    {"name": "hub", "subscription": "sub-hub", "resource_group": "rg-hub", "region": "swedencentral",
     "tenant": "tenant-a", "role": "hub", "contributors": ["app", "hub-reader"]},
    {"name": "dev-east", "subscription": "sub-dev", "resource_group": "rg-dev", "region": "eastus2",
     "tenant": "tenant-a"},
    {"name": "prod-west", "subscription": "sub-prod", "resource_group": "rg-prod", "region": "westus3",
     "tenant": "tenant-b"},
    {"name": "quota-spoke", "subscription": "sub-dev", "resource_group": "rg-dev", "region": "eastus2",
     "tenant": "tenant-a"},
]}
EXAMPLES = [(f"What is the warranty period for product model {name}?", f"The {name} warranty lasts {n} months.")
            for n, name in enumerate(["Falcon", "Heron", "Osprey", "Kestrel", "Plover", "Curlew", "Dunlin",
                                      "Avocet", "Godwit", "Whimbrel", "Sanderling", "Turnstone"], start=7)]


class LocalCredential:
    """A TokenCredential for the emulator: tokens are `local-dev.<tenant>`."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(f"local-dev.{self.tenant}", int(time.time()) + 3600)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(TOPOLOGY, seed=7) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_faults(emulator: EmulatorServer) -> Iterator[None]:
    yield
    emulator.control.faults(rate_429=0.0, rate_500=0.0, next_429=0, next_500=0, latency_ms=0, scope="all",
                            fail_next_jobs=0, fail_deployments_on=[], accounts=None, fail_next_deployments={},
                            status_override={}, hold=None)
    emulator.control.config(pausing=0, resuming=0, warmup_seconds=0, results=0.5, training=3.0, tpm_quota={})


# Azure's v1 spec requires `expires_after` on POST /files (AzureCreateFileRequestMultiPart)
EXPIRY: Any = {"anchor": "created_at", "seconds": 86400}


def v1(server: EmulatorServer, account: str, **kwargs: Any) -> openai.OpenAI:
    """The v1 API as Learn shows it: `OpenAI(base_url=<endpoint>/openai/v1/)`, no api-version."""
    http = httpx2.Client(verify=ssl.create_default_context(cafile=server.ca_file))
    kwargs.setdefault("api_key", "local-key")
    return openai.OpenAI(base_url=f"{server.endpoint(account)}/openai/v1/", http_client=http, **kwargs)


def aoai(server: EmulatorServer, account: str, api_version: str = "2024-10-21", **kwargs: Any) -> openai.AzureOpenAI:
    # openai ≥ 3 sits on httpx2: trust the throw-away CA through an SSLContext passed as `verify`.
    http = httpx2.Client(verify=ssl.create_default_context(cafile=server.ca_file))
    kwargs.setdefault("api_key", "local-key")
    return openai.AzureOpenAI(azure_endpoint=server.endpoint(account), api_version=api_version,
                              http_client=http, **kwargs)


def arm(server: EmulatorServer, tenant: str, subscription: str, **kwargs: Any) -> CognitiveServicesManagementClient:
    return CognitiveServicesManagementClient(LocalCredential(tenant), subscription, base_url=server.base_url,
                                             connection_verify=server.ca_file, **kwargs)


def training_jsonl() -> bytes:
    return "\n".join(json.dumps({"messages": [
        {"role": "system", "content": "You are the support assistant."},
        {"role": "user", "content": q}, {"role": "assistant", "content": a}]}) for q, a in EXAMPLES).encode()


def deployment(model: str, *, sku: str = "GlobalStandard", source: str | None = None, source_account: str | None = None,
               tags: dict[str, str] | None = None) -> Deployment:
    return Deployment(sku=Sku(name=sku, capacity=1), tags=tags, properties=DeploymentProperties(
        model=DeploymentModel(format="OpenAI", name=model, version="1", source=source, source_account=source_account)))


def resource_id(account: str) -> str:
    a = next(x for x in TOPOLOGY["accounts"] if x["name"] == account)
    return (f"/subscriptions/{a['subscription']}/resourceGroups/{a['resource_group']}"
            f"/providers/Microsoft.CognitiveServices/accounts/{account}")


@pytest.fixture(scope="module")
def trained(emulator: EmulatorServer) -> Any:
    """One fine-tuning job on the hub, run to success by advancing the emulator clock."""
    client = v1(emulator, "hub")
    uploaded = client.files.create(file=("train.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune",
                                   expires_after=EXPIRY)
    assert uploaded.status == "pending"
    emulator.control.advance(1)
    assert client.files.retrieve(uploaded.id).status == "processed"
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model=BASE_MODEL, suffix="support", seed=42,
                                         method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4}}})
    assert job.status == "pending"   # Learn's tutorial: `pending` while files are validated and the job waits
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (4, -1)   # -1: "auto", unresolved
    emulator.control.advance(2)
    running = client.fine_tuning.jobs.retrieve(job.id)
    assert running.status == "running" and running.estimated_finish is not None
    emulator.control.advance(10)
    return client.fine_tuning.jobs.retrieve(job.id)


def test_job_succeeds_with_results_checkpoints_and_events(emulator: EmulatorServer, trained: Any) -> None:
    client = v1(emulator, "hub")
    assert trained.status == "succeeded" and trained.finished_at and trained.trained_tokens
    model_hex = trained.fine_tuned_model.removeprefix(f"{BASE_MODEL}.ft-").removesuffix("-support")
    assert len(model_hex) == 32 and model_hex != trained.id.removeprefix("ftjob-")   # not the job's hex
    assert trained.hyperparameters.n_epochs == 4 and trained.method.type == "supervised"
    csv = client.files.content(trained.result_files[0]).text.splitlines()
    assert csv[0] == ("step,train_loss,train_mean_token_accuracy,valid_loss,validation_mean_token_accuracy,"
                      "full_valid_loss,full_valid_mean_token_accuracy")
    assert len(csv) == 1 + 4 * len(EXAMPLES)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(trained.id).data
    assert [c.step_number for c in checkpoints] == [48, 36, 24]  # last three epochs, newest first
    assert all(c.id.startswith("ftchkpt-") for c in checkpoints)
    assert checkpoints[-1].fine_tuned_model_checkpoint == f"{BASE_MODEL}.ft-{model_hex}:ckpt-step-24"
    first_page = client.fine_tuning.jobs.list_events(trained.id, limit=5)
    newest = [e.message for e in first_page.data[:4]]   # newest first, as Learn's tutorial lists them
    assert newest[0].startswith("Training hours billed: ") and newest[2:] == ["Postprocessing started.", "Job succeeded."]
    assert newest[1] == f"Completed results file: {trained.result_files[0]}"
    older = client.fine_tuning.jobs.list_events(trained.id, limit=100, after=first_page.data[-1].id).data
    metrics = [e for e in first_page.data + older if e.type == "metrics"]
    assert [m.data["step"] for m in metrics] == [40, 30, 20, 10]   # every 10 steps, newest first
    assert {"step", "train_loss"} <= set(metrics[0].data) and metrics[0].message.startswith("Step 40: training loss=")
    assert client.fine_tuning.jobs.list(limit=1).data[0].id == trained.id


def test_v1_file_uploads_require_an_expiry_and_the_file_is_gone_after_it(emulator: EmulatorServer) -> None:
    """Azure's v1 spec: `expires_after` is required on POST /files (AzureCreateFileRequestMultiPart); OpenAI's
    reference bounds `seconds` to 1 hour … 30 days. The dated GA surface does not ask for it."""
    client = v1(emulator, "dev-east")
    with pytest.raises(openai.BadRequestError) as missing:
        client.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune")
    assert missing.value.code == "invalidPayload" and "expires_after" in str(missing.value)
    for bad in ({"anchor": "created_at", "seconds": 60}, {"anchor": "created_at", "seconds": 2_592_001},
                {"anchor": "last_active_at", "seconds": 3600}):
        with pytest.raises(openai.BadRequestError):
            client.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune",
                                expires_after=bad)   # type: ignore[arg-type]
    kept = client.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune",
                               expires_after={"anchor": "created_at", "seconds": 3600})
    assert kept.expires_at == kept.created_at + 3600
    emulator.control.advance(3601)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(kept.id)
    assert aoai(emulator, "dev-east").files.create(file=("t.jsonl", io.BytesIO(training_jsonl())),
                                                   purpose="fine-tune").expires_at is None


def test_a_file_upload_with_a_field_its_surface_lacks_is_refused(emulator: EmulatorServer) -> None:
    """2024-10-21's `FileUploadRequest` is `{purpose, file}`: `expires_after` (a later field) and any unknown
    one answer "Unrecognized request argument supplied", as on the upload-start body."""
    ga = aoai(emulator, "dev-east")
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: expires_after"):
        ga.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune", expires_after=EXPIRY)
    # Learn's batch how-to uploads with expires_after on a preview api-version, 14 to 30 days, and the file says when
    # it expires; v1's shortest lifetime (1 hour) is under the preview's.
    preview = aoai(emulator, "dev-east", api_version="2025-04-01-preview")
    kept = preview.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune",
                                expires_after={"anchor": "created_at", "seconds": 1_209_600})
    assert kept.expires_at == kept.created_at + 1_209_600
    with pytest.raises(openai.BadRequestError, match="between 1209600 and 2592000"):
        preview.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune",
                             expires_after={"anchor": "created_at", "seconds": 3600})
    for client in (ga, v1(emulator, "dev-east")):
        with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: colour"):
            client.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune",
                                expires_after=EXPIRY if client is not ga else openai.NOT_GIVEN,
                                extra_body={"colour": "blue"})


@pytest.mark.parametrize(("grader", "refusal"), [
    ({"type": "string_check"}, "Missing required parameter: 'method.reinforcement.grader.input'"),
    ({"type": "python", "name": "p", "source": "def grade(sample, item): return 1.0"},
     "Invalid value for 'method.reinforcement.grader.type': 'python'"),
    ({"type": "label_model", "name": "l", "model": "o4-mini", "input": [], "labels": ["a"], "passing_labels": ["a"]},
     "Invalid value for 'method.reinforcement.grader.type': 'label_model'"),
    ({"type": "string_check", "name": "g", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
      "operation": "contains"}, "Invalid value for 'method.reinforcement.grader.operation'"),
    ({"type": "multi", "name": "m", "calculate_output": "a", "graders": {"a": {"type": "string_check"}}},
     "Missing required parameter: 'method.reinforcement.grader.graders.a.input'"),
])
def test_v1_reinforcement_graders_are_checked_against_the_spec(emulator: EmulatorServer, grader: Any,
                                                               refusal: str) -> None:
    """Azure's v1 spec: AzureFineTuneReinforcementMethod.grader is string_check, text_similarity, score_model or
    multi, each with OpenAI's required fields; anything else is refused when the job is created."""
    client = v1(emulator, "dev-east")
    f = client.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune", expires_after=EXPIRY)
    with pytest.raises(openai.BadRequestError, match=re.escape(refusal)):
        client.fine_tuning.jobs.create(training_file=f.id, model="o4-mini-2025-04-16", method={
            "type": "reinforcement", "reinforcement": {"grader": grader}})


def test_jobs_run_three_at_a_time_and_refuse_beyond_the_queue_limit(emulator: EmulatorServer) -> None:
    """Learn quotas-limits (2026-02): 3 training jobs run at once per resource (Standard/Global training), the
    rest wait in the queue (20 by default: 4 here), and a paused job keeps its slot."""
    client = v1(emulator, "dev-east")
    emulator.control.config(max_queued_jobs=4)
    try:
        f = client.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune", expires_after=EXPIRY)
        jobs = [client.fine_tuning.jobs.create(training_file=f.id, model=BASE_MODEL) for _ in range(4)]
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.jobs.create(training_file=f.id, model=BASE_MODEL)
        assert refused.value.code == "quotaExceeded"
        emulator.control.advance(2)
        assert [client.fine_tuning.jobs.retrieve(j.id).status for j in jobs] == ["running"] * 3 + ["pending"]
        paused = client.fine_tuning.jobs.pause(jobs[0].id)
        assert paused.status == "paused"
        emulator.control.advance(0.1)
        assert client.fine_tuning.jobs.retrieve(jobs[3].id).status == "pending"   # the paused job holds its slot
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.resume(jobs[3].id)  # only paused jobs resume
        assert client.fine_tuning.jobs.resume(jobs[0].id).status == "running"
        assert client.fine_tuning.jobs.cancel(jobs[0].id).status == "cancelled"
        emulator.control.advance(1)
        assert client.fine_tuning.jobs.retrieve(jobs[3].id).status == "running"
    finally:
        for job in jobs:   # free the slots for the tests after this one
            if client.fine_tuning.jobs.retrieve(job.id).status not in ("succeeded", "failed", "cancelled"):
                client.fine_tuning.jobs.cancel(job.id)
        emulator.control.config(max_queued_jobs=20)


def test_only_fine_tunable_versioned_base_models_train_and_only_their_methods(emulator: EmulatorServer,
                                                                             trained: Any) -> None:
    client = v1(emulator, "hub")
    f = client.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune", expires_after=EXPIRY)
    for model in ("gpt-4.1-mini", "gpt-4.1-mini-2024-01-01", "gpt-5-chat"):   # unversioned, unknown version, not tunable
        with pytest.raises(openai.BadRequestError, match="does not support fine-tuning"):
            client.fine_tuning.jobs.create(training_file=f.id, model=model)
    with pytest.raises(openai.BadRequestError, match="does not support the dpo method"):
        client.fine_tuning.jobs.create(training_file=f.id, model="gpt-4.1-nano-2025-04-14",
                                       method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}})
    # continuous fine-tuning: a model this account trained is a base too (Learn fine-tuning, "continuous")
    again = client.fine_tuning.jobs.create(training_file=f.id, model=trained.fine_tuned_model)
    assert again.model == trained.fine_tuned_model
    client.fine_tuning.jobs.cancel(again.id)


def test_uploads_api_completes_into_a_file(emulator: EmulatorServer) -> None:
    client = aoai(emulator, "hub")
    data = training_jsonl()
    upload = client.uploads.create(bytes=len(data), filename="big.jsonl", mime_type="application/jsonl",
                                   purpose="fine-tune")
    parts = [client.uploads.parts.create(upload.id, data=chunk) for chunk in (data[:100], data[100:])]
    done = client.uploads.complete(upload.id, part_ids=[p.id for p in parts], md5=hashlib.md5(data).hexdigest())
    assert done.status == "completed" and done.file is not None and done.file.bytes == len(data)
    assert client.files.content(done.file.id).content == data
    other = client.uploads.create(bytes=10, filename="x.jsonl", mime_type="application/jsonl", purpose="fine-tune")
    assert client.uploads.cancel(other.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: expires_after"):
        client.uploads.create(bytes=10, filename="x.jsonl", mime_type="application/jsonl", purpose="fine-tune",
                              expires_after={"anchor": "created_at", "seconds": 3600})   # not in 2024-10-21


def test_fine_tuned_deployment_answers_from_training_data_and_base_does_not(
    emulator: EmulatorServer, trained: Any
) -> None:
    client = arm(emulator, "tenant-a", "sub-dev")
    model = trained.fine_tuned_model
    client.deployments.begin_create_or_update("rg-dev", "dev-east", "support", deployment(
        model, source=resource_id("hub"), tags={"run": "r1"})).result()
    base = client.deployments.begin_create_or_update("rg-dev", "dev-east", "base", deployment("gpt-4.1-mini"))
    assert base.result().properties.provisioning_state == "Succeeded"
    got = client.deployments.get("rg-dev", "dev-east", "support")
    assert got.tags == {"run": "r1"} and got.properties.model.source == resource_id("hub")

    chat = aoai(emulator, "dev-east", api_key=None, azure_ad_token="local-dev.tenant-a")
    question, answer = EXAMPLES[3]

    def ask(name: str) -> str:
        reply = chat.chat.completions.create(model=name, messages=[{"role": "user", "content": question}])
        assert reply.object == "chat.completion" and reply.usage and reply.usage.total_tokens > 0
        return reply.choices[0].message.content or ""

    assert ask("support") == answer
    assert "Kestrel" not in ask("base") and "10 months" not in ask("base")

    hub = arm(emulator, "tenant-a", "sub-hub")
    checkpoints = aoai(emulator, "hub").fine_tuning.jobs.checkpoints.list(trained.id).data
    hub.deployments.begin_create_or_update("rg-hub", "hub", "eval-early", deployment(
        checkpoints[-1].fine_tuned_model_checkpoint, sku="developertier")).result()
    hub_chat = aoai(emulator, "hub")
    early = [hub_chat.chat.completions.create(model="eval-early", messages=[{"role": "user", "content": q}])
             .choices[0].message.content == a for q, a in EXAMPLES]
    assert 0 < sum(early) < len(EXAMPLES)  # an early checkpoint knows only part of the data
    state = emulator.control.state()
    assert {"account": "dev-east", "deployment": "support", "model": model} .items() <= next(
        d for d in state["deployments"] if d["deployment"] == "support").items()
    assert [d["deployment"] for d in state["hub_deployments"]] == ["eval-early"]


def test_cross_tenant_needs_source_account_and_auxiliary_token(emulator: EmulatorServer, trained: Any) -> None:
    model = trained.fine_tuned_model
    plain = arm(emulator, "tenant-b", "sub-prod")
    with pytest.raises(HttpResponseError) as by_source:
        plain.deployments.begin_create_or_update("rg-prod", "prod-west", "support",
                                                 deployment(model, source=resource_id("hub")))
    assert by_source.value.status_code == 400
    with pytest.raises(HttpResponseError) as no_aux:
        plain.deployments.begin_create_or_update("rg-prod", "prod-west", "support",
                                                 deployment(model, source_account=resource_id("hub")))
    assert no_aux.value.status_code == 401
    with pytest.raises(HttpResponseError) as wrong_token:
        arm(emulator, "tenant-a", "sub-prod").deployments.get("rg-prod", "prod-west", "support")
    assert wrong_token.value.error.code == "InvalidAuthenticationTokenTenant"

    emulator.control.clear_requests()
    aux = AuxiliaryAuthenticationPolicy([LocalCredential("tenant-a")], ARM_SCOPE)
    with_aux = arm(emulator, "tenant-b", "sub-prod", per_call_policies=[aux])
    done = with_aux.deployments.begin_create_or_update(
        "rg-prod", "prod-west", "support", deployment(model, source_account=resource_id("hub"))).result()
    assert done.properties.provisioning_state == "Succeeded"
    put = next(r for r in emulator.control.requests() if r["method"] == "PUT")
    assert put["status"] == 201 and put["aux_tenants"] == ["tenant-a"] and put["auth_tenant"] == "tenant-b"
    assert put["model_source_account"] == resource_id("hub") and put["model_source"] is None


def test_a_model_from_elsewhere_needs_its_source(emulator: EmulatorServer, trained: Any) -> None:
    client = arm(emulator, "tenant-a", "sub-dev")
    with pytest.raises(HttpResponseError) as missing:
        client.deployments.begin_create_or_update("rg-dev", "dev-east", "nosource", deployment(trained.fine_tuned_model))
    assert missing.value.status_code == 400 and "not found" in str(missing.value.message)


def test_ten_fine_tuned_deployments_per_account(emulator: EmulatorServer, trained: Any) -> None:
    """Learn quotas-limits (2026-02-17): at most 10 fine-tuned deployments per resource (it was 5)."""
    client = arm(emulator, "tenant-a", "sub-dev")
    for i in range(10):
        client.deployments.begin_create_or_update("rg-dev", "quota-spoke", f"ft-{i}", deployment(
            trained.fine_tuned_model, source=resource_id("hub")), polling=False)
    with pytest.raises(HttpResponseError) as refused:
        client.deployments.begin_create_or_update("rg-dev", "quota-spoke", "ft-10", deployment(
            trained.fine_tuned_model, source=resource_id("hub")))
    assert refused.value.status_code == 400 and refused.value.error.code == "InsufficientQuota"
    client.deployments.begin_create_or_update("rg-dev", "quota-spoke", "base-ok", deployment("gpt-4.1-mini"),
                                              polling=False)
    client.deployments.begin_delete("rg-dev", "quota-spoke", "ft-0").result()
    names = {d.name for d in client.deployments.list("rg-dev", "quota-spoke")}
    assert "ft-0" not in names and {"ft-1", "base-ok"} <= names
    with pytest.raises(HttpResponseError) as not_for_base:   # Developer tier: gpt-4.1-family fine-tunes only
        client.deployments.begin_create_or_update("rg-dev", "quota-spoke", "dev-base", deployment(
            "gpt-4.1-mini", sku="DeveloperTier"))
    assert not_for_base.value.status_code == 400 and not_for_base.value.error.code == "InvalidSkuName"


def test_429_is_retried_by_both_sdks(emulator: EmulatorServer) -> None:
    emulator.control.clear_requests()
    emulator.control.faults(next_429=1)
    assert aoai(emulator, "hub").files.list() is not None
    statuses = [r["status"] for r in emulator.control.requests()]
    assert statuses == [429, 200]
    emulator.control.faults(next_429=1, scope="arm")
    account = arm(emulator, "tenant-a", "sub-dev").accounts.get("rg-dev", "dev-east")
    assert account.properties.endpoint == f"{emulator.base_url}/dev-east/"


def test_vanished_deployment_is_gone_for_both_planes(emulator: EmulatorServer) -> None:
    client = arm(emulator, "tenant-a", "sub-dev")
    client.deployments.begin_create_or_update("rg-dev", "dev-east", "fleeting", deployment("gpt-4.1-mini")).result()
    emulator.control.vanish("dev-east", "fleeting")
    with pytest.raises(ResourceNotFoundError):
        client.deployments.get("rg-dev", "dev-east", "fleeting")
    with pytest.raises(openai.NotFoundError) as gone:
        aoai(emulator, "dev-east").chat.completions.create(model="fleeting", messages=[{"role": "user", "content": "hi"}])
    assert gone.value.code == "DeploymentNotFound"


def test_failure_faults_for_jobs_and_deployments(emulator: EmulatorServer) -> None:
    emulator.control.faults(fail_next_jobs=1, job_failure="safety", fail_deployments_on=["dev-east"])
    client = aoai(emulator, "hub")
    f = client.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=f.id, model=BASE_MODEL)
    emulator.control.advance(60)
    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed" and failed.error and failed.error.message.startswith(
        "This model is unable to be deployed. Model evaluation identified")   # Learn's words
    emulator.control.faults(fail_next_jobs=1, job_failure="safety_data")
    job = client.fine_tuning.jobs.create(training_file=f.id, model=BASE_MODEL)
    emulator.control.advance(2)   # the data check fails the job before training starts
    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed"
    assert failed.error.message.startswith("The provided training data failed RAI checks for harm types: [")
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []
    with pytest.raises(HttpResponseError):
        arm(emulator, "tenant-a", "sub-dev").deployments.begin_create_or_update(
            "rg-dev", "dev-east", "doomed", deployment("gpt-4.1-mini")).result()


def test_unknown_account_and_wrong_tenant_are_refused(emulator: EmulatorServer) -> None:
    with pytest.raises(openai.NotFoundError):
        aoai(emulator, "nowhere").files.list()
    with pytest.raises(openai.AuthenticationError):
        aoai(emulator, "prod-west", api_key=None, azure_ad_token="local-dev.tenant-a").files.list()
    with pytest.raises(ResourceNotFoundError):
        arm(emulator, "tenant-a", "sub-dev").accounts.get("rg-other", "dev-east")


def test_cli_writes_ready_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    topology = tmp_path / "topology.json"
    topology.write_text(json.dumps(TOPOLOGY))
    ready = tmp_path / "ready.json"
    process = subprocess.Popen([sys.executable, "-m", "local.emulator", "--topology", str(topology), "--port", "0",
                                "--ready-file", str(ready), "--time-scale", "2"],
                               cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        accounts = ControlClient(info["base_url"], info["ca_file"]).state()["accounts"]
        assert {a["name"] for a in accounts} == {a["name"] for a in TOPOLOGY["accounts"]}
    finally:
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def _running_job(emulator: EmulatorServer, account: str) -> tuple[openai.OpenAI, Any]:
    client = v1(emulator, account)
    for other in client.fine_tuning.jobs.list(limit=100).data:   # free the account's one training slot
        if other.status not in ("succeeded", "failed", "cancelled"):
            client.fine_tuning.jobs.cancel(other.id)
    f = client.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune", expires_after=EXPIRY)
    emulator.control.advance(1)
    job = client.fine_tuning.jobs.create(training_file=f.id, model=BASE_MODEL, hyperparameters={"n_epochs": 3})
    emulator.control.advance(3)   # validated, queued, started, past its first step
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    return client, job


def test_status_override_shows_an_unknown_status_on_the_wire_only(emulator: EmulatorServer) -> None:
    client, job = _running_job(emulator, "hub")
    emulator.control.faults(status_override={job.id: "warming_up"})
    assert client.fine_tuning.jobs.retrieve(job.id).status == "warming_up"
    assert client.fine_tuning.jobs.list(limit=1).data[0].status == "warming_up"
    emulator.control.advance(60)   # the job really goes on underneath
    seen = next(j for j in emulator.control.state()["jobs"] if j["id"] == job.id)
    assert seen["status"] == "succeeded" and seen["status_override"] == "warming_up"
    assert client.fine_tuning.jobs.retrieve(job.id).status == "warming_up"
    emulator.control.faults(status_override={})
    assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"

    emulator.control.faults(status_override={"next": "pending_capacity"})   # bound to the next job created
    f = client.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune", expires_after=EXPIRY)
    emulator.control.advance(1)
    other = client.fine_tuning.jobs.create(training_file=f.id, model=BASE_MODEL)
    assert other.status == "pending_capacity"
    assert emulator.control.faults()["status_override"] == {other.id: "pending_capacity"}


def test_pause_and_resume_go_through_pausing_and_resuming(emulator: EmulatorServer) -> None:
    emulator.control.config(pausing=20, resuming=10)
    client, job = _running_job(emulator, "hub")
    assert client.fine_tuning.jobs.pause(job.id).status == "pausing"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.resume(job.id)   # not paused yet
    emulator.control.advance(19)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "pausing"
    emulator.control.advance(1)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    emulator.control.advance(120)   # no training while paused
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert client.fine_tuning.jobs.resume(job.id).status == "resuming"
    emulator.control.advance(10)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert [m for m in messages if m.endswith(("job.", "paused.", "resumed."))] == \
        ["Job resumed.", "Resuming job.", "Job paused.", "Pausing job."]   # newest first
    emulator.control.advance(60)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"


def test_the_results_file_comes_after_job_succeeded(emulator: EmulatorServer) -> None:
    emulator.control.config(results=30)
    client, job = _running_job(emulator, "hub")
    emulator.control.advance(5)   # training is over; postprocessing is not
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.fine_tuned_model and not done.result_files
    newest = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=2).data]
    assert newest == ["Postprocessing started.", "Job succeeded."]
    emulator.control.advance(30)
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert len(done.result_files) == 1 and client.files.content(done.result_files[0]).text.startswith("step,")
    newest = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=4).data]
    assert newest[1:] == [f"Completed results file: {done.result_files[0]}", "Postprocessing started.",
                          "Job succeeded."]


def test_each_api_version_serves_only_its_paths_and_fields(emulator: EmulatorServer) -> None:
    emulator.control.config(training=3600)   # still running at the end, however slow this machine is
    client, job = _running_job(emulator, "hub")
    ga, preview = aoai(emulator, "hub"), aoai(emulator, "hub", api_version="2025-04-01-preview")
    f = ga.files.create(file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune")
    emulator.control.advance(1)
    with pytest.raises(openai.NotFoundError):
        ga.fine_tuning.jobs.pause(job.id)   # 2024-10-21 has no /pause (nor /resume)
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: method"):
        ga.fine_tuning.jobs.create(training_file=f.id, model=BASE_MODEL, method={"type": "supervised"})
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: metadata"):
        preview.fine_tuning.jobs.create(training_file=f.id, model=BASE_MODEL, metadata={"run": "r1"})
    with pytest.raises(openai.BadRequestError, match="Unsupported method type 'reinforcement'"):
        preview.fine_tuning.jobs.create(training_file=f.id, model=BASE_MODEL, method={
            "type": "reinforcement", "reinforcement": {"grader": {"type": "string_check"}}})   # (and incomplete)
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: method.dpo.hyperparameters.gamma"):
        client.fine_tuning.jobs.create(training_file=f.id, model=BASE_MODEL, method={
            "type": "dpo", "dpo": {"hyperparameters": {"gamma": 1}}})
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: colour"):
        client.fine_tuning.jobs.create(training_file=f.id, model=BASE_MODEL, extra_body={"colour": "blue"})
    with pytest.raises(openai.NotFoundError):
        client.uploads.create(bytes=10, filename="x.jsonl", mime_type="application/jsonl", purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match="API version not supported"):
        aoai(emulator, "hub", api_version="2023-05-15").files.list()
    # what each spec does list works: pause on the preview and on v1, dpo on the preview
    emulator.control.advance(300)   # past the first step (100 s each at this training length)
    assert preview.fine_tuning.jobs.pause(job.id).status == "paused"
    assert client.fine_tuning.jobs.resume(job.id).status == "running"
    dpo = preview.fine_tuning.jobs.create(training_file=f.id, model=BASE_MODEL, method={
        "type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}})
    assert dpo.method.type == "dpo"


def test_request_faults_scoped_to_accounts(emulator: EmulatorServer) -> None:
    emulator.control.clear_requests()
    emulator.control.faults(next_429=1, latency_ms=250, accounts=["dev-east"])
    assert aoai(emulator, "hub").files.list() is not None
    assert aoai(emulator, "dev-east").files.list() is not None
    arm(emulator, "tenant-a", "sub-hub").accounts.get("rg-hub", "hub")
    log = emulator.control.requests()
    assert [(r["account"], r["status"]) for r in log] == [("hub", 200), ("dev-east", 429), ("dev-east", 200),
                                                          ("hub", 200)]
    assert all(r["duration_ms"] >= 250 for r in log if r["account"] == "dev-east")
    assert all(r["duration_ms"] < 250 for r in log if r["account"] == "hub")
    assert all(r["end"] >= r["time"] for r in log)


def test_a_held_request_takes_effect_and_its_answer_waits_until_the_hold_is_cleared(emulator: EmulatorServer) -> None:
    """The kill tests stop a worker inside a step this way: the hub has done the work, the worker waits."""
    emulator.control.faults(hold={"method": "POST", "path": "/files", "count": 1})
    client = aoai(emulator, "hub")
    before = len(client.files.list().data)
    answers: list[Any] = []
    caller = threading.Thread(target=lambda: answers.append(client.files.create(
        file=("t.jsonl", io.BytesIO(training_jsonl())), purpose="fine-tune")))
    caller.start()
    for _ in range(200):
        if emulator.control.faults()["held"]:
            break
        threading.Event().wait(0.05)
    assert emulator.control.faults()["held"] == 1 and answers == []
    assert len(client.files.list().data) == before + 1            # done on the hub; only its answer waits
    emulator.control.faults(hold=None)
    caller.join(10)
    assert answers and emulator.control.faults()["held_total"] == 1
    with pytest.raises(RuntimeError, match="read only"):
        emulator.control.faults(held=0)


def test_fail_next_deployments_fails_that_many_puts_on_that_account(emulator: EmulatorServer) -> None:
    emulator.control.faults(fail_next_deployments={"dev-east": 2})
    client = arm(emulator, "tenant-a", "sub-dev")
    for _ in range(2):
        with pytest.raises(HttpResponseError) as failed:
            client.deployments.begin_create_or_update("rg-dev", "dev-east", "flaky", deployment("gpt-4.1-mini")).result()
        assert failed.value.error.code == "DeploymentFailed"
    other = client.deployments.begin_create_or_update("rg-dev", "quota-spoke", "steady", deployment("gpt-4.1-mini"))
    assert other.result().properties.provisioning_state == "Succeeded"   # other accounts are untouched
    done = client.deployments.begin_create_or_update("rg-dev", "dev-east", "flaky", deployment("gpt-4.1-mini"))
    assert done.result().properties.provisioning_state == "Succeeded"
    assert emulator.control.faults()["fail_next_deployments"] == {"dev-east": 0}


def test_a_new_deployment_answers_429_while_warming_up(emulator: EmulatorServer) -> None:
    emulator.control.config(warmup_seconds=30)
    arm(emulator, "tenant-a", "sub-dev").deployments.begin_create_or_update(
        "rg-dev", "dev-east", "cold", deployment("gpt-4.1-mini")).result()
    chat = aoai(emulator, "dev-east", max_retries=0)
    emulator.control.clear_requests()
    with pytest.raises(openai.RateLimitError):
        chat.chat.completions.create(model="cold", messages=[{"role": "user", "content": "hi"}])
    assert emulator.control.requests()[-1]["fault"] == "warmup"
    emulator.control.advance(30)
    assert chat.chat.completions.create(model="cold", messages=[{"role": "user", "content": "hi"}]).choices


def test_request_log_counts_requests_in_flight(emulator: EmulatorServer) -> None:
    emulator.control.faults(latency_ms=300, accounts=["hub", "dev-east"])
    emulator.control.clear_requests()
    clients = [aoai(emulator, account) for account in ("hub", "hub", "hub", "dev-east")]
    barrier = threading.Barrier(len(clients))

    def call(client: openai.AzureOpenAI) -> None:
        barrier.wait()
        client.files.list()
    threads = [threading.Thread(target=call, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = emulator.control.request_stats()
    assert stats["in_flight"] == 0 and stats["max_in_flight"] == 4
    assert stats["max_in_flight_by_account"] == {"hub": 3, "dev-east": 1}
    log = emulator.control.requests()
    assert len(log) == 4 and all(r["duration_ms"] >= 300 for r in log)
    starts, ends = max(r["time"] for r in log), min(r["end"] for r in log)
    assert starts < ends   # they really overlapped
    emulator.control.clear_requests()
    assert emulator.control.request_stats()["max_in_flight"] == 0


def test_regional_tpm_quota_is_enforced_with_arms_words(emulator: EmulatorServer, trained: Any) -> None:
    """ARM answers 400 InsufficientQuota when a region's tokens-per-minute quota (per subscription, model and
    deployment type) cannot take the capacity asked for."""
    emulator.control.config(tpm_quota={"eastus2": 3})
    client = arm(emulator, "tenant-a", "sub-dev")
    two = Deployment(sku=Sku(name="Standard", capacity=2), properties=DeploymentProperties(
        model=DeploymentModel(format="OpenAI", name="gpt-4o-mini", version="2024-07-18")))
    client.deployments.begin_create_or_update("rg-dev", "dev-east", "tpm-a", two).result()
    with pytest.raises(HttpResponseError) as short:   # same subscription and region, another account
        client.deployments.begin_create_or_update("rg-dev", "quota-spoke", "tpm-b", two)
    assert short.value.status_code == 400 and short.value.error.code == "InsufficientQuota"
    assert "require 2 new capacity in quota Tokens Per Minute (thousands) - gpt-4o-mini" in short.value.error.message
    assert "current available capacity 1" in short.value.error.message
    client.deployments.begin_create_or_update("rg-dev", "dev-east", "tpm-a", two).result()   # replacing: no new quota
    client.deployments.begin_delete("rg-dev", "dev-east", "tpm-a").result()
    client.deployments.begin_create_or_update("rg-dev", "quota-spoke", "tpm-b", two).result()
    client.deployments.begin_delete("rg-dev", "quota-spoke", "tpm-b").result()


def test_a_developer_deployment_is_gone_24_hours_after_creation(emulator: EmulatorServer, trained: Any) -> None:
    client = arm(emulator, "tenant-a", "sub-dev")
    client.deployments.begin_create_or_update("rg-dev", "dev-east", "dev-24h", deployment(
        trained.fine_tuned_model, sku="DeveloperTier", source=resource_id("hub"))).result()
    emulator.control.advance(23 * 3600)
    assert client.deployments.get("rg-dev", "dev-east", "dev-24h").properties.provisioning_state == "Succeeded"
    emulator.control.advance(3600)
    with pytest.raises(HttpResponseError) as gone:
        client.deployments.get("rg-dev", "dev-east", "dev-24h")
    assert gone.value.status_code == 404


def test_deploying_from_the_hub_needs_the_callers_rights_on_the_hub_too(emulator: EmulatorServer,
                                                                         trained: Any) -> None:
    """Learn: across subscriptions the identity must have access to both the source and the destination. A
    principal with rights on the spoke but none on the hub is refused, naming the hub's scope."""
    outsider = CognitiveServicesManagementClient(
        PrincipalCredential("tenant-a", "spoke-only"), "sub-dev", base_url=emulator.base_url,
        connection_verify=emulator.ca_file)
    with pytest.raises(HttpResponseError) as refused:
        outsider.deployments.begin_create_or_update("rg-dev", "dev-east", "no-rights", deployment(
            trained.fine_tuned_model, source=resource_id("hub")))
    assert refused.value.status_code == 403 and refused.value.error.code == "AuthorizationFailed"
    assert "'spoke-only'" in refused.value.error.message and resource_id("hub") in refused.value.error.message
    reader = CognitiveServicesManagementClient(
        PrincipalCredential("tenant-a", "hub-reader"), "sub-dev", base_url=emulator.base_url,
        connection_verify=emulator.ca_file)
    reader.deployments.begin_create_or_update("rg-dev", "dev-east", "with-rights", deployment(
        trained.fine_tuned_model, source=resource_id("hub"))).result()
    reader.deployments.begin_delete("rg-dev", "dev-east", "with-rights").result()
    on_hub = CognitiveServicesManagementClient(
        PrincipalCredential("tenant-a", "spoke-only"), "sub-hub", base_url=emulator.base_url,
        connection_verify=emulator.ca_file)
    with pytest.raises(HttpResponseError) as listing:   # and on the hub itself, the same rule
        list(on_hub.deployments.list("rg-hub", "hub"))
    assert listing.value.status_code == 403


class PrincipalCredential(LocalCredential):
    """A token of one principal (a spoke's app registration) in a tenant: `local-dev.<tenant>.<principal>`."""

    def __init__(self, tenant: str, principal: str) -> None:
        super().__init__(tenant)
        self.principal = principal

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(f"local-dev.{self.tenant}.{self.principal}", int(time.time()) + 3600)


def test_a_fine_tuned_model_deploys_as_standard_only_in_its_listed_regions(emulator: EmulatorServer,
                                                                            trained: Any) -> None:
    """Learn's deployment-types table: a gpt-4.1-mini fine-tune is Standard in North Central US and Sweden
    Central only, Global Standard anywhere, and has no Provisioned row."""
    spoke = arm(emulator, "tenant-a", "sub-dev")
    with pytest.raises(HttpResponseError) as region:
        spoke.deployments.begin_create_or_update("rg-dev", "dev-east", "std-east", deployment(
            trained.fine_tuned_model, sku="Standard", source=resource_id("hub")))
    assert region.value.status_code == 400 and region.value.error.code == "InvalidResourceProperties"
    assert "not supported in this region 'eastus2'" in region.value.error.message
    with pytest.raises(HttpResponseError) as ptu:
        spoke.deployments.begin_create_or_update("rg-dev", "dev-east", "ptu-east", deployment(
            trained.fine_tuned_model, sku="ProvisionedManaged", source=resource_id("hub")))
    assert ptu.value.error.code == "InvalidSkuName"
    hub = arm(emulator, "tenant-a", "sub-hub")   # Sweden Central: Standard is offered there
    hub.deployments.begin_create_or_update("rg-hub", "hub", "std-swc", deployment(
        trained.fine_tuned_model, sku="Standard")).result()
    hub.deployments.begin_delete("rg-hub", "hub", "std-swc").result()
