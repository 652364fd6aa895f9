"""The evaluation report shows the decisions taken on it after it was written (issue 19, item 6: "approvals
once given"), without its evidence being rewritten: evaluation.json stays byte for byte what the approver's
hash names, the HTML changes only in its lineage section, each amendment is a new version with its time.

Before this change the report was rendered once, at evaluation time, and said "approvals: none yet" for
ever (the first three tests fail on main)."""
from __future__ import annotations

import json
import re
from typing import Any

import test_deployment
from fakes import MemoryDeps
from test_deployment import MODEL, OLD, add_run, caller, to_prod_gate
from test_evaluation_report import _built

from shared.evaluation.report import render_html
from shared.operator import api
from shared.run.messages import RollbackCommand, RunCommand
from shared.stages import approvals, report_lineage, rollback
from shared.stages.evaluation import _write_reports

world = test_deployment.world   # the same fixture: demo spokes, fake spokes, in-memory registry
SECTION = re.compile(r'<section id="lineage">.*?</section>', re.DOTALL)


def evaluated(deps: MemoryDeps, run_id: str = "run-1", model: str = MODEL, name: str = "support-bot"
              ) -> tuple[bytes, str]:
    """A run waiting for prod with its evaluation report written as the evaluation stage writes it."""
    add_run(deps, run_id, model=model, name=name)
    report = _built(final=[f"a{i}" for i in range(40)], lineage={"dataset_hash": "ab" * 32, "approvals": {}})
    report["run_id"], report["generated_at"] = run_id, "2000-01-01T00:00:00Z"
    _write_reports(deps, run_id, report)
    to_prod_gate(deps, run_id)
    return blob(deps, run_id, "evaluation.json"), blob(deps, run_id, "evaluation.html").decode()


def blob(deps: MemoryDeps, run_id: str, name: str) -> bytes:
    return deps.blobs.data[("reports", f"{run_id}/{name}")]


def test_an_approval_appears_in_the_report_and_the_evidence_is_unchanged(world: Any) -> None:
    deps, _ = world
    evidence, before = evaluated(deps)
    assert "approvals: none yet" in before
    given = approvals.approve(deps, caller(), "run-1", "prod", ticket="CHG-42", model=MODEL, comment="looks right")
    after = blob(deps, "run-1", "evaluation.html").decode()
    lineage = SECTION.search(after).group(0)   # type: ignore[union-attr]
    assert "approved" in lineage and "CHG-42" in lineage and given["approver_oid"] in lineage
    assert "lineage version 2" in lineage and "on this report&#x27;s evaluation.json" in lineage
    assert blob(deps, "run-1", "evaluation.json") == evidence                 # the evidence, byte for byte
    assert given["evaluation_report_hash"] in lineage                         # ... the hash the approval names
    assert SECTION.sub("", after) == SECTION.sub("", before)                  # the rest of the page unchanged
    doc = json.loads(blob(deps, "run-1", report_lineage.LINEAGE_BLOB))
    assert doc["version"] == 2 and [v["version"] for v in doc["versions"]] == [1, 2]
    assert doc["versions"][1]["amended_at"] and doc["decisions"][0]["ticket"] == "CHG-42"
    # the deploy still accepts the approval: the report it was given on is the one stored
    assert approvals.approval_problem(deps, deps.registry.runs["run-1"], deps.require_topology().environment("prod"),
                                      MODEL) is None


def test_amending_again_adds_nothing_and_a_later_decision_is_a_new_version(world: Any) -> None:
    deps, _ = world
    evaluated(deps)
    approvals.approve(deps, caller(), "run-1", "prod", ticket="CHG-1", model=MODEL)
    page, doc = blob(deps, "run-1", "evaluation.html"), blob(deps, "run-1", report_lineage.LINEAGE_BLOB)
    approvals.approve(deps, caller(), "run-1", "prod", ticket="CHG-1", model=MODEL)   # a repeat
    assert report_lineage.amend(deps, "run-1") is not None
    assert (blob(deps, "run-1", "evaluation.html"), blob(deps, "run-1", report_lineage.LINEAGE_BLOB)) == (page, doc)
    from shared.run.messages import DeployRequest
    from shared.stages import deployment
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="prod"), deps)
    rollback.retire(RunCommand(run_id="run-1", requested_by="ops@x", reason="superseded"), deps)
    doc2 = json.loads(blob(deps, "run-1", report_lineage.LINEAGE_BLOB))
    assert doc2["version"] == 3 and [d["kind"] for d in doc2["decisions"]] == ["approval", "retirement"]
    assert doc2["decisions"][0] == json.loads(doc)["decisions"][0]           # append-only
    html = blob(deps, "run-1", "evaluation.html").decode()
    assert "retired" in html and "superseded" in html and "lineage version 3" in html


