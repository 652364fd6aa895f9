"""`ftops demo [--json] [--datasets DIR] [--chaos] [--timeout SECONDS]`: the whole flow on one machine.
`ftops demo --restart devhost|emulator|azurite`: kill one process of a stack left up by `--keep-running`
(SIGKILL, as OOM or a scale-in does); the demo starts it again on the same ports, Azurite with its data
(kept on disk in --data), so a fault of a real deployment can be repeated by hand.

Starts Azurite, the hub/spoke emulator and the dev host (local.stack), drops the sample dataset (or every
dataset in DIR), approves prod as the demo operator, waits until every run is terminal and every live
deployment has had a keep-alive ping, then prints a summary (a table, or one JSON object with --json).
Progress and logs go to stderr; stdout carries only the result. Everything started is stopped.
Under each run that did not reach its end the table says why and where its report is.

Exit status: 0 when every run finished with an answer — deployed to its last environment, or (with
--datasets) a verdict: rejected, evaluation_failed, approval_denied, cancelled, retired; 1 when a run
failed for another reason (training, deployment), a message was dead-lettered, the sample did not reach
prod, or runs were still going at the timeout; 2 for a usage error (e.g. --datasets not a folder).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Self

from ftops_cli.errors import UsageError
from ftops_cli.push_timing import EvaluatingWatch, timings
from ftops_cli.push_timing import render as render_timings
from ftops_cli.target import remove_state, state_path, write_state
from ftops_cli.ticker import Ticker
from ftops_cli.views import run_view, table  # the one run shape, shared with `ftops status`

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "support-bot.jsonl"
DEMO_APPROVER = "demo-operator@contoso.example"   # a demo user of the emulator's identity provider (Approver.prod)
DEMO_OWNER = "demo-scientist@contoso.example"     # owns the sample run: four eyes keep them from approving it
DEMO_TICKET = "DEMO-1"
POISON_QUEUES = ("webjobs-blobtrigger-poison",)   # blob events the host gave up on: lost work, so shown too

__all__ = ["add_parser", "run", "run_view"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the whole flow on one machine (Azurite, emulator, dev host)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the final state as one JSON object on stdout")
    p.add_argument("--datasets", type=Path, metavar="DIR",
                   help="drop every *.jsonl file and run.json folder in DIR instead of the sample (says what it skips)")
    p.add_argument("--chaos", action="store_true",
                   help="faults on ~15%% of emulator calls; every message delivered twice; the host restarts once")
    p.add_argument("--timeout", type=float, help="seconds to wait for every run to finish (default 300, chaos 600)")
    p.add_argument("--logs", type=Path, help="folder for the emulator and dev host logs (default: a temp folder)")
    p.add_argument("--reports", type=Path,
                   help="folder the runs' reports are copied to at the end (default: a temp folder; printed)")
    p.add_argument("--approve-in-console", action="store_true",
                   help="leave approvals to a person: the demo does not approve prod, prints the summary once every "
                        "run is finished or waiting for approval, and keeps the stack up (--keep-running) so you "
                        "approve in the console")
    p.add_argument("--flywheel", action="store_true",
                   help="after the sample reaches prod, close the loop: production traffic → harvest → curated run "
                        "folder → a smaller student trained, evaluated against the champion, waiting for approval "
                        "(docs/flywheel.md)")
    p.add_argument("--keep-running", action="store_true",
                   help="leave the stack up after the summary (the console, `ftops status`, `ftops report` use it) "
                        "until Ctrl-C; a process killed meanwhile (`--restart`) is started again")
    p.add_argument("--data", type=Path,
                   help="folder where Azurite keeps its data on disk (default: a temp folder; printed)")
    p.add_argument("--webhook-drop-rate", type=float, default=0.0, metavar="RATE",
                   help="the hub (emulator) loses this share of its fine-tuning webhooks (0–1): the poll timer must "
                        "take those runs on; the summary says, per run, how long from the job's success to "
                        "`evaluating` and by which path")
    p.add_argument("--poll-schedule", metavar="NCRONTAB",
                   help="the poll timer's schedule (default every 2 s on the local stack; Azure's default is "
                        "'0 */2 * * * *')")
    p.add_argument("--restart", choices=("devhost", "emulator", "azurite"),
                   help="kill this process of the running demo stack (--keep-running) and let the demo start it "
                        "again; nothing else is run")
    p.set_defaults(func=run)


class _StateKeeper(Ticker):
    """Writes the stack's state file now and again whenever a process of the stack has a new pid (the dev
    host restarted by its supervisor, a chaos exit, a revived emulator), so `ftops demo --restart` always
    kills the process that runs now."""

    def __init__(self, write: Callable[[], None], pids: Callable[[], dict[str, int | None]]) -> None:
        super().__init__(0.5, "demo-state", join_seconds=5)
        self._write, self._pids = write, pids

    def __enter__(self) -> Self:
        self._last = self._pids()
        self._write()
        return super().__enter__()

    def tick(self) -> None:
        if (now := self._pids()) != self._last:
            self._last = now
            self._write()


def restart(name: str) -> int:
    """`ftops demo --restart NAME`: SIGKILL one process of the running stack (its demo restarts it)."""
    import os

    from ftops_cli.target import read_state
    state = read_state(state_path())
    pid = ((state or {}).get("pids") or {}).get(name)
    if not pid:
        raise UsageError(f"no running demo stack with a {name} process (start one with `ftops demo --keep-running`)")
    # Azurite is stopped, not killed: it writes its metadata to disk every few seconds and flushes on SIGTERM
    try:
        os.kill(int(pid), signal.SIGTERM if name == "azurite" else signal.SIGKILL)
    except ProcessLookupError:
        raise UsageError(f"{name} (pid {pid}) is not running: the demo is starting it again; try in a second") from None
    say(f"stopped {name} (pid {pid}); the demo starts it again on the same ports")
    return 0


def run(args: argparse.Namespace) -> int:
    from local.stack import LocalStack, StackError  # local/ is never deployed: import it only here

    if args.restart:
        return restart(args.restart)
    drops = _plan_drops(args.datasets)
    if not drops:
        raise UsageError(f"no *.jsonl files or run.json folders in {args.datasets}")
    timeout = args.timeout or (600.0 if args.chaos else 300.0)
    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="ftops-demo-logs-"))
    _stop_on_sigterm()
    reports_dir = args.reports or Path(tempfile.mkdtemp(prefix="ftops-demo-reports-"))
    data_dir = args.data or Path(tempfile.mkdtemp(prefix="ftops-demo-data-"))
    say(f"starting Azurite, the hub/spoke emulator and the dev host{' (chaos)' if args.chaos else ''}; "
        f"logs in {log_dir}")
    say(f"Azurite keeps its data on disk in {data_dir}")
    started = time.monotonic()
    flywheel: ModuleType | None = None   # ftops_cli.flywheel_demo, imported only for --flywheel
    if getattr(args, "flywheel", False):
        from ftops_cli import flywheel_demo as flywheel
    overrides = {**(flywheel.env_overrides() if flywheel else {}),
                 **({"POLL_SCHEDULE": args.poll_schedule} if getattr(args, "poll_schedule", None) else {})}
    stack = LocalStack(chaos=args.chaos, log_dir=log_dir, data_dir=data_dir, env_overrides=overrides,
                       **({"spokes": flywheel.spokes_with_harvest()} if flywheel else {}))
    state = state_path()
    try:
        with stack, contextlib.ExitStack() as stack_state:
            # anything that prints on stdout while the stack runs lands on stderr: stdout is the result only
            with contextlib.redirect_stdout(sys.stderr):
                deps = stack.deps()
                stack.wait_for_api()
                keeper = _StateKeeper(lambda: write_state(state, env=stack.env, api_url=stack.api_url,
                                                          reports_dir=reports_dir, pids=stack.pids(),
                                                          data_dir=data_dir), stack.pids)
                stack_state.enter_context(keeper)
                say(f"console: {stack.api_url}/console/ (sign in as {DEMO_APPROVER} or another demo user of "
                    "docs/operator-api.md); `ftops status` and `ftops report RUN_ID` find this stack while it runs")
                if getattr(args, "webhook_drop_rate", 0.0):
                    stack.set_faults({"webhook_drop_rate": args.webhook_drop_rate})
                with EvaluatingWatch(deps) as watch:
                    sources = drop_datasets(deps, drops)
                    finished = wait_until_done(stack, deps, sources, deadline=time.monotonic() + timeout,
                                               approve_here=not args.approve_in_console)
                if flywheel and finished:
                    result_flywheel = flywheel.run_flywheel(stack, deps, deadline=time.monotonic() + timeout, say=say)
                result = collect(stack, deps, seen=watch.seen)
                if flywheel:
                    result["flywheel"] = result_flywheel if finished else {"ok": False, "why": "the sample never finished"}
                keep_reports(deps, result, reports_dir)
            elapsed = time.monotonic() - started
            _print_result(result, as_json=args.json)
            if flywheel and not args.json:
                print(flywheel.render(result["flywheel"]), flush=True)
            if args.approve_in_console:
                for r in result["runs"]:
                    if r["state"].startswith("awaiting_approval:"):
                        say(f"run {r['run_id']} waits for approval: {stack.api_url}/console/runs/{r['run_id']} "
                            f"(sign in as {DEMO_APPROVER})")
            if args.keep_running or args.approve_in_console:
                say(f"the stack stays up: console {stack.api_url}/console/ ; `ftops demo --restart devhost` "
                    "(or emulator, azurite) kills one process to see the app recover; Ctrl-C stops everything")
                try:
                    while True:
                        for name in stack.revive():
                            say(f"{name} started again on the same ports")
                        stack.check_alive()
                        time.sleep(1)
                except KeyboardInterrupt:
                    say("stopping the stack")
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    except StackError as exc:
        say(f"the local stack failed: {exc}")
        _tail(log_dir / "devhost.log")
        return 1
    finally:
        remove_state(state)
    if not finished:
        say(f"runs still not terminal after {timeout:.0f} s; dev host log: {log_dir / 'devhost.log'}")
        _tail(log_dir / "devhost.log")
        return 1
    say(f"done in {elapsed:.0f} s; every process started was stopped")
    failed = unexpected_failures(result, sample=args.datasets is None,
                                 waiting_ok=args.approve_in_console or flywheel is not None)
    if flywheel and not result["flywheel"].get("ok"):
        failed.append(f"the flywheel did not reach awaiting_approval:prod: {result['flywheel']}")
    if failed:
        say("failed unexpectedly: " + "; ".join(failed))
        return 1
    return 0


def _print_result(result: dict[str, Any], *, as_json: bool) -> None:
    print(json.dumps(result, default=str) if as_json else render(result), flush=True)


def keep_reports(deps: Deps, result: dict[str, Any], folder: Path) -> None:
    """Every run's reports copied from the (in-memory) storage to disk before the stack goes, and where."""
    from ftops_cli.report import fetch
    for r in result["runs"]:
        written = fetch(deps, r["run_id"], folder)
        r["reports_on_disk"] = [str(p) for p in written]
        if written:
            say(f"reports of run {r['run_id']}: {', '.join(str(p) for p in written if p.suffix == '.html')}")
    say(f"reports kept in {folder}")


