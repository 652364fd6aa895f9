"""Intake against Azurite: what a data scientist sees after dropping a dataset."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from shared.azure.bus import decode_local
from shared.stages.intake import handle_blob_created

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "support-bot.jsonl"


def drop(deps, name: str, body: bytes) -> None:
    deps.blobs.get_container_client(deps.settings.datasets_container).upload_blob(name, body, overwrite=True)


def queued(deps, queue: str) -> list[dict]:
    client = deps.publisher.queue_client(queue)
    return [json.loads(decode_local(m.content)["body"]) for m in client.peek_messages(max_messages=32)]


def blob_names(deps, container: str) -> set[str]:
    return {b.name for b in deps.blobs.get_container_client(container).list_blobs()}


def test_an_accepted_dataset_is_split_reported_and_handed_to_training_once(make_deps):
    deps = make_deps()
    drop(deps, "support-bot.jsonl", SAMPLE.read_bytes())
    run_id = handle_blob_created("support-bot.jsonl", deps)
    assert handle_blob_created("support-bot.jsonl", deps) == run_id   # duplicate BlobCreated: same run

    run = deps.registry.require_run(run_id)
    assert run.state == "accepted" and run.source == f"{deps.settings.datasets_container}/support-bot.jsonl"
    assert run.environments == ["dev", "test"]   # a bare drop names no owner: it stops before prod's approval
    assert run.settings["deployment_name"] == "support-bot"    # from the drop: a re-upload replaces it in place
    split = run.validation["split"]
    assert sum(split.values()) == 80 and split["eval"] > 0 and split["train"] >= 10
    assert {f"{run_id}/validation.json", f"{run_id}/validation.html", f"{run_id}/data/train.jsonl",
            f"{run_id}/data/eval.jsonl"} <= blob_names(deps, deps.settings.reports_container)
    messages = queued(deps, deps.settings.train_queue)
    assert [m["data"]["run_id"] for m in messages] == [run_id]
    assert [a["to_state"] for a in deps.registry.audit_trail(run_id)] == ["received", "validating", "accepted"]


def test_a_bad_dataset_is_quarantined_with_its_report_and_never_lost(make_deps):
    deps = make_deps()
    lines = SAMPLE.read_bytes().splitlines()[:12]
    lines[4] = b'{"messages": [{"role": "user", "content": "hi"}'   # broken JSON on line 5
    body = b"\n".join(lines) + b"\n"
    drop(deps, "broken.jsonl", body)
    run_id = handle_blob_created("broken.jsonl", deps)

    run = deps.registry.require_run(run_id)
    assert run.state == "rejected"
    report = json.loads(deps.blobs.get_blob_client(deps.settings.reports_container, f"{run_id}/validation.json")
                        .download_blob().readall())
    assert any(e["line"] == 5 for e in report["errors"])
    quarantined = deps.blobs.get_blob_client(deps.settings.quarantine_container, f"{run_id}/broken.jsonl")
    assert quarantined.download_blob().readall() == body              # byte for byte
    assert f"{run_id}/validation.html" in blob_names(deps, deps.settings.quarantine_container)
    assert "broken.jsonl" not in blob_names(deps, deps.settings.datasets_container)
    assert queued(deps, deps.settings.train_queue) == []


def test_a_file_that_is_not_a_dataset_is_rejected_not_deleted(make_deps):
    deps = make_deps()
    drop(deps, "notes.txt", b"remember the milk\n")
    run_id = handle_blob_created("notes.txt", deps)
    assert deps.registry.require_run(run_id).error["code"] == "not_a_dataset"
    assert f"{run_id}/notes.txt" in blob_names(deps, deps.settings.quarantine_container)


def test_a_folder_run_starts_only_with_run_json_and_uses_its_settings(make_deps):
    deps = make_deps()
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    drop(deps, "team/train.jsonl", b"".join(lines[:40]))
    assert handle_blob_created("team/train.jsonl", deps) is None         # data files never start a run
    drop(deps, "team/eval.jsonl", b"".join(lines[40:]))
    drop(deps, "team/run.json", json.dumps({"suffix": "support", "owner": "ana@contoso.example",
                                            "environments": ["dev", "test"]}).encode())
    run = deps.registry.require_run(handle_blob_created("team/run.json", deps))
    assert run.state == "accepted"
    assert (run.settings["suffix"], run.owner, run.environments) == ("support", "ana@contoso.example", ["dev", "test"])
    assert run.validation["split"]["eval"] == 40                        # its own eval.jsonl, not carved


def test_invalid_run_json_rejects_before_anything_reaches_the_hub(make_deps):
    deps = make_deps(INTAKE_WAIT_SECONDS="0")
    drop(deps, "typo/train.jsonl", SAMPLE.read_bytes())
    drop(deps, "typo/run.json", b'{"hyperparameters": {"n_epochs": 0}, "enviroments": ["prod"]}')
    run = deps.registry.require_run(handle_blob_created("typo/run.json", deps))
    assert run.state == "rejected"
    assert "n_epochs" in run.error["message"] and "enviroments" in run.error["message"]
    assert queued(deps, deps.settings.train_queue) == []


def test_environments_that_skip_one_are_rejected_at_intake_with_the_allowed_choices(make_deps):
    deps = make_deps(INTAKE_WAIT_SECONDS="0")
    drop(deps, "skip/train.jsonl", SAMPLE.read_bytes())
    drop(deps, "skip/run.json", b'{"environments": ["dev", "prod"], "owner": "6f1c2d3e-0000-4000-8000-0000000000b2"}')
    run = deps.registry.require_run(handle_blob_created("skip/run.json", deps))
    assert run.state == "rejected" and run.error["code"] == "invalid_settings"
    assert "['dev', 'prod'] must follow the configured order without gaps" in run.error["message"]
    assert "['dev', 'test', 'prod']" in run.error["message"]
    assert queued(deps, deps.settings.train_queue) == []


def test_a_folder_whose_train_file_never_arrives_is_reported_missing(make_deps):
    deps = make_deps(INTAKE_WAIT_SECONDS="0")
    drop(deps, "late/run.json", b"{}")
    run = deps.registry.require_run(handle_blob_created("late/run.json", deps))
    assert run.state == "rejected" and run.error["code"] == "missing_file"
    assert "late/train.jsonl" in run.error["message"]


def test_too_few_examples_to_split_is_reported_not_trained_on(make_deps):
    deps = make_deps()
    # valid, but 11: once split 10 train / 1 eval, and one example promoted a model; now refused
    drop(deps, "tiny.jsonl", b"".join(SAMPLE.read_bytes().splitlines(keepends=True)[:11]))
    run = deps.registry.require_run(handle_blob_created("tiny.jsonl", deps))
    assert run.state == "rejected" and run.error["code"] == "too_few_to_split"
    assert "11 in train.jsonl" in run.error["message"] and "at least 32" in run.error["message"]
    assert "eval.jsonl" in run.error["message"]
    report = json.loads(deps.blobs.get_blob_client(deps.settings.reports_container, f"{run.run_id}/validation.json")
                        .download_blob().readall())
    assert report["valid"] is False and [e["code"] for e in report["errors"]] == ["too_few_to_split"]
    assert f"{run.run_id}/tiny.jsonl" in blob_names(deps, deps.settings.quarantine_container)
    assert queued(deps, deps.settings.train_queue) == []


def test_a_train_command_starts_a_run_with_its_settings(make_deps):
    from shared.run.messages import TrainCommand, envelope
    from shared.stages.commands import handle_command
    deps = make_deps()
    drop(deps, "support-bot.jsonl", SAMPLE.read_bytes())
    command = TrainCommand(blob=f"{deps.settings.datasets_container}/support-bot.jsonl", settings={"suffix": "cmd", "owner": "6f1c2d3e-0000-4000-8000-0000000000b2"},
                           requested_by="mlops-portal")
    event = envelope(command, type_="ftops.command.train")
    handle_command(event, command, deps)
    [run] = deps.registry.list_runs()
    assert run.state == "accepted" and (run.settings["suffix"], run.owner) == ("cmd", "6f1c2d3e-0000-4000-8000-0000000000b2")
    # who the message names is a claim, and the trail says so (never the verified `Name <oid>` form)
    assert deps.registry.audit_trail(run.run_id)[0]["actor"] == (
        f"unverified: mlops-portal via {deps.settings.commands_queue}")
    assert run.started_by is None and run.claimed_by is None   # its owner confirms it before any gated environment


def test_an_owner_of_40000_characters_is_stored_bounded_not_retried_forever(make_deps):
    deps = make_deps()
    owner = "o" * 40_000
    drop(deps, "huge/train.jsonl", SAMPLE.read_bytes())
    drop(deps, "huge/run.json", json.dumps({"owner": owner}).encode())
    run_id = handle_blob_created("huge/run.json", deps)   # a Table property holds 32K characters: no 400
    run = deps.registry.require_run(run_id)
    assert run.state == "rejected" and run.error["code"] == "invalid_settings"    # not an owner intake takes
    assert run.error["message"].endswith("chars in all]") and len(run.error["message"]) < 32_000
    assert [a["to_state"] for a in deps.registry.audit_trail(run_id)] == ["received", "validating", "rejected"]
    report = deps.blobs.get_blob_client(deps.settings.reports_container, f"{run_id}/validation.json")
    assert report.download_blob().readall()   # the report blob keeps what the registry could not


def test_a_rejected_folder_leaves_a_nested_folders_drop_where_it_is(make_deps):
    deps = make_deps()
    drop(deps, "outer/train.jsonl", b"not json\n" * 12)
    drop(deps, "outer/inner/train.jsonl", SAMPLE.read_bytes())
    drop(deps, "outer/inner/run.json", b"{}")
    drop(deps, "outer/run.json", b"{}")
    run_id = handle_blob_created("outer/run.json", deps)
    assert deps.registry.require_run(run_id).state == "rejected"
    left = blob_names(deps, deps.settings.datasets_container)
    assert left == {"outer/inner/train.jsonl", "outer/inner/run.json"}
    assert {f"{run_id}/outer/train.jsonl", f"{run_id}/outer/run.json"} <= blob_names(deps, deps.settings.quarantine_container)
    inner = handle_blob_created("outer/inner/run.json", deps)             # the nested drop still runs
    assert deps.registry.require_run(inner).state == "accepted"


class ReplacedWhileRead:
    """Blob storage where someone re-uploads `name` just before it is read a second time (validated, then split)."""

    def __init__(self, blobs, container: str, name: str, body: bytes) -> None:
        self._blobs, self._container, self._name, self._body, self.reads = blobs, container, name, body, 0

    def get_blob_client(self, container, name):
        client = self._blobs.get_blob_client(container, name)
        if (container, name) != (self._container, self._name):
            return client
        outer = self

        class Reading:
            def __getattr__(self, attr):
                return getattr(client, attr)

            def download_blob(self, *args, **kwargs):
                outer.reads += 1
                if outer.reads == 2:
                    client.upload_blob(outer._body, overwrite=True)
                return client.download_blob(*args, **kwargs)
        return Reading()

    def __getattr__(self, attr):
        return getattr(self._blobs, attr)


@pytest.mark.parametrize("folder", [False, True], ids=["file", "folder"])
def test_a_dataset_replaced_while_validated_is_never_trained_on(make_deps, folder):
    import dataclasses
    deps = make_deps()
    name = "team/train.jsonl" if folder else "swap.jsonl"
    drop(deps, name, SAMPLE.read_bytes())
    if folder:
        drop(deps, "team/run.json", b"{}")
    poison = b"".join(json.dumps({"messages": [{"role": "user", "content": f"never validated {i}: alice@contoso.com"},
                                               {"role": "assistant", "content": "ok"}]}).encode() + b"\n"
                      for i in range(40))
    swapped = dataclasses.replace(deps, blobs=ReplacedWhileRead(deps.blobs, deps.settings.datasets_container,
                                                                name, poison))
    run_id = handle_blob_created("team/run.json" if folder else name, swapped)
    run = deps.registry.require_run(run_id)
    assert swapped.blobs.reads >= 2
    assert run.state == "rejected" and run.error["code"] == "dataset_replaced"
    assert queued(deps, deps.settings.train_queue) == []
    assert f"{run_id}/data/train.jsonl" not in blob_names(deps, deps.settings.reports_container)


def test_a_folder_file_replaced_mid_validation_quarantines_only_what_was_validated_and_says_what_to_do(make_deps):
    """Once the run said "the new upload is a run of its own" (none started: only run.json starts one), and
    the next delivery of run.json moved the new, never validated train.jsonl into the old run's quarantine."""
    import dataclasses
    deps = make_deps()
    drop(deps, "team/train.jsonl", SAMPLE.read_bytes())
    drop(deps, "team/run.json", b"{}")
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    new = b"".join(lines[: len(lines) * 3 // 4])                # a smaller, valid train.jsonl
    swapped = dataclasses.replace(deps, blobs=ReplacedWhileRead(deps.blobs, deps.settings.datasets_container,
                                                                "team/train.jsonl", new))
    run_id = handle_blob_created("team/run.json", swapped)
    handle_blob_created("team/run.json", deps)              # the blob trigger's next delivery
    run = deps.registry.require_run(run_id)
    assert run.state == "rejected" and run.error["code"] == "dataset_replaced"
    assert "upload team/run.json again to start a run from the new files" in run.error["message"]
    datasets = deps.blobs.get_container_client(deps.settings.datasets_container)
    assert datasets.download_blob("team/train.jsonl").readall() == new          # the new upload stays
    quarantined = blob_names(deps, deps.settings.quarantine_container)
    assert f"{run_id}/team/run.json" in quarantined and f"{run_id}/team/train.jsonl" not in quarantined
    report = json.loads(deps.blobs.get_blob_client(deps.settings.reports_container,
                                                   f"{run_id}/validation.json").download_blob().readall())
    assert [e["code"] for e in report["errors"]] == ["dataset_replaced"]
    drop(deps, "team/run.json", b"{}")                      # what the message says to do
    again = handle_blob_created("team/run.json", deps)
    assert again != run_id and deps.registry.require_run(again).state == "accepted"


def test_a_run_json_of_megabytes_is_refused_unread_with_one_finding(make_deps):
    deps = make_deps()
    drop(deps, "big/train.jsonl", SAMPLE.read_bytes())
    drop(deps, "big/run.json", json.dumps({f"key{i}": i for i in range(200_000)}).encode())   # ~3 MB of keys
    run = deps.registry.require_run(handle_blob_created("big/run.json", deps))
    assert run.state == "rejected" and run.error["code"] == "run_json_too_large"
    assert "at most 65,536 bytes" in run.error["message"]


def test_findings_about_a_run_json_are_capped(make_deps):
    deps = make_deps()
    drop(deps, "keys/train.jsonl", SAMPLE.read_bytes())
    drop(deps, "keys/run.json", json.dumps({f"k{i}": i for i in range(3_000)}).encode())     # under 64 KiB
    run_id = handle_blob_created("keys/run.json", deps)
    report = json.loads(deps.blobs.get_blob_client(deps.settings.reports_container,
                                                   f"{run_id}/validation.json").download_blob().readall())
    assert len(report["errors"]) == 51 and "and 2,950 more problems" in report["errors"][-1]["message"]


def test_a_drop_over_the_size_limit_is_refused_before_it_is_read(make_deps):
    import dataclasses
    deps = make_deps(MAX_DATASET_MB="1")
    body = SAMPLE.read_bytes()
    drop(deps, "huge.jsonl", body * (1024 ** 2 // len(body) + 1))
    watched = dataclasses.replace(deps, blobs=ReplacedWhileRead(deps.blobs, deps.settings.datasets_container,
                                                                "huge.jsonl", body))
    run = deps.registry.require_run(handle_blob_created("huge.jsonl", watched))
    assert run.state == "rejected" and run.error["code"] == "dataset_too_large"
    assert watched.blobs.reads == 0 or watched.blobs.reads == 1   # never streamed for validation (1: the move)


def test_validation_that_runs_out_of_time_is_a_clear_rejection(make_deps):
    deps = make_deps(VALIDATION_MAX_SECONDS="0")
    drop(deps, "slow.jsonl", SAMPLE.read_bytes())
    run = deps.registry.require_run(handle_blob_created("slow.jsonl", deps))
    assert run.state == "rejected" and run.error["code"] == "validation_timeout"
    assert "VALIDATION_MAX_SECONDS" in run.error["message"]
    assert "slow.jsonl" in {n.split("/", 1)[1] for n in blob_names(deps, deps.settings.quarantine_container)}


def upload_many(container, names: list[str]) -> None:
    """Generated in a batch, 16 at a time: the tests are about the rejection, not the upload."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: container.upload_blob(n, b"x", overwrite=True), names))


FOLDER_FILES_REJECTED = 1_500   # past the ~1,100 at which the local queue (64 KB) refused the old event


def test_a_rejected_folder_of_many_files_is_quarantined_and_announced(make_deps_own_storage):
    """Its `rejected` event once listed every quarantine path: past ~1,100 files the send was refused on every
    retry, nothing was quarantined and the run stayed without its announcement."""
    deps = make_deps_own_storage()
    datasets = deps.blobs.get_container_client(deps.settings.datasets_container)
    upload_many(datasets, [f"many/notes-{i:05d}.txt" for i in range(FOLDER_FILES_REJECTED)])
    drop(deps, "many/train.jsonl", b"not json\n")
    drop(deps, "many/run.json", b"{}")
    run_id = handle_blob_created("many/run.json", deps)
    run = deps.registry.require_run(run_id)
    assert run.state == "rejected" and not run.outbox                      # announced: nothing left unsent
    [event] = [e for e in queued(deps, deps.settings.events_topic) if e["type"] == "ftops.run.rejected"]
    assert event["data"]["quarantine_count"] == FOLDER_FILES_REJECTED + 2
    listed = json.loads(deps.blobs.get_blob_client(deps.settings.reports_container, f"{run_id}/quarantine.json")
                        .download_blob().readall())["quarantine"]
    assert len(listed) == FOLDER_FILES_REJECTED + 2 and event["data"]["quarantine_list"].endswith("quarantine.json")
    assert not list(datasets.list_blobs(name_starts_with="many/"))       # all of it moved
    moved = deps.blobs.get_container_client(deps.settings.quarantine_container)
    assert sum(1 for _ in moved.list_blobs(name_starts_with=f"{run_id}/many/")) == FOLDER_FILES_REJECTED + 2


def test_a_move_to_quarantine_that_runs_out_of_time_hands_the_rest_to_its_retry(make_deps_own_storage):
    """One invocation moves whole pages of 256 until QUARANTINE_MAX_SECONDS (at least one page), then ends as a
    transient failure; each retry of the same event lists what is left and goes on, so no invocation outlives
    the function timeout however many files the folder holds."""
    import pytest

    from shared.stages.intake import QuarantineUnfinished
    deps = make_deps_own_storage(QUARANTINE_MAX_SECONDS="0")
    datasets = deps.blobs.get_container_client(deps.settings.datasets_container)
    upload_many(datasets, [f"paged/notes-{i:03d}.txt" for i in range(600)])
    drop(deps, "paged/train.jsonl", b"not json\n")
    drop(deps, "paged/run.json", b"{}")
    left = []
    for _ in range(2):
        with pytest.raises(QuarantineUnfinished, match="QUARANTINE_MAX_SECONDS"):
            handle_blob_created("paged/run.json", deps)
        left.append(sum(1 for _ in datasets.list_blobs(name_starts_with="paged/")))
    run_id = handle_blob_created("paged/run.json", deps)
    assert left == [602 - 256, 602 - 512]
    assert not list(datasets.list_blobs(name_starts_with="paged/"))
    moved = deps.blobs.get_container_client(deps.settings.quarantine_container)
    assert sum(1 for _ in moved.list_blobs(name_starts_with=f"{run_id}/paged/")) == 602
    assert deps.registry.require_run(run_id).state == "rejected"


FOLDER_FILES_STAND_IN = 20_000


def test_a_rejected_folder_of_twenty_thousand_files_is_quarantined_and_announced_on_a_stand_in_storage(make_deps):
    """The issue's 20,000 files. Azurite cannot be the storage here: its Delete Blob grows with the blobs it holds
    (~400 ms each at 20,000, hours for the folder), so the blobs live in the benchmark's stand-in Blob service in
    memory (benchmarks/quarantine.py: the same calls, If-Match and Blob Batch answers as the SDK's), while the
    registry and the events stay on Azurite. One event announces them, naming the list instead of carrying it."""
    from benchmarks.quarantine import LatencyBlobs, _folder
    blobs = LatencyBlobs(0.0)
    deps = dataclasses.replace(make_deps(), blobs=blobs)
    _folder(deps, "huge", FOLDER_FILES_STAND_IN, lambda name, body: blobs.put(deps.settings.datasets_container, name, body))
    run_id = handle_blob_created("huge/run.json", deps)
    run = deps.registry.require_run(run_id)
    assert run.state == "rejected" and not run.outbox
    [event] = [e for e in queued(deps, deps.settings.events_topic) if e["type"] == "ftops.run.rejected"]
    assert event["data"]["quarantine_count"] == FOLDER_FILES_STAND_IN + 2 and len(json.dumps(event)) < 16_000
    listed = json.loads(blobs.get_blob_client(deps.settings.reports_container, f"{run_id}/quarantine.json")
                        .download_blob().readall())["quarantine"]
    assert len(listed) == FOLDER_FILES_STAND_IN + 2
    left = [n for (c, n) in blobs.data if c == deps.settings.datasets_container and n.startswith("huge/")]
    moved = [n for (c, n) in blobs.data if c == deps.settings.quarantine_container and n.startswith(f"{run_id}/huge/")]
    assert not left and len(moved) == FOLDER_FILES_STAND_IN + 2
