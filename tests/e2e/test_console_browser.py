"""The operator's console in a real headless browser (Debian's chromium, driven by Playwright; `make setup`
installs it), against the running local stack: the demo operator sees the sample run waiting for prod, reads
its evaluation, approves it and sees it reach deployed:prod; a reader finds no approve action and the API
answers 403. Screenshots of the main views are kept as test artifacts (the folder is printed)."""
from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.emulator.identity import DEMO_PASSWORD, USERS
from shared.run import states
from shared.store.registry import RunRecord

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "support-bot.jsonl"
OPERATOR, READER = "demo-operator@contoso.example", "demo-reader@contoso.example"
SCIENTIST = USERS["demo-scientist@contoso.example"]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt: make setup")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from local.stack import LocalStack
    with LocalStack(log_dir=tmp_path_factory.mktemp("console-logs")) as running:
        running.wait_for_api()
        yield running


@pytest.fixture(scope="module")
def waiting_run(stack: Any) -> str:
    """The sample, dropped as `ftops demo` drops it, waiting for an approver of prod."""
    deps = stack.deps()
    datasets = deps.blobs.get_container_client(deps.settings.datasets_container)
    datasets.upload_blob("support-bot/train.jsonl", SAMPLE.read_bytes(), overwrite=True)
    datasets.upload_blob("support-bot/run.json", json.dumps({"owner": SCIENTIST.oid, "ticket": "DEMO-1"}),
                         overwrite=True)
    run = wait_for(stack, lambda r: r.source == "datasets/support-bot/run.json" and
                   (r.state == states.awaiting_approval("prod") or r.terminal), timeout=240)
    assert run.state == states.awaiting_approval("prod"), f"the sample ended {run.state}: {run.error}"
    from ftops_cli.operator_client import local_client  # the owner confirms it, as `ftops claim` does
    local_client(stack.api_url, stack.env, SCIENTIST.username).call("POST", f"runs/{run.run_id}/claim", {})
    return run.run_id


