"""`ftops demo --flywheel`: the loop closed on one machine, after the sample has reached prod.

The emulator serves production traffic to prod (stored with metadata; some exchanges carry personal data or
a secret, some are repeats, some are the champion's own held-out questions) and another system drops JSONL
exchanges into the traffic container. The dev host's harvest timer collects and curates them; the run
folder it drops trains a smaller student, which is evaluated against the champion and waits for a verified
approver (the demo does not approve it). Printed: the loop's wall time from the first stored exchange, the
curation counts, planted personal data and held-out questions found in the training file (both must be 0),
the student's score against the champion's with intervals, and the cost ratio.

Then the drift watch on prod, with a judge deployed on the hub: production asks what the champion was
trained on (no drift), then about something it never learnt (drift, on the production leg only). The drift
timer's schedule is hours, so the demo calls its handler (shared.stages.drift.handle_drift_tick) at those
two moments: the same code the timer runs.
"""
from __future__ import annotations

import json
import ssl
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

ROOT = Path(__file__).resolve().parents[1]
APP = "support-bot"                          # the metadata production traffic is stored with
STUDENT = "gpt-4.1-nano-2025-04-14"          # the smaller base model the flywheel distils into
HARVEST_EVERY = "*/3 * * * * *"
PLANTED = ["Please send the invoice to maria.lopez@fabrikam.com, I changed my address",
           "My card is 4111 1111 1111 1111 - why was it charged twice?",
           "Refund to IBAN DE89 3704 0044 0532 0130 00 please",
           "Our deploy key is sk-proj-Zx8fQ2mN7rT4vW1yB6cH9jK3lP5sD0gA, is it still valid?",
           "Call me back on +1 425 555 0147 about my order",
           "Use password=Sup3rS3cret!2026 for the admin account and reset it"]
FRAMES = ("Hello, quick one: {q} Thanks a lot!", "{q} Asking for my team, cheers.", "Could you help me? {q}")
JUDGE, JUDGE_MODEL = "judge", "gpt-4.1-2025-04-14"   # the drift watch's judge: a base model on the hub
OFF_TOPIC = [f"Will the {thing} pair with the boiler in the {room}?"   # a product the champion never learnt
             for thing in ("thermostat", "sprinkler", "lawn mower", "radiator valve", "boiler sensor")
             for room in ("garage", "garden", "attic", "cellar", "loft", "greenhouse", "porch", "shed")]


def spokes_with_harvest() -> Path:
    """The demo spokes with prod's flywheel switched on: distil into a smaller model, drop personal data."""
    config = json.loads((ROOT / "local" / "spokes.demo.json").read_text())
    prod = next(e for e in config["environments"] if e["name"] == "prod")
    prod["harvest"] = {"metadata": {"app": APP}, "min_examples": 100, "min_rating": 3,
                       "student_base_model": STUDENT, "max_cost_ratio": 0.5, "privacy": "drop",
                       "drift_examples": 20, "judge": JUDGE, "drift_starts_harvest": False}
    path = Path(tempfile.mkdtemp(prefix="ftops-flywheel-")) / "spokes.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def env_overrides() -> dict[str, str]:
    return {"HARVEST_SCHEDULE": HARVEST_EVERY}


def run_flywheel(stack: Any, deps: Deps, *, deadline: float, say: Any) -> dict[str, Any]:
    champion = next((r for r in deps.registry.list_runs() if r.state == "deployed:prod"), None)
    if champion is None:
        return {"ok": False, "why": "no run reached prod: nothing serves production traffic"}
    name = champion.settings.get("deployment_name") or champion.run_id
    prompts = _lines(deps, champion.data_files["train"])
    held_out = _lines(deps, champion.data_files["eval"])
    env = deps.require_topology().environment("prod")
    assert env is not None
    started = time.monotonic()
    served = _serve_production(stack, deps, env, name, prompts, held_out)
    say(f"flywheel: prod served {served['stored']} stored exchanges ({len(PLANTED)} with personal data or a "
        f"secret, {served['repeats']} repeats, {served['held_out']} of the champion's held-out questions); "
        f"{served['traffic']} more dropped into {deps.settings.traffic_container}/{name}/")
    student = _wait_for_student(deps, champion.run_id, deadline, say)
    loop_s = time.monotonic() - started
    if student is None:
        return {"ok": False, "why": "the harvest made no run in time", "loop_seconds": round(loop_s, 1)}
    evidence = _evidence(deps, champion, student, held_out)   # before the drift watch's traffic is harvested too
    drift = _drift(stack, deps, env, name, prompts, say)
    return {"ok": student.state == "awaiting_approval:prod" and drift["ok"], "loop_seconds": round(loop_s, 1),
            "student_run": student.run_id, "student_state": student.state, **served, **evidence, "drift": drift}


