"""The evaluation report: one JSON document (machine-readable, the source of truth) and a self-contained
HTML page rendered from it (inline SVG, no scripts, every string escaped).

Reports hold example text, so prompts and answers are truncated and only the worst few are kept.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from shared.evaluation import svg
from shared.evaluation.examples import Example
from shared.evaluation.gates import Gate
from shared.evaluation.metrics import CandidateMetrics, ExampleResult
from shared.evaluation.runner import Candidate

SCHEMA_VERSION = 1
WORST_EXAMPLES = 15
TEXT_LIMIT = 300
MAX_LOSS_POINTS = 400


def truncate(text: str | None, limit: int = TEXT_LIMIT) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def loss_rows(metrics: Any) -> list[dict[str, float]]:
    """Per-step loss rows from whatever shape the poller stored (results.csv-derived): a list of rows, a
    dict holding such a list, or columns as lists. Unparseable values are dropped, never fatal."""
    rows: list[Any] = []
    if isinstance(metrics, list):
        rows = metrics
    elif isinstance(metrics, Mapping):
        if isinstance(metrics.get("step"), list):   # columns
            cols = {k: v for k, v in metrics.items() if isinstance(v, list)}
            rows = [{k: v[i] for k, v in cols.items() if i < len(v)} for i in range(len(metrics["step"]))]
        else:
            for value in metrics.values():
                if isinstance(value, list) and value and isinstance(value[0], Mapping) and "step" in value[0]:
                    rows = value
                    break
    out = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        step = _num(row.get("step"))
        if step is None:
            continue
        clean = {"step": step}
        for key in ("train_loss", "valid_loss", "full_valid_loss"):
            value = _num(row.get(key))
            if value is not None:
                clean[key] = value
        if len(clean) > 1:
            out.append(clean)
    out.sort(key=lambda r: r["step"])
    stride = max(1, -(-len(out) // MAX_LOSS_POINTS))   # keep the report small on long jobs
    return out[::stride]


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def worst_examples(examples: Sequence[Example], chosen: Sequence[ExampleResult], base: Sequence[ExampleResult],
                   limit: int = WORST_EXAMPLES) -> list[dict[str, Any]]:
    order = sorted(range(len(chosen)), key=lambda i: (chosen[i].ok, chosen[i].f1, examples[i].line))[:limit]
    return [{"line": examples[i].line, "prompt": truncate(examples[i].prompt_text),
             "reference": truncate(examples[i].reference), "answer": truncate(chosen[i].answer),
             "f1": round(chosen[i].f1, 4), "error": chosen[i].error,
             "base_answer": truncate(base[i].answer) if i < len(base) else None,
             "base_f1": round(base[i].f1, 4) if i < len(base) else None} for i in order]


def build_report(*, run_id: str, base_model: str, fine_tuned_model: str, eval_path: str,
                 examples: Sequence[Example], available: int, skipped_lines: Sequence[str],
                 candidates: Sequence[Candidate], results: Mapping[str, Sequence[ExampleResult]],
                 metrics: Mapping[str, CandidateMetrics], skipped_candidates: Sequence[Mapping[str, str]],
                 chosen: Candidate, gates: Sequence[Gate], training_metrics: Any) -> dict[str, Any]:
    passed = all(g.passed for g in gates)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "base_model": base_model,
        "fine_tuned_model": fine_tuned_model,
        "examples": {"source": eval_path, "evaluated": len(examples), "available": available,
                     "skipped": list(skipped_lines)},
        "candidates": [{"name": c.name, "kind": c.kind, "model": c.model, "step": c.step,
                        "deployment": c.deployment, "sku": c.sku, "metrics": metrics[c.name].to_dict(),
                        "latencies_ms": [round(r.latency_ms, 1) for r in results[c.name] if r.latency_ms is not None]}
                       for c in candidates if c.name in metrics],
        "skipped_candidates": [dict(s) for s in skipped_candidates],
        "chosen": {"name": chosen.name, "kind": chosen.kind, "model": chosen.model},
        "gates": [g.to_dict() for g in gates],
        "passed": passed,
        "failed_gates": [g.name for g in gates if not g.passed],
        "worst_examples": worst_examples(examples, results[chosen.name], results.get("base", [])),
        "training_metrics": loss_rows(training_metrics),
    }


_CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#111827}
table{border-collapse:collapse;width:100%;margin:1em 0}td,th{border:1px solid #e5e7eb;padding:4px 8px;
text-align:left;vertical-align:top;font-size:13px}th{background:#f9fafb}.pass{color:#15803d;font-weight:600}
.fail{color:#b91c1c;font-weight:600}.muted{color:#6b7280}td.text{white-space:pre-wrap;max-width:280px}"""


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
    return escape(str(value))


def _verdict(ok: bool) -> str:
    return '<span class="pass">PASS</span>' if ok else '<span class="fail">FAIL</span>'