# A verdict on the data or by a person is an answer, not a failure of the demo: exit 0 with the reason shown.
VERDICTS = {"rejected", "evaluation_failed", "approval_denied", "cancelled", "retired"}


def unexpected_failures(result: dict[str, Any], *, sample: bool, waiting_ok: bool = False) -> list[str]:
    """What makes the demo exit 1 although every run finished: a run that failed for a reason that is not
    a verdict (training, deployment), a dead-lettered message, or the sample not reaching prod."""
    failed = []
    for r in result["runs"]:
        if r["reached_end"] or (r["state"].partition(":")[0] in VERDICTS and not sample):
            continue
        if waiting_ok and r["state"].startswith("awaiting_approval:"):   # left to a person in the console
            continue
        failed.append(f"run {r['run_id']} ended {r['state']}: {r['reason'] or 'no reason recorded'}")
    failed += [f"dead letter on {x['queue']}: {x.get('reason')}" for x in result["dead_letters"]]
    return failed


# --- dropping -------------------------------------------------------------------------------------------
def _plan_drops(datasets: Path | None) -> list[tuple[str, list[tuple[str, Path]]]]:
    """[(start blob, [(blob name, file), …in upload order])]: a folder's run.json goes last, as it starts the run.
    Says on stderr what it does not drop, and why."""
    if datasets is None:   # the sample as a run folder whose run.json names its owner, so it may reach prod
        folder = SAMPLE.stem
        return [(f"{folder}/run.json", [(f"{folder}/train.jsonl", SAMPLE), (f"{folder}/run.json", _sample_run_json())])]
    if not datasets.exists():
        raise UsageError(f"--datasets {datasets}: no such folder")
    if not datasets.is_dir():
        raise UsageError(f"--datasets {datasets}: a file; --datasets takes a folder of *.jsonl files and run "
                         f"folders (check a single file with `ftops validate {datasets}`)")
    drops: list[tuple[str, list[tuple[str, Path]]]] = []
    for path in sorted(datasets.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix == ".jsonl":
            drops.append((path.name, [(path.name, path)]))
        elif path.is_file():
            say(f"skipping {path.name}: not a .jsonl file (intake would reject it as not_a_dataset; "
                f"`ftops validate {path}` says what it is)")
        elif path.is_dir() and (path / "run.json").is_file():
            start = path / "run.json"
            ordered = sorted(f for f in path.rglob("*") if f.is_file() and f != start) + [start]
            drops.append((f"{path.name}/run.json",
                          [(f"{path.name}/{f.relative_to(path).as_posix()}", f) for f in ordered]))
        elif path.is_dir():
            say(f"skipping {path.name}/: no run.json (a folder drop starts with its run.json; add one, {{}} "
                "for the defaults)")
    return drops


def _sample_run_json() -> Path:
    from local.emulator.identity import USERS
    path = Path(tempfile.mkdtemp(prefix="ftops-demo-")) / "run.json"
    path.write_text(json.dumps({"owner": USERS[DEMO_OWNER].oid, "ticket": DEMO_TICKET}), encoding="utf-8")
    return path


def drop_datasets(deps: Deps, drops: list[tuple[str, list[tuple[str, Path]]]]) -> set[str]:
    """Upload every drop; returns the `source` each run will carry (container/start blob)."""
    container = deps.blobs.get_container_client(deps.settings.datasets_container)
    for start, files in drops:
        for name, path in files:
            with path.open("rb") as data:
                container.upload_blob(name, data, overwrite=True)
        say(f"dropped {deps.settings.datasets_container}/{start}" + (f" ({len(files)} files)" if len(files) > 1 else ""))
    return {f"{deps.settings.datasets_container}/{start}" for start, _ in drops}


# --- waiting --------------------------------------------------------------------------------------------
def wait_until_done(stack: Any, deps: Deps, sources: set[str], *, deadline: float, approve_here: bool = True) -> bool:
    """Follow the runs (printing each transition), approve what waits for approval; True once every run
    is terminal and every live deployment of a deployed run has been pinged. Without `approve_here`, a run
    waiting for approval counts as settled: a person approves it in the console."""
    from shared.run import states
    progress = _Progress(deps)
    approved: set[tuple[str, str]] = set()
    claimed: set[str] = set()
    while True:
        stack.check_alive()
        runs = deps.registry.list_runs()
        deployments = deps.registry.list_deployments()
        progress.show(runs, deployments)
        for run in runs:
            kind, env = states.split(run.state)
            if kind == "awaiting_approval" and run.run_id not in claimed and confirm_owner(stack, run):
                claimed.add(run.run_id)
            # approve() is False when the API could not answer (the dev host restarting): look again next time
            if approve_here and kind == "awaiting_approval" and env and (run.run_id, env) not in approved \
                    and approve(stack, run.run_id, env):
                approved.add((run.run_id, env))
        if _done(runs, deployments, sources, waiting_ok=not approve_here):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _done(runs: list[Any], deployments: list[Any], sources: set[str], *, waiting_ok: bool = False) -> bool:
    settled = [r.terminal or (waiting_ok and r.state.startswith("awaiting_approval:")) for r in runs]
    if not sources <= {r.source for r in runs} or not all(settled):
        return False
    deployed = {r.run_id for r in runs if r.state.startswith("deployed:")}
    return all(d.last_ping for d in deployments if d.run_id in deployed and d.state == "active")


def confirm_owner(stack: Any, run: Any) -> bool:
    """What the owner run.json names does with `ftops claim`: confirm it with their own sign-in, so the run
    may enter a gated environment (the owner in a file is only a claim). True when there is nothing (more)
    to do; a run whose owner is no demo user stays waiting, as it would for a person elsewhere."""
    from ftops_cli.operator_client import ApiError, local_client
    from local.emulator.identity import USERS
    owner = next((u for u in USERS.values() if u.oid == run.owner), None)
    if owner is None or run.claimed_by == run.owner or run.started_by:
        return True
    try:
        local_client(stack.api_url, stack.env, owner.username).call("POST", f"runs/{run.run_id}/claim", {})
    except ApiError as exc:
        if exc.status == 0 or exc.status >= 500:
            return False
        say(f"run {run.run_id}: {owner.name} could not confirm owning it ({exc.status}): {exc.message}")
        return True
    say(f"run {run.run_id}: {owner.name} confirmed owning it (ftops claim, as {owner.username})")
    return True


def approve(stack: Any, run_id: str, environment: str) -> bool:
    """What an operator does with `ftops approve`: signed in (here: the emulator's identity provider), the
    operator API approves the model the run holds now. A refusal (e.g. four eyes) is shown and the run is
    rejected, so it ends; False when the API could not answer now (try again)."""
    from ftops_cli.operator_client import ApiError, local_client
    client = local_client(stack.api_url, stack.env, DEMO_APPROVER)
    try:
        answer = client.approve(run_id, environment, ticket=DEMO_TICKET, comment="approved by ftops demo")
    except ApiError as exc:
        if exc.status == 0 or exc.status >= 500:
            return False
        say(f"run {run_id}: approval of {environment} refused ({exc.status}): {exc.message}")
        with contextlib.suppress(ApiError):   # end the run instead of leaving it waiting for a person
            client.call("POST", f"runs/{run_id}/reject", {"environment": environment, "ticket": DEMO_TICKET,
                                                          "reason": f"the demo's approval was refused: {exc.message}"})
        return True
    a = answer["approved"]
    say(f"run {run_id}: approved {a['model']} into {environment} through the operator API as {a['approver_name']} "
        f"({a['approver_oid']}, ticket {DEMO_TICKET})")
    return True


class _Progress:
    """Prints each run's transitions from its audit trail (none is missed between two looks) and pings."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._printed: dict[str, int] = {}
        self._done: set[str] = set()
        self._pings: dict[str, str] = {}

    def show(self, runs: list[Any], deployments: list[Any]) -> None:
        for run in runs:
            if run.run_id in self._done:
                continue
            trail = self._deps.registry.audit_trail(run.run_id)
            for entry in trail[self._printed.get(run.run_id, 0):]:
                if entry["to_state"] and entry["to_state"] != entry["from_state"]:
                    origin = f"{entry['from_state']} → " if entry["from_state"] else ""
                    say(f"run {run.run_id}: {origin}{entry['to_state']}")
                elif entry["action"].startswith("approval"):
                    say(f"run {run.run_id}: {entry['action']} by {entry['actor']}")
            self._printed[run.run_id] = len(trail)
            if run.terminal:     # its trail is complete: stop reading it
                self._done.add(run.run_id)
        for d in deployments:
            if d.last_ping and self._pings.get(d.slot) != d.last_ping:
                if d.slot not in self._pings:
                    say(f"keep-alive: {d.environment} {d.account}/{d.deployment} answered at {d.last_ping}")
                self._pings[d.slot] = d.last_ping


# --- the result -----------------------------------------------------------------------------------------
def collect(stack: Any, deps: Deps, *, seen: dict[str, float] | None = None) -> dict[str, Any]:
    runs = deps.registry.list_runs()
    order = [e["name"] for e in deps.settings.load_spokes_json().get("environments", [])]
    # in promotion order (dev, test, prod), not the registry's alphabetical one
    deployments = sorted(deps.registry.list_deployments(),
                         key=lambda d: (order.index(d.environment) if d.environment in order else len(order),
                                        d.region, d.account))
    emulator = stack.emulator_state()
    views = [{**run_view(r, [d for d in deployments if d.run_id == r.run_id],
                         reports_container=deps.settings.reports_container, topology=deps.topology),
              "trail": trail(deps, r.run_id)} for r in runs]
    return {
        "runs": views,
        "push": {"poll_schedule": stack.env.get("POLL_SCHEDULE"), "runs": timings(views, emulator, seen or {})},
        "dead_letters": dead_letters(stack.env["AzureWebJobsStorage"]),
        "emulator": {"jobs_created": emulator["jobs_created"],
                     "deployments": [{k: d[k] for k in ("account", "region", "deployment", "model")}
                                     for d in emulator["deployments"]]},
    }


def trail(deps: Deps, run_id: str) -> list[list[str | None]]:
    """The run's states as its audit trail recorded them: [from, to] per transition, oldest first."""
    return [[a["from_state"], a["to_state"]] for a in deps.registry.audit_trail(run_id)
            if a["action"].startswith("run.")]


def dead_letters(connection: str) -> list[dict[str, Any]]:
    """Everything in a `*-deadletter` queue (and the blob poison queue), without removing it."""
    from azure.storage.queue import QueueServiceClient

    from shared.azure.bus import DEADLETTER_SUFFIX
    service = QueueServiceClient.from_connection_string(connection)
    letters = []
    for queue in service.list_queues():
        if not (queue.name.endswith(DEADLETTER_SUFFIX) or queue.name in POISON_QUEUES):
            continue
        for message in service.get_queue_client(queue.name).peek_messages(max_messages=32):
            try:
                letter = json.loads(message.content)
            except ValueError:
                letter = {"body": message.content}
            letter.setdefault("queue", queue.name.removesuffix(DEADLETTER_SUFFIX))
            letter.setdefault("reason", None)
            letters.append(letter)
    return letters


def render(result: dict[str, Any]) -> str:
    """The summary table; under each run that did not reach its end, why and where its report is."""
    lines = [""]
    rows = []
    for r in result["runs"]:
        ev = r["evaluation"]
        verdict = "-" if ev is None else ("passed" if ev.get("passed") else "failed")
        rows.append([r["run_id"], r["state"], r["job_id"] or "-", verdict, r["source"]])
    runs = table(["RUN", "STATE", "JOB", "EVALUATION", "SOURCE"], rows)
    lines.append(runs[0])
    for r, row in zip(result["runs"], runs[1:]):
        lines.append(row)
        if not r["reached_end"] or r["reason"]:   # reached its own end, yet can never go further: why
            lines.append(f"    why:    {r['reason'] or 'no reason recorded'}")
            lines.append(f"    report: {', '.join(r['reports']) or '-'}")
    deployments = [d for r in result["runs"] for d in r["deployments"]]
    if deployments:
        lines.append("")
        lines += table(["ENVIRONMENT", "ACCOUNT", "REGION", "DEPLOYMENT", "STATE", "LAST PING"],
                       [[d["environment"], d["account"], d["region"], d["deployment"], d["state"],
                         d["last_ping"] or "-"] for d in deployments])
    if result.get("push"):
        lines += render_timings(result["push"]["runs"], result["push"]["poll_schedule"])
    emulator = result["emulator"]
    lines += ["", (f"emulator: {emulator['jobs_created']} fine-tuning job(s) created, "
                   f"{len(emulator['deployments'])} deployment(s) on spoke accounts")]
    letters = result["dead_letters"]
    lines.append(f"dead letters: {len(letters)}")
    for letter in letters:
        lines.append(f"  {letter['queue']}: {letter.get('reason')}: {letter.get('description', '')}")
    return "\n".join(lines)


# --- helpers --------------------------------------------------------------------------------------------
def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _stop_on_sigterm() -> None:
    # SIGTERM (a CI job cancelled) unwinds like Ctrl-C, so the stack's `with` stops every process
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt
    with contextlib.suppress(ValueError):   # not the main thread (embedded use): leave signals alone
        signal.signal(signal.SIGTERM, interrupt)


def _tail(path: Path, lines: int = 40) -> None:
    with contextlib.suppress(OSError):
        say(f"--- last {lines} lines of {path} ---")
        say("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