def _serve_production(stack: Any, deps: Deps, env: Any, name: str, train: list[dict[str, Any]],
                      held_out: list[dict[str, Any]]) -> dict[str, int]:
    """Prod's production traffic (with planted personal data, repeats and held-out questions) and a CRM's
    export of rated exchanges in the traffic container."""
    questions = [frame.format(q=_user(e)) for e in train for frame in FRAMES]
    repeats = questions[:10]
    asked = questions + repeats + PLANTED + [_user(e) for e in held_out[:5]]
    _ask(stack, deps, env, name, asked)
    container = deps.blobs.get_container_client(deps.settings.traffic_container)
    lines = [json.dumps({"messages": [{"role": "user", "content": _user(e)},
                                      {"role": "assistant", "content": _answer(e)}], "rating": 1 + i % 5})
             for i, e in enumerate(train[:10])]
    container.upload_blob(f"{name}/crm-export.jsonl", "\n".join(lines), overwrite=True)
    return {"stored": len(asked), "repeats": len(repeats), "held_out": min(5, len(held_out)),
            "planted": len(PLANTED), "traffic": len(lines)}


def _ask(stack: Any, deps: Deps, env: Any, name: str, questions: list[str]) -> list[str]:
    """Production calls to every prod spoke in the hub's tenant (the other tenant's data stays there), as a
    customer's application makes them: v1 chat completions with `store` and metadata; the answers."""
    import httpx2
    import openai
    http = httpx2.Client(verify=ssl.create_default_context(cafile=stack.env["FTOPS_CA_BUNDLE"]))
    targets = [t for t in env.targets if t.tenant == deps.settings.hub.tenant]
    answers = []
    for i, question in enumerate(questions):
        target = targets[i % len(targets)]
        client = openai.OpenAI(base_url=f"{deps.spokes.endpoint(target)}/openai/v1/",
                               api_key=f"local-dev.{target.tenant}", http_client=http)
        reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": question}],
                                               store=True, metadata={"app": APP})
        answers.append(reply.choices[0].message.content or "")
    return answers


def _drift(stack: Any, deps: Deps, env: Any, name: str, train: list[dict[str, Any]], say: Any) -> dict[str, Any]:
    """The drift watch on prod: production on the champion's subjects, then off them. Each time the CRM also
    exports those conversations to the traffic container, so both sources the check samples hold them (the
    copies are dropped as duplicates)."""
    from shared.evaluation.hubdeploy import create_deployment, hub_account
    from shared.evaluation.runner import Candidate
    from shared.stages.drift import handle_drift_tick, warning
    create_deployment(deps.arm_deployments, hub_account(deps.settings.hub),
                      Candidate(JUDGE, "base", JUDGE_MODEL, JUDGE, "standard", 10), tags={})
    out: dict[str, Any] = {}
    for label, questions in (("on_topic", [_user(e) for e in train]), ("off_topic", OFF_TOPIC)):
        answers = _ask(stack, deps, env, name, questions)
        export = [json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                  for q, a in zip(questions, answers, strict=True)]
        deps.blobs.get_container_client(deps.settings.traffic_container).upload_blob(
            f"{name}/crm-export-{label}.jsonl", "\n".join(export), overwrite=True)
        check = next(c for c in handle_drift_tick(deps) if (c.environment, c.deployment) == ("prod", name))
        production = check.production or {}
        out[label] = {"asked": len(questions), "drifted": check.drifted, "held_out_drifted": check.held_out_drifted,
                      "held_out": {"grader": check.grader, "mean": check.mean, "examples": check.examples,
                                   "evaluation": check.baseline, "shortfall": check.shortfall},
                      "production": production,
                      "warning": warning(asdict(check)) if check.drifted else None}
        say(f"flywheel: drift check after {len(questions)} {label.replace('_', '-')} production questions: "
            f"{'drift' if check.drifted else 'no drift'}")
    out["ok"] = not out["on_topic"]["drifted"] and bool(out["off_topic"]["drifted"])
    return out


def _wait_for_student(deps: Deps, champion_run: str, deadline: float, say: Any) -> Any:
    shown: str | None = None
    while time.monotonic() < deadline:
        student = next((r for r in deps.registry.list_runs()
                        if (r.settings.get("origin") or {}).get("champion_run") == champion_run), None)
        if student is not None and student.state != shown:
            say(f"flywheel: run {student.run_id} (student {student.settings.get('base_model')}): {student.state}")
            shown = student.state
        if student is not None and (student.terminal or student.state.startswith("awaiting_approval:")):
            return student
        time.sleep(0.5)
    return None