def render_html(report: Mapping[str, Any]) -> str:
    e = escape
    candidates = report["candidates"]
    chosen = report["chosen"]["name"]
    gates = {g["name"]: g for g in report["gates"]}
    parts = [(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Evaluation {e(report["run_id"])}'
              f'</title><style>{_CSS}</style></head><body>'),
             f'<h1>Evaluation of run {e(report["run_id"])}: {_verdict(report["passed"])}</h1>',
             (f'<p>Fine-tuned model <code>{e(report["fine_tuned_model"])}</code> against base '
              f'<code>{e(report["base_model"])}</code> on {report["examples"]["evaluated"]} held-out examples '
              f'(of {report["examples"]["available"]} in <code>{e(report["examples"]["source"])}</code>). '
              f'Chosen: <b>{e(chosen)}</b> <code>{e(report["chosen"]["model"])}</code>. '
              f'<span class="muted">Generated {e(report["generated_at"])}.</span></p>'),
             "<h2>Gates</h2><table><tr><th>gate</th><th>value</th><th>threshold</th><th>verdict</th><th>detail</th></tr>"]
    for g in report["gates"]:
        parts.append(f'<tr><td>{e(g["name"])}</td><td>{_fmt(g["value"])}</td><td>{_fmt(g["threshold"])}</td>'
                     f'<td>{_verdict(g["passed"])}</td><td>{e(g["detail"])}</td></tr>')
    parts.append("</table><h2>Candidates</h2><table><tr><th>candidate</th><th>model</th><th>sku</th>"
                 "<th>mean F1</th><th>exact match</th><th>p50 ms</th><th>p95 ms</th><th>prompt tok</th>"
                 "<th>completion tok</th><th>errors</th></tr>")
    for c in candidates:
        m = c["metrics"]
        parts.append(f'<tr><td>{e(c["name"])}{" ★" if c["name"] == chosen else ""}</td><td><code>{e(c["model"])}'
                     f'</code></td><td>{e(c["sku"])}</td><td>{_fmt(m["mean_f1"])}</td><td>{_fmt(m["exact_match"])}</td>'
                     f'<td>{_fmt(m["latency_p50_ms"])}</td><td>{_fmt(m["latency_p95_ms"])}</td>'
                     f'<td>{_fmt(m["mean_prompt_tokens"])}</td><td>{_fmt(m["mean_completion_tokens"])}</td>'
                     f'<td>{m["n_errors"]} / {m["n"]}</td></tr>')
    parts.append("</table>")
    for s in report["skipped_candidates"]:
        parts.append(f'<p class="muted">Not evaluated: {e(s.get("name", ""))} — {e(s.get("reason", ""))}</p>')
    lines = [("min score", float(gates["min_score"]["threshold"]))] if "min_score" in gates else []
    base = next((c for c in candidates if c["kind"] == "base"), None)
    if base is not None and "min_improvement" in gates:
        lines.append(("base + min improvement", base["metrics"]["mean_f1"] + float(gates["min_improvement"]["threshold"])))
    parts.append("<h2>Score</h2>" + svg.bar_chart([(c["name"], c["metrics"]["mean_f1"]) for c in candidates],
                                                    title="Mean token F1 per candidate", lines=lines,
                                                    highlight=chosen))
    limit = gates.get("max_latency_p95_ms", {}).get("threshold")
    parts.append("<h2>Latency</h2>" + svg.strip_chart([(c["name"], c["latencies_ms"]) for c in candidates],
                                                      title="Latency per call", limit=limit))
    loss = report.get("training_metrics") or []
    series = [(key, [(r["step"], r[key]) for r in loss if key in r]) for key in ("train_loss", "valid_loss")]
    series = [s for s in series if s[1]]
    if series:
        parts.append("<h2>Training loss</h2>" + svg.line_chart(series, title="Loss by training step"))
    parts.append("<h2>Worst examples (chosen model)</h2><table><tr><th>line</th><th>prompt</th><th>reference</th>"
                 "<th>answer</th><th>F1</th><th>base answer</th><th>base F1</th></tr>")
    for w in report["worst_examples"]:
        answer = w["answer"] if w["error"] is None else f'error: {w["error"]}'
        parts.append(f'<tr><td>{w["line"]}</td><td class="text">{e(w["prompt"])}</td><td class="text">'
                     f'{e(w["reference"])}</td><td class="text">{e(answer)}</td><td>{_fmt(w["f1"])}</td>'
                     f'<td class="text">{e(w["base_answer"] or "")}</td><td>{_fmt(w["base_f1"])}</td></tr>')
    parts.append("</table>")
    if report["examples"]["skipped"]:
        parts.append("<h2>Skipped lines</h2><ul>" + "".join(f"<li>{e(s)}</li>" for s in report["examples"]["skipped"])
                     + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def summary(report: Mapping[str, Any], paths: Mapping[str, str]) -> dict[str, Any]:
    """The registry's `evaluation` field: small (Table Storage properties are capped at 64 KiB)."""
    return {"passed": report["passed"], "chosen": report["chosen"]["model"], "chosen_name": report["chosen"]["name"],
            "scores": {c["name"]: c["metrics"]["mean_f1"] for c in report["candidates"]},
            "base_score": next((c["metrics"]["mean_f1"] for c in report["candidates"] if c["kind"] == "base"), None),
            "gates": report["gates"], "failed_gates": report["failed_gates"],
            "examples": report["examples"]["evaluated"], "reports": dict(paths)}