def wait_for(stack: Any, match: Any, *, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        found = [r for r in stack.deps().registry.list_runs() if match(r)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            pytest.fail(f"no run matched in {timeout:.0f} s; dev host log: {stack.devhost_log}")
        time.sleep(0.5)


def sign_in(browser: Any, stack: Any, user: str) -> Any:
    page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()   # a laptop screen
    page.goto(f"{stack.api_url}/console/")
    assert page.url.endswith("/console/signin"), "an anonymous visitor is sent to sign in"
    page.fill("#username", user)
    page.fill("#password", DEMO_PASSWORD)
    page.click("form:has(#username) button")
    page.wait_for_url("**/console/")
    assert USERS[user].name in page.inner_text("header")
    return page


def test_the_operator_approves_prod_from_the_console(browser: Any, stack: Any, waiting_run: str,
                                                     artifacts: Path) -> None:
    page = sign_in(browser, stack, OPERATOR)
    row = page.locator("tr", has=page.locator(f"a:text-is('{waiting_run}')"))
    assert row.locator("[data-state]").inner_text() == "awaiting_approval:prod"
    page.screenshot(path=str(artifacts / "1-runs.png"), full_page=True)

    row.locator("a").click()
    page.wait_for_url(f"**/console/runs/{waiting_run}")
    approval = page.locator("#approval")
    assert "Waiting for approval into prod" in approval.inner_text()
    # the comparison: prod serves nothing yet, so the candidate is set against the base model it beat
    assert "prod serves no ftops model yet" in approval.inner_text()
    assert re.search(r"mean token F1\s+0\.\d+\s+0\.\d+\s+\+0\.\d+", approval.inner_text())
    evaluation = page.frame_locator("#report-evaluation")
    assert "PASS" in evaluation.locator("h1").inner_text()
    assert evaluation.locator("svg").count() >= 2          # the report's plots, inline
    page.screenshot(path=str(artifacts / "2-run-waiting.png"), full_page=True)
    # the report as its "open alone" link shows it (sandboxed frames are not painted in a full-page shot)
    alone = page.context.new_page()
    href = page.locator("#reports a:text-is('open alone')").first.get_attribute("href") or ""
    answer = alone.goto(urllib.parse.urljoin(page.url, href))
    assert answer is not None and "sandbox" in answer.headers["content-security-policy"]
    alone.screenshot(path=str(artifacts / "2b-evaluation-report.png"), full_page=True)
    alone.close()

    page.fill("#ticket", "CHG-42")
    page.fill("#comment", "looked at the evaluation in the console")
    page.click("#approve-form button")
    page.wait_for_url(f"**/console/runs/{waiting_run}?done=approved")
    assert "approved: the operator API accepted it" in page.inner_text("main")

    wait_for(stack, lambda r: r.run_id == waiting_run and r.state.startswith("deployed:prod"), timeout=180)
    page.reload()
    assert page.locator("h1 [data-state]").inner_text() == "deployed:prod"
    assert page.locator("#approval").count() == 0
    timeline = page.inner_text("#timeline")
    assert f"Demo Operator <{USERS[OPERATOR].oid}> approved" in timeline and "(ticket CHG-42)" in timeline
    assert f"prod\tDemo Operator <{USERS[OPERATOR].oid}>\tCHG-42" in page.inner_text("#facts")   # bound to the ticket
    # the report the reviewer opens shows the same approval (its evaluation unchanged: docs/evaluation.md)
    lineage = page.frame_locator("#report-evaluation").locator("#lineage").inner_text()
    assert "approved" in lineage and "CHG-42" in lineage and USERS[OPERATOR].oid in lineage
    assert "lineage version 2" in page.inner_text("#report-lineage")
    prod = [r for r in page.locator("#deployments tbody tr").all_inner_texts() if r.startswith("prod")]
    assert len(prod) == 2, prod            # prod's two regions
    page.screenshot(path=str(artifacts / "3-run-deployed.png"), full_page=True)

    page.click("header >> text=Deployments")
    page.wait_for_url("**/console/deployments")
    assert "prod: " in page.inner_text("main") and "USD per day" in page.inner_text("main")
    page.screenshot(path=str(artifacts / "4-deployments.png"), full_page=True)
    page.context.close()


def test_day_two_retrain_approve_rollback_retire_in_the_console(browser: Any, stack: Any, waiting_run: str,
                                                                artifacts: Path) -> None:
    """Issue 20, walked as a new user would: the run prod serves is retrained; a second approver compares the
    new model with the one prod serves (this run's earlier model, measured on the same examples) and approves;
    the operator rolls prod back (to the earlier model, after a confirmation that says what comes back) and
    then retires the run (after a confirmation that says what goes and what it costs)."""
    run_id = waiting_run
    deps = stack.deps()
    if deps.registry.require_run(run_id).state != states.deployed("prod"):   # run alone: approve it first
        status, body = api_post(stack, f"runs/{run_id}/approve", OPERATOR, {
            "environment": "prod", "ticket": "CHG-42",
            "model": deps.registry.require_run(run_id).chosen_model})
        assert status == 202, body
        wait_for(stack, lambda r: r.run_id == run_id and r.state == states.deployed("prod"), timeout=180)
    first = deps.registry.require_run(run_id).chosen_model
    status, body = api_post(stack, f"runs/{run_id}/retrain", OPERATOR, {"settings": {
        "hyperparameters": {"n_epochs": 3},
        "thresholds": {"champion_rule": "superior", "min_improvement_over_champion": -1.0}}})
    assert status == 202, body
    retrained = wait_for(stack, lambda r: r.run_id == run_id and r.chosen_model not in (None, first) and
                         (r.state == states.awaiting_approval("prod") or r.terminal), timeout=300)
    assert retrained.state == states.awaiting_approval("prod"), f"the retrain ended {retrained.state}: {retrained.error}"

    approver = sign_in(browser, stack, "demo-approver2@contoso.example")   # the operator retrained: four eyes
    approver.goto(f"{stack.api_url}/console/runs/{run_id}")
    approval = approver.inner_text("#approval")
    assert f"prod serves now: {first} (this run's earlier model)" in approval       # not "serves no ftops model"
    assert "serving prod (measured on this run's" in approval and first in approval
    assert approver.locator("#stages li.waiting").inner_text().startswith("prod")
    approver.screenshot(path=str(artifacts / "6-retrained-waiting.png"), full_page=True)
    approver.fill("#ticket", "CHG-43")
    approver.click("#approve-form button")
    approver.wait_for_url(f"**/console/runs/{run_id}?done=approved")
    assert approver.locator("#approve-form").count() == 0                        # no stale forms after approve
    wait_for(stack, lambda r: r.run_id == run_id and r.state == states.deployed("prod"), timeout=180)
    approver.reload()
    assert approver.locator("h1 [data-state]").inner_text() == "deployed:prod"
    assert "Second Approver" in approver.inner_text("#timeline")
    approver.screenshot(path=str(artifacts / "7-retrained-deployed.png"), full_page=True)
    approver.context.close()

    page = sign_in(browser, stack, OPERATOR)
    page.goto(f"{stack.api_url}/console/runs/{run_id}")
    page.click("button:text-is('Roll back prod…')")
    confirm = page.inner_text("#confirm")
    assert "Roll back prod?" in page.inner_text("h1") and f"{first} (this run's earlier model)" in confirm
    page.screenshot(path=str(artifacts / "8-rollback-confirm.png"), full_page=True)
    page.fill("#reason", "worse answers after the retrain")
    page.click("#confirm-form button")
    page.wait_for_url(f"**/console/runs/{run_id}?done=rolled-back")
    assert page.locator("h1 [data-state]").inner_text() == "rolled_back:prod"
    prod = [r for r in page.locator("#deployments tbody tr").all_inner_texts() if r.startswith("prod")]
    assert len(prod) == 2 and all(first in r for r in prod), prod          # prod serves the earlier model again
    assert "rolled prod back from" in page.inner_text("#timeline")
    page.screenshot(path=str(artifacts / "9-rolled-back.png"), full_page=True)

    page.click("button:text-is('Retire this run…')")
    assert "Retire run" in page.inner_text("h1")
    stops = re.search(r"Hosting that stops: ([0-9.]+) USD per day", page.inner_text("#confirm"))
    assert stops and float(stops.group(1)) > 0
    page.screenshot(path=str(artifacts / "10-retire-confirm.png"), full_page=True)
    page.fill("#reason", "replaced by a new dataset")
    page.click("#confirm-form button")
    page.wait_for_url(f"**/console/runs/{run_id}?done=retired")
    assert page.locator("h1 [data-state]").inner_text() == "retired"
    assert "retired hidden" in page.inner_text("#deployments")                   # hidden by default
    assert not stack.deps().registry.list_deployments(run_id=run_id, state="active")
    page.screenshot(path=str(artifacts / "11-retired.png"), full_page=True)
    page.context.close()


def test_a_reader_is_offered_no_approval_and_the_api_refuses_it(browser: Any, stack: Any, artifacts: Path) -> None:
    run_id = seed_waiting_run(stack)
    page = sign_in(browser, stack, READER)
    page.goto(f"{stack.api_url}/console/runs/{run_id}")
    assert "Waiting for approval into prod" in page.inner_text("#approval")
    assert page.locator("#approve-form").count() == 0 and page.locator("#reject-form").count() == 0
    assert "needs the app role Approver.prod" in page.inner_text("#no-approval")
    page.screenshot(path=str(artifacts / "5-reader-run.png"), full_page=True)

    # the action the page did not offer, posted anyway from the reader's session: the API refuses it
    form_token = page.locator("header input[name=form_token]").get_attribute("value")
    answer = page.request.post(f"{stack.api_url}/console/runs/{run_id}/approve", form={
        "form_token": form_token, "environment": "prod", "ticket": "CHG-1", "model": "any"}, max_redirects=0)
    assert answer.status == 403 and "needs the app role Approver.prod" in answer.text()
    # and straight at the operator API with the reader's own token
    status, body = api_post(stack, f"runs/{run_id}/approve", READER,
                            {"environment": "prod", "ticket": "CHG-1", "model": "any"})
    assert status == 403 and "Approver.prod" in body["error"]["message"]
    assert stack.deps().registry.require_run(run_id).state == states.awaiting_approval("prod")
    page.context.close()


def seed_waiting_run(stack: Any) -> str:
    run_id = f"console-{uuid.uuid4().hex[:8]}"
    model = "gpt-4.1-mini-2025-04-14.ft-cccc"
    stack.deps().registry.create_run(RunRecord(
        run_id=run_id, source=f"datasets/{run_id}/run.json", state=states.awaiting_approval("prod"),
        chosen_model=model, fine_tuned_model=model, owner=SCIENTIST.oid, environments=["dev", "test", "prod"],
        settings={"deployment_name": run_id, "owner": SCIENTIST.oid}, dataset_hash="sha256:d1"), actor="test")
    return run_id


def api_post(stack: Any, path: str, user: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    from ftops_cli.operator_client import local_client
    client = local_client(stack.api_url, stack.env, user)
    token = client.credential.get_token(client.scope).token
    request = urllib.request.Request(f"{stack.api_url}/{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_cli_finds_the_running_local_stack_and_fetches_reports(stack: Any, waiting_run: str,
                                                                   tmp_path: Path) -> None:
    """What a demo with --keep-running leaves for other commands: its state file names the stack."""
    import subprocess
    import sys

    from ftops_cli.target import write_state
    state = tmp_path / "local-stack.json"
    write_state(state, env=stack.env, api_url=stack.api_url, reports_dir=None)   # this process keeps the stack
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "FTOPS_LOCAL_STATE": str(state)}

    def ftops(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ftops_cli", *argv], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    status = ftops("status")
    assert status.returncode == 0, status.stderr
    assert waiting_run in status.stdout
    report = ftops("report", waiting_run, "--out", str(tmp_path / "reports"))
    assert report.returncode == 0, report.stderr
    folder = tmp_path / "reports" / waiting_run
    approved = bool(stack.deps().registry.require_run(waiting_run).approvals)   # by an earlier test of this module
    assert sorted(p.name for p in folder.iterdir()) == [
        *(["evaluation-lineage.json"] if approved else []),   # the decisions taken on the report since
        "evaluation.html", "evaluation.json", "validation.html", "validation.json"]
    assert "<svg" in (folder / "evaluation.html").read_text()   # the plots travel with the page
    state.unlink()
    gone = ftops("status")
    assert gone.returncode == 2 and "ftops demo --keep-running" in gone.stderr and "Traceback" not in gone.stderr


def test_a_wrong_password_is_refused_with_the_identity_providers_reason(stack: Any) -> None:
    with urllib.request.urlopen(f"{stack.api_url}/console/signin", timeout=30) as shown:   # the form and its cookie
        cookie = shown.headers["Set-Cookie"].split(";")[0]
        form_token = re.search(r'name="form_token" value="([^"]+)"', shown.read().decode())[1]  # type: ignore[index]
    form = urllib.parse.urlencode({"username": OPERATOR, "password": "not-the-password",
                                   "form_token": form_token}).encode()
    request = urllib.request.Request(f"{stack.api_url}/console/signin", data=form, method="POST",
                                     headers={"Cookie": cookie})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401 and "ftops_console=" not in (refused.value.headers["Set-Cookie"] or "")
    assert "AADSTS50126" in refused.value.read().decode()


def test_signing_in_with_entra_id_code_and_pkce_gives_the_roles_of_the_token_and_signs_out(
        browser: Any, stack: Any, artifacts: Path) -> None:
    """The sign-in people use in Azure, against the emulator's identity provider: the console's button, the
    identity provider's page (its throw-away CA is trusted for this context only), back to the console with
    the token's roles, then sign out."""
    context = browser.new_context(viewport={"width": 1366, "height": 768}, ignore_https_errors=True)
    page = context.new_page()
    page.goto(f"{stack.api_url}/console/")
    page.click("#entra-sign-in")
    page.wait_for_url(f"{stack.emulator_url}/tenant-contoso/oauth2/v2.0/authorize**")
    assert "Sign in to tenant-contoso" in page.inner_text("h1")
    page.fill("#username", OPERATOR)
    page.fill("#password", DEMO_PASSWORD)
    page.screenshot(path=str(artifacts / "12-entra-sign-in.png"), full_page=True)
    page.click("#next")
    page.wait_for_url("**/console/")
    header = page.inner_text("header")
    assert USERS[OPERATOR].name in header and "Approver.prod, Operator, Reader" in header   # the token's roles
    page.screenshot(path=str(artifacts / "13-entra-signed-in.png"), full_page=True)
    page.click("header button:text('Sign out')")
    page.wait_for_url("**/console/signin?note=signed-out")
    assert "Signed out." in page.inner_text("main")
    page.goto(f"{stack.api_url}/console/")
    assert page.url.endswith("/console/signin"), "signed out: the session is gone"
    context.close()
