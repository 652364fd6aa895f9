"""`ftops validate` and intake say the same about every drop of the corpus (tests/corpus): one truth."""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from ftops_cli import validate as cli
from shared.stages.intake import handle_blob_created

pytestmark = pytest.mark.integration
CORPUS = Path(__file__).resolve().parents[1] / "corpus"
EXPECTED = {k: v for k, v in json.loads((CORPUS / "expected.json").read_text()).items() if k != "_"}


def _verdict(report: dict) -> dict:
    return {"valid": report["valid"], "method": report["method"],
            "codes": sorted({f["code"] for f in report["errors"] + report["warnings"]}),
            "epochs": (report.get("stats") or {}).get("cost", {}).get("epochs")}


def _validate(path: Path, deps) -> tuple[int, dict]:
    parser = argparse.ArgumentParser(prog="ftops")
    cli.add_parser(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    env = {"SPOKES_CONFIG": deps.settings.spokes_config, "DEFAULT_BASE_MODEL": deps.settings.default_base_model}
    code = cli.run(parser.parse_args(["validate", str(path), "--json"]), stdout=out, stderr=err, env=env)
    assert err.getvalue() == "", err.getvalue()
    return code, json.loads(out.getvalue())


def _drop(deps, case: Path) -> str:
    """Upload as a person would (a folder's run.json last); the start blob's name."""
    container = deps.blobs.get_container_client(deps.settings.datasets_container)
    if case.is_file():
        container.upload_blob(case.name, case.read_bytes(), overwrite=True)
        return case.name
    for f in sorted(p for p in case.iterdir() if p.name != "run.json"):
        container.upload_blob(f"{case.name}/{f.name}", f.read_bytes(), overwrite=True)
    container.upload_blob(f"{case.name}/run.json", (case / "run.json").read_bytes(), overwrite=True)
    return f"{case.name}/run.json"


def test_every_corpus_case_gets_the_same_verdict_codes_and_method_from_validate_and_intake(make_deps):
    assert set(EXPECTED) == {p.name for p in CORPUS.iterdir() if p.name not in ("expected.json", "README.md")}
    deps = make_deps(INTAKE_WAIT_SECONDS="0")
    reports = deps.blobs.get_container_client(deps.settings.reports_container)
    for name, expected in EXPECTED.items():
        run_id = handle_blob_created(_drop(deps, CORPUS / name), deps)
        run = deps.registry.require_run(run_id)
        intake = json.loads(reports.get_blob_client(f"{run_id}/validation.json").download_blob().readall())
        code, local = _validate(CORPUS / name, deps)
        want = {k: expected.get(k) for k in ("valid", "method", "codes", "epochs")}
        got_intake, got_local = _verdict(intake), _verdict(local)
        if want["epochs"] is None:
            got_intake.pop("epochs"), got_local.pop("epochs"), want.pop("epochs")
        assert got_local == got_intake == want, name
        assert local.get("method_source") == intake.get("method_source"), name
        assert (run.state == "accepted") == expected["valid"] and (code == 0) == expected["valid"], name
        if expected["valid"]:
            assert local["split"] == run.validation["split"], name   # the same split, counted the same way
            assert run.settings["method"] == expected["method"], name   # the detected method is what trains
        else:
            assert run.error["code"] == intake["errors"][0]["code"], name


def test_a_dpo_file_dropped_alone_trains_as_dpo_and_the_report_says_the_method_was_detected(make_deps):
    deps = make_deps()
    run_id = handle_blob_created(_drop(deps, CORPUS / "dpo-alone.jsonl"), deps)
    run = deps.registry.require_run(run_id)
    html = deps.blobs.get_blob_client(deps.settings.reports_container, f"{run_id}/validation.html") \
        .download_blob().readall().decode()
    assert run.state == "accepted" and run.settings["method"] == "dpo"
    assert "detected from the data" in html and run.validation["method"] == "dpo"