def test_a_rejection_and_a_rollback_are_in_the_reports_of_the_runs_they_concern(world: Any) -> None:
    deps, _ = world
    evaluated(deps, "run-9", name="other-bot")
    approvals.reject(deps, caller(), "run-9", "prod", reason="answers too long", ticket="CHG-7")
    html = blob(deps, "run-9", "evaluation.html").decode()
    assert "rejected" in html and "answers too long" in html and "CHG-7" in html
    # run-2 replaces run-0 in dev, then is rolled back: run-2's report says so, and run-0's says it came back
    evaluated(deps, "run-0", OLD)
    evaluated(deps, "run-2")
    rollback.rollback(RollbackCommand(environment="dev", run_id="run-2", requested_by="ops@x", reason="worse"), deps)
    assert "rolled back" in blob(deps, "run-2", "evaluation.html").decode()
    assert "restored by a rollback" in blob(deps, "run-0", "evaluation.html").decode()


def test_get_run_and_the_console_point_at_the_same_decisions_as_the_report(world: Any) -> None:
    deps, _ = world
    evaluated(deps)
    approvals.approve(deps, caller(), "run-1", "prod", ticket="CHG-5", model=MODEL)
    view = api.get_run(caller(), {"run_id": "run-1"}, b"", deps).body
    doc = json.loads(blob(deps, "run-1", report_lineage.LINEAGE_BLOB))
    assert view["report_lineage"]["decisions"] == [d["id"] for d in doc["decisions"]] == \
        [f"approval:{view['approvals']['prod']['approval_id']}"]
    assert view["report_lineage"]["missing"] == [] and view["report_lineage"]["version"] == 2
    assert view["report_lineage"]["evaluation_report_hash"] == view["candidate"]["evaluation_report_hash"]
    # a decision recorded whose amendment did not happen (a crash in between) is said, not hidden
    deps.blobs.data.pop(("reports", f"run-1/{report_lineage.LINEAGE_BLOB}"))
    view = api.get_run(caller(), {"run_id": "run-1"}, b"", deps).body
    assert view["report_lineage"]["missing"] == view["report_lineage"]["decisions"] + [
        f"approval:{view['approvals']['prod']['approval_id']}"] and view["report_lineage"]["version"] == 1


def test_an_amendment_renders_only_the_lineage_section() -> None:
    report = _built(final=["a0"] * 40, lineage={"dataset_hash": "ab" * 32})
    doc = {"evaluation_report_hash": "sha256:ff", "version": 2, "amended_at": "2030-01-01T00:00:00Z",
           "versions": [{"version": 1, "amended_at": None}, {"version": 2, "amended_at": "2030-01-01T00:00:00Z"}],
           "decisions": [{"id": "approval:x", "kind": "approval", "at": "2030-01-01T00:00:00Z", "environment": "prod",
                          "who": "<script>", "ticket": "T&1", "evaluation_report_hash": "sha256:ff"}]}
    plain, amended = render_html(report), render_html(report, amendments=doc)
    assert SECTION.sub("", plain) == SECTION.sub("", amended)
    assert "<script>" not in amended and "&lt;script&gt;" in amended and "T&amp;1" in amended


def test_a_new_evaluation_of_the_run_drops_the_amendments_of_the_report_it_replaces(world: Any) -> None:
    deps, _ = world
    evaluated(deps)
    approvals.approve(deps, caller(), "run-1", "prod", ticket="CHG-1", model=MODEL)
    assert ("reports", f"run-1/{report_lineage.LINEAGE_BLOB}") in deps.blobs.data
    again = _built(final=["a0"] * 40)   # a retrain, evaluated again
    _write_reports(deps, "run-1", {**again, "run_id": "run-1"})
    assert ("reports", f"run-1/{report_lineage.LINEAGE_BLOB}") not in deps.blobs.data
    assert "CHG-1" not in blob(deps, "run-1", "evaluation.html").decode()


def test_an_amendment_racing_another_reads_again_and_adds_each_decision_once(world: Any, monkeypatch) -> None:
    deps, _ = world
    evaluated(deps)
    from fakes import _MemoryBlob
    upload, raced = _MemoryBlob.upload_blob, []

    def racing(blob: Any, body: Any, **kwargs: Any) -> None:
        # Another worker amends between this amendment's read and its conditional write, of both blobs in turn.
        name = blob._key[1]
        if name.endswith((report_lineage.LINEAGE_BLOB, "evaluation.html")) and name not in raced and kwargs.get(
                "match_condition") is not None:
            raced.append(name)
            report_lineage.amend(deps, "run-1")
        upload(blob, body, **kwargs)

    approvals.approve(deps, caller(), "run-1", "prod", ticket="CHG-7", model=MODEL)   # amends the report itself
    monkeypatch.setattr(_MemoryBlob, "upload_blob", racing)
    deps.registry.runs["run-1"].approvals["prod"]["approval_id"] = "again"   # a decision the report lacks
    doc = report_lineage.amend(deps, "run-1")
    assert raced == ["run-1/" + report_lineage.LINEAGE_BLOB, "run-1/evaluation.html"]
    assert doc is not None and doc["version"] == 3   # the racer's version 3; this one then had nothing to add
    stored = json.loads(blob(deps, "run-1", report_lineage.LINEAGE_BLOB))
    assert stored == doc and len({d["id"] for d in stored["decisions"]}) == len(stored["decisions"]) == 2
    assert "lineage version 3" in blob(deps, "run-1", "evaluation.html").decode()