def _evidence(deps: Deps, champion: Any, student: Any, held_out: list[dict[str, Any]]) -> dict[str, Any]:
    """What a reviewer checks: nothing planted or held out in the training file, and the trade."""
    from shared.validation.curation import prompt_text
    folder = student.source.split("/", 1)[1].rsplit("/", 1)[0]
    train = deps.blobs.get_container_client(deps.settings.datasets_container).download_blob(
        f"{folder}/train.jsonl").readall().decode()
    planted_found = sum(1 for p in PLANTED if any(part in train for part in _needles(p)))
    trained_prompts = {prompt_text(json.loads(line)["messages"]) for line in train.splitlines() if line.strip()}
    leaked = sum(1 for e in held_out if prompt_text(e["messages"]) in trained_prompts)
    state = json.loads(deps.blobs.get_blob_client(
        deps.settings.reports_container,
        f"flywheel/prod/{student.settings['deployment_name']}/state.json").download_blob().readall())
    out: dict[str, Any] = {"curation": state.get("counts", {}), "training_examples": len(trained_prompts),
                           "planted_in_training": planted_found, "held_out_in_training": leaked}
    report = json.loads(deps.blobs.get_blob_client(deps.settings.reports_container,
                                                   f"{student.run_id}/evaluation.json").download_blob().readall())
    grader = report.get("gate_grader")
    chosen = (report.get("chosen") or {}).get("name")
    for label, key, value in (("student", "name", chosen), ("champion", "kind", "champion")):
        c: dict[str, Any] = next((c for c in report.get("candidates", []) if c[key] == value), {"metrics": {}})
        interval = (c["metrics"].get("graders") or {}).get(grader) or {}
        out[label] = {"score": interval.get("mean"), "interval": [interval.get("low"), interval.get("high")],
                      "cost_per_1k_requests_usd": c["metrics"].get("cost_per_1k_requests_usd"),
                      "model": c.get("model")}
    out["grader"] = grader
    s, c = out["student"]["cost_per_1k_requests_usd"], out["champion"]["cost_per_1k_requests_usd"]
    out["cost_ratio"] = round(s / c, 3) if s and c else None
    return out


def _needles(text: str) -> list[str]:
    """The personal parts of a planted prompt (an address, a number, a key), as they would appear."""
    import re
    return re.findall(r"[\w.]+@[\w.]+|\d[\d ]{10,}\d|sk-proj-\w+|DE89[\d ]+|Sup3rS3cret\S*|\+1 425 555 0147", text)


def _lines(deps: Deps, path: str) -> list[dict[str, Any]]:
    data = deps.blobs.get_blob_client(deps.settings.reports_container, path).download_blob().readall()
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def _user(example: dict[str, Any]) -> str:
    return next(str(m.get("content")) for m in example["messages"] if m.get("role") == "user")


def _answer(example: dict[str, Any]) -> str:
    return next(str(m.get("content")) for m in reversed(example["messages"]) if m.get("role") == "assistant")


def render(result: dict[str, Any]) -> str:
    if not result.get("student_run"):
        return f"flywheel: {result.get('why')}"
    counts = result.get("curation", {})
    dropped = ", ".join(f"{n} {why}" for why, n in sorted(counts.get("dropped", {}).items())) or "none"

    def side(label: str) -> str:
        s = result.get(label) or {}
        score, ci = s.get("score"), s.get("interval")
        shown = f"{score:.3f}" if isinstance(score, (int, float)) else "—"
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
            shown += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        return shown
    lines = [
        (f"flywheel: loop {result['loop_seconds']:.0f} s from the first stored exchange to "
         f"{result['student_state']} (run {result['student_run']})"),
        (f"  harvested {result['stored']} stored + {result['traffic']} dropped exchanges; kept "
         f"{counts.get('kept', 0)}; dropped: {dropped}"),
        (f"  planted personal data/secrets in the training file: {result['planted_in_training']} of "
         f"{result['planted']}; held-out questions in it: {result['held_out_in_training']}"),
        (f"  {result.get('grader')}: student {side('student')} vs champion {side('champion')} (95% intervals, "
         "the champion's held-out examples); cost per 1,000 requests student/champion "
         f"{result['cost_ratio'] if result['cost_ratio'] is not None else '—'}"),
    ]
    lines += [_drift_line(label, (result.get("drift") or {}).get(label)) for label in ("on_topic", "off_topic")]
    return "\n".join(line for line in lines if line)


def _drift_line(label: str, check: dict[str, Any] | None) -> str:
    if not check:
        return ""
    held = check["held_out"]
    evaluation = held.get("evaluation") or {}
    judged = (check.get("production") or {}).get("judged") or {}
    shown = (f"  drift, {label.replace('_', '-')} production ({check['asked']} asked): held-out {held['grader']} "
             f"{held['mean']:.3f} on {held['examples']} vs its evaluation {evaluation.get('mean', 0):.3f} "
             f"[{evaluation.get('low', 0):.3f}, {evaluation.get('high', 0):.3f}]")
    if judged.get("interval"):
        i, b = judged["interval"], judged["baseline"]
        shown += (f"; judge on {judged['examples']} production answers {i['mean']:.3f} [{i['low']:.3f}, "
                  f"{i['high']:.3f}] vs on {judged['baseline_examples']} held-out answers {b['mean']:.3f} "
                  f"[{b['low']:.3f}, {b['high']:.3f}]")
    shown += f" → {'DRIFT' if check['drifted'] else 'no drift'}"
    return shown + (f"\n    ftops status then warns: {check['warning']}" if check.get("warning") else "")
