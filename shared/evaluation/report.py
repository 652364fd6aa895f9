"""The evaluation report: one JSON document (machine-readable, the source of truth) and a self-contained
HTML page rendered from it (inline SVG, no scripts, every string escaped).

Reports hold example text, so prompts and answers are truncated and only the worst few are kept.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from shared.evaluation import svg
from shared.evaluation.confidence import Interval
from shared.evaluation.examples import Example
from shared.evaluation.gates import Gate
from shared.evaluation.graders import Grader
from shared.evaluation.metrics import CandidateMetrics, ExampleResult
from shared.evaluation.runner import Candidate

SCHEMA_VERSION = 3   # 3: candidate_gates, grader_errors; 2: graders, intervals, comparisons, content filter, cost
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


def _gate_score(row: ExampleResult, grader: str) -> float:
    return row.scores.get(grader, row.f1 if grader == "token_f1" else 0.0)


def worst_examples(examples: Sequence[Example], chosen: Sequence[ExampleResult], base: Sequence[ExampleResult],
                   limit: int = WORST_EXAMPLES, grader: str = "token_f1") -> list[dict[str, Any]]:
    """The chosen model's worst answers by the gate grader, failed calls first — only answers that are actually
    bad: a perfect score is never listed, nor an answer the grader did not or could not score."""
    def bad(i: int) -> bool:
        row = chosen[i]
        return not row.ok or (not _unscored(row, grader) and _gate_score(row, grader) < 1.0)

    order = sorted((i for i in range(len(chosen)) if bad(i)),
                   key=lambda i: (chosen[i].ok, _gate_score(chosen[i], grader), examples[i].line))[:limit]
    return [{"line": examples[i].line, "prompt": truncate(examples[i].prompt_text),
             "reference": truncate(examples[i].reference), "answer": truncate(chosen[i].answer),
             "f1": round(chosen[i].f1, 4), "score": round(_gate_score(chosen[i], grader), 4),
             "scores": {k: round(v, 4) for k, v in chosen[i].scores.items()}, "error": chosen[i].error,
             "base_answer": truncate(base[i].answer) if i < len(base) else None,
             "base_f1": round(base[i].f1, 4) if i < len(base) else None,
             "base_score": _scored(base[i], grader) if i < len(base) else None} for i in order]


def _scored(row: ExampleResult, grader: str) -> float | None:
    """The grader's score of this answer; None when it could not or does not score it (never shown as a 0)."""
    return None if _unscored(row, grader) else round(_gate_score(row, grader), 4)


def _unscored(row: ExampleResult, grader: str) -> bool:
    """The grader could not (a failed judge) or does not (another kind of reference) score this answer."""
    return grader in row.grading_failed or grader in row.not_applicable


def build_report(*, run_id: str, base_model: str, fine_tuned_model: str, eval_path: str,
                 examples: Sequence[Example], available: int, skipped_lines: Sequence[str],
                 candidates: Sequence[Candidate], results: Mapping[str, Sequence[ExampleResult]],
                 metrics: Mapping[str, CandidateMetrics], skipped_candidates: Sequence[Mapping[str, str]],
                 chosen: Candidate, gates: Sequence[Gate], training_metrics: Any,
                 graders: Sequence[Grader] = (), gate_grader: str = "token_f1",
                 comparisons: Mapping[str, Mapping[str, Interval]] | None = None,
                 improvement_rule: str = "lower_bound",
                 candidate_gates: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                 lineage: Mapping[str, Any] | None = None) -> dict[str, Any]:
    passed = all(g.passed for g in gates)
    champion = next((c for c in candidates if c.kind == "champion" and c.name in metrics), None)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "base_model": base_model,
        "fine_tuned_model": fine_tuned_model,
        # where the model came from: dataset hash, the validation report, settings, training size and cost
        "lineage": dict(lineage or {}),
        "examples": {"source": eval_path, "evaluated": len(examples), "available": available,
                     "skipped": list(skipped_lines)},
        "graders": [g.describe() for g in graders],
        "gate_grader": gate_grader,
        "improvement_rule": improvement_rule,
        "candidates": [{"name": c.name, "kind": c.kind, "model": c.model, "step": c.step,
                        "deployment": c.deployment, "sku": c.sku, "metrics": metrics[c.name].to_dict(),
                        **({"environment": c.environment} if c.environment else {}),
                        "latencies_ms": [round(r.latency_ms, 1) for r in results[c.name] if r.latency_ms is not None]}
                       for c in candidates if c.name in metrics],
        "skipped_candidates": [dict(s) for s in skipped_candidates],
        "chosen": {"name": chosen.name, "kind": chosen.kind, "model": chosen.model},
        # the chosen model minus each reference point, per grader, with the paired bootstrap interval
        "comparisons": {other: {"model": next((c.model for c in candidates if c.name == other), None),
                                "improvement": {g: i.to_dict() for g, i in by_grader.items()}}
                        for other, by_grader in (comparisons or {}).items()},
        "champion": ({"model": champion.model, "environment": champion.environment} if champion else None),
        "gates": [g.to_dict() for g in gates],
        # every fine-tuned candidate's gates: the chosen one is the best of those that pass them all
        "candidate_gates": {name: [dict(g) for g in rows] for name, rows in (candidate_gates or {}).items()},
        # answers each grader could not score, per candidate: left out of every comparison, never a 0
        "grader_errors": {c.name: dict(metrics[c.name].grader_errors) for c in candidates if c.name in metrics},
        "passed": passed,
        "failed_gates": [g.name for g in gates if not g.passed],
        "worst_examples": worst_examples(examples, results[chosen.name], results.get("base", []),
                                         grader=gate_grader),
        "training_metrics": loss_rows(training_metrics),
    }


_CSS = """body{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#111827}
table{border-collapse:collapse;width:100%;margin:1em 0;table-layout:fixed}td,th{border:1px solid #e5e7eb;
padding:4px 8px;text-align:left;vertical-align:top;font-size:13px;overflow-wrap:anywhere}th{background:#f9fafb}
.pass{color:#15803d;font-weight:600}.fail{color:#b91c1c;font-weight:600}.muted{color:#6b7280}
td.text{white-space:pre-wrap}svg{max-width:100%;height:auto}code{overflow-wrap:anywhere}
pre{white-space:pre-wrap;overflow-wrap:anywhere}"""

# Each gate's rule in words (the sentence beside it gives the numbers it read).
GATE_RULES = {
    "min_held_out": "at least this many held-out examples graded, or no gate decides anything",
    "min_score": "the mean score is at least the threshold",
    "max_grader_error_rate": "the grader failed on at most this share of answers",
    "min_improvement": "better than the base model: the lower bound of the paired interval (Holm-adjusted for the "
                       "number of candidates) is at least the threshold",
    "min_improvement_over_champion": "against what the environment serves today, by the run's champion_rule: "
                                     "non_inferior (not worse by more than the margin) or superior",
    "max_error_rate": "at most this share of calls failed",
    "max_content_filter_rate": "at most this share of answers flagged by the content filter",
    "max_latency_p95_ms": "the 95th percentile latency is at most the limit",
}


def _lineage_html(lineage: Mapping[str, Any], amendments: Mapping[str, Any] | None = None,
                  generated_at: str = "") -> str:
    """The lineage section: where the model came from, and — once given — the decisions taken on this report
    (`amendments`, shared.stages.report_lineage's document: only this section changes when it is amended)."""
    if not lineage and not amendments:
        return ""
    e = escape
    items = []
    if lineage.get("dataset_hash"):
        items.append(f"dataset <code>sha256:{e(str(lineage['dataset_hash']))}</code>")
    if lineage.get("validation_report"):
        items.append(f'<a href="{e(str(lineage["validation_report"]))}">validation report</a>')
    if lineage.get("trained_tokens") is not None:
        items.append(f"{int(lineage['trained_tokens']):,} trained tokens")
    if lineage.get("training_cost_usd") is not None:
        items.append(f"training ≈ ${float(lineage['training_cost_usd']):,.2f} (estimate)")
    if not amendments:
        items.append("approvals: " + (", ".join(e(str(k)) for k in lineage.get("approvals") or {}) or
                                      "none yet (this section is amended when one is given)"))
    settings = e(json.dumps(lineage.get("settings") or {}, sort_keys=True, ensure_ascii=False)[:4000])
    parts = ['<section id="lineage"><h2>Lineage</h2>']
    if items:
        parts.append(f"<p>{'; '.join(items)}.</p>")
    if amendments:
        parts.append(_decisions_html(amendments, generated_at))
    parts.append(f'<details><summary>Run settings</summary><pre>{settings}</pre>'
                 "</details></section>")
    return "".join(parts)


DECISION_WORDS = {"approval": "approved", "rejection": "rejected", "rollback": "rolled back",
                  "restored": "restored by a rollback", "retirement": "retired"}


def _decisions_html(doc: Mapping[str, Any], generated_at: str) -> str:
    e = escape
    evidence = str(doc.get("evaluation_report_hash") or "")
    rows = []
    for d in doc.get("decisions") or []:
        what = DECISION_WORDS.get(str(d.get("kind")), str(d.get("kind")))
        if d.get("from_model") or d.get("to_model"):
            what += f" ({d.get('from_model') or '?'} → {d.get('to_model') or '?'})"
        said = "; ".join(f"{k} {d[k]}" for k in ("ticket", "reason", "comment") if d.get(k))
        bound = ""
        if d.get("kind") == "approval":
            bound = ("on this report's evaluation.json" if d.get("evaluation_report_hash") == evidence
                     else f"on {d.get('evaluation_report_hash')}")
        rows.append(f"<tr><td>{e(str(d.get('at') or ''))}</td><td>{e(what)}</td><td>{e(str(d.get('environment') or '—'))}"
                    f"</td><td>{e(str(d.get('who') or ''))}</td><td>{e(said)}</td><td>{e(bound)}</td></tr>")
    history = ", ".join(f"{v['version']} ({e(str(v.get('amended_at') or 'as evaluated, ' + generated_at))})"
                        for v in doc.get("versions") or [])
    return (f'<p id="lineage-version">Decisions on this report — lineage version {int(doc.get("version") or 1)}, '
            f'amended {e(str(doc.get("amended_at") or ""))}. Versions: {history}. Only this section is amended: the '
            f'evaluation is as generated at {e(generated_at)}, and <code>evaluation.json</code> '
            f'(<code>{e(evidence)}</code>, the hash each approval names) is unchanged.</p>'
            "<table><tr><th>when</th><th>decision</th><th>environment</th><th>who</th><th>ticket, reason</th>"
            "<th>given on</th></tr>" + "".join(rows) + "</table>")


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
    return escape(str(value))


def _mean(metrics: Mapping[str, Any], grader: str) -> float:
    stats = (metrics.get("graders") or {}).get(grader)
    return float(stats["mean"]) if stats else float(metrics.get("mean_f1", 0.0))


def _bounds(metrics: Mapping[str, Any], grader: str) -> tuple[float, float] | None:
    stats = (metrics.get("graders") or {}).get(grader)
    return (float(stats["low"]), float(stats["high"])) if stats else None


def _interval(metrics: Mapping[str, Any], grader: str) -> str:
    stats = (metrics.get("graders") or {}).get(grader)
    if not stats:
        return _fmt(metrics.get("mean_f1")) if grader == "token_f1" else "—"
    return f'{stats["mean"]:.3f} <span class="muted">[{stats["low"]:.3f}, {stats["high"]:.3f}]</span>'


def _diff(stats: Mapping[str, float] | None) -> str:
    if not stats:
        return "—"
    return f'{stats["mean"]:+.3f} <span class="muted">[{stats["low"]:+.3f}, {stats["high"]:+.3f}]</span>'


def _money(value: float | None) -> str:
    return "—" if value is None else f"${value:.4f}"


def _verdict(ok: bool) -> str:
    return '<span class="pass">PASS</span>' if ok else '<span class="fail">FAIL</span>'


def render_html(report: Mapping[str, Any], amendments: Mapping[str, Any] | None = None) -> str:
    """The page, from the report; `amendments` (the decisions taken on it since, versioned) changes only its
    lineage section."""
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
             _grader_error_headline(report),
             _lineage_html(report.get("lineage") or {}, amendments, str(report.get("generated_at") or "")),
             (f"<h2>Gates of {e(chosen)}</h2><table><tr><th>gate</th><th>rule</th><th>value</th><th>threshold</th>"
              "<th>verdict</th><th>what was measured</th></tr>")]
    for g in report["gates"]:
        parts.append(f'<tr><td>{e(g["name"])}</td><td>{e(GATE_RULES.get(g["name"], ""))}</td><td>{_fmt(g["value"])}'
                     f'</td><td>{_fmt(g["threshold"])}</td><td>{_verdict(g["passed"])}</td><td>{e(g["detail"])}</td></tr>')
    others = {n: gs for n, gs in (report.get("candidate_gates") or {}).items() if n != chosen}
    if others:
        said = "; ".join(f"{e(n)}: " + (", ".join(e(g["name"]) for g in gs if not g["passed"]) or "passes every gate")
                         for n, gs in others.items())
        parts.append("</table><p class=\"muted\">Every fine-tuned candidate is gated; the chosen one is the best "
                     f"of those that pass every gate. Failed gates of the others — {said}.</p><table>")
    grader_names = [g["name"] for g in report.get("graders") or []] or ["token_f1"]
    gate_grader = report.get("gate_grader", "token_f1")
    # one column per candidate (a handful), one row per grader (up to 12): fits 1,280 px however many graders
    head = "".join(f"<th>{e(c['name'])}{' ★' if c['name'] == chosen else ''}</th>" for c in candidates)
    parts.append("</table><h2>Candidates</h2><p class=\"muted\">Mean score per grader with its 95 % interval "
                 "[low, high] (Wilson for 0/1 scores, Student t otherwise); the gates read <b>" + e(gate_grader) +
                 "</b>. ★ chosen.</p><table class=\"grid\"><tr><th>grader</th>" + head + "</tr>")
    for n in grader_names:
        parts.append(f"<tr><th>{e(n)}</th>" + "".join(f"<td>{_interval(c['metrics'], n)}</td>" for c in candidates)
                     + "</tr>")
    rows: list[tuple[str, Callable[[Mapping[str, Any], Mapping[str, Any]], str]]] = [
            ("model", lambda c, m: f"<code>{e(c['model'])}</code>"), ("sku", lambda c, m: e(c["sku"])),
            ("p50 / p95 ms", lambda c, m: f"{_fmt(m['latency_p50_ms'])} / {_fmt(m['latency_p95_ms'])}"),
            ("prompt / completion tokens",
             lambda c, m: f"{_fmt(m['mean_prompt_tokens'])} / {_fmt(m['mean_completion_tokens'])}"),
            ("content filter", lambda c, m: f"{m.get('content_filter_rate', 0.0):.1%}"),
            ("USD / 1k requests", lambda c, m: _money(m.get("cost_per_1k_requests_usd"))),
            ("failed calls", lambda c, m: f"{m['n_errors']} / {m['n']}"),
            ("grader errors", lambda c, m: str(sum((m.get("grader_errors") or {}).values())))]
    for label, cell in rows:
        parts.append(f"<tr><th>{e(label)}</th>" + "".join(f"<td>{cell(c, c['metrics'])}</td>" for c in candidates)
                     + "</tr>")
    parts.append("</table>")
    for s in report["skipped_candidates"]:
        parts.append(f'<p class="muted">Not evaluated: {e(s.get("name", ""))} — {e(s.get("reason", ""))}</p>')
    comparisons = report.get("comparisons") or {}
    if comparisons:
        parts.append(f"<h2>Improvement of {e(chosen)}</h2><p class=\"muted\">Chosen minus the other model on the "
                     "same examples; [low, high] is the 95 % t interval of the paired differences.</p><table><tr><th>against"
                     "</th><th>model</th>" + "".join(f"<th>{e(n)}</th>" for n in grader_names) + "</tr>")
        for other, row in comparisons.items():
            cells = "".join(f"<td>{_diff(row['improvement'].get(n))}</td>" for n in grader_names)
            parts.append(f"<tr><td>{e(other)}</td><td><code>{e(row.get('model') or '')}</code></td>{cells}</tr>")
        parts.append("</table>")
    for g in report.get("graders") or []:
        if g.get("type") == "score_model":
            parts.append(f'<p class="muted">Model grader <b>{e(g["name"])}</b> on hub deployment '
                         f'<code>{e(g.get("model", ""))}</code>, prompt: <code>{e(g.get("prompt", ""))}</code></p>')
    # only a real threshold is drawn as one: the improvement gates read the paired interval (table above),
    # which no line on this chart can show
    lines = [("min_score gate", float(gates["min_score"]["threshold"]))] if "min_score" in gates else []
    parts.append("<h2>Score</h2>" + svg.bar_chart([(c["name"], _mean(c["metrics"], gate_grader)) for c in candidates],
                                                    title=f"Mean {gate_grader} per candidate; whisker: 95 % interval; "
                                                          "dashed: the min_score gate",
                                                    lines=lines, highlight=chosen,
                                                    errors=[_bounds(c["metrics"], gate_grader) for c in candidates]))
    limit = gates.get("max_latency_p95_ms", {}).get("threshold")
    parts.append("<h2>Latency</h2>" + svg.strip_chart([(c["name"], c["latencies_ms"]) for c in candidates],
                                                      title="Latency per call", limit=limit))
    loss = report.get("training_metrics") or []
    series = [(key, [(r["step"], r[key]) for r in loss if key in r]) for key in ("train_loss", "valid_loss")]
    series = [s for s in series if s[1]]
    if series:
        parts.append("<h2>Training loss</h2>" + svg.line_chart(series, title="Loss by training step"))
    parts.append("<h2>Worst examples (chosen model)</h2><p class=\"muted\">Failed calls first, then the lowest "
                 f"{e(gate_grader)} scores; perfect answers are never listed.</p>")
    if not report["worst_examples"]:
        parts.append("<p>None: every answer of the chosen model scored 1.0.</p>")
    parts.append("<table><tr><th>line</th><th>prompt</th><th>reference</th>"
                 "<th>answer</th><th>score</th><th>base answer</th><th>base score</th></tr>")
    for w in report["worst_examples"]:
        answer = w["answer"] if w["error"] is None else f'error: {w["error"]}'
        parts.append(f'<tr><td>{w["line"]}</td><td class="text">{e(w["prompt"])}</td><td class="text">'
                     f'{e(w["reference"])}</td><td class="text">{e(answer)}</td><td>{_fmt(w.get("score", w["f1"]))}</td>'
                     f'<td class="text">{e(w["base_answer"] or "")}</td><td>{_fmt(w.get("base_score", w["base_f1"]))}'
                     f'</td></tr>')
    parts.append("</table>")
    if report["examples"]["skipped"]:
        parts.append("<h2>Skipped lines</h2><ul>" + "".join(f"<li>{e(s)}</li>" for s in report["examples"]["skipped"])
                     + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _grader_error_headline(report: Mapping[str, Any]) -> str:
    """Grader failures, said at the top: each candidate's answers a grader could not score."""
    counts = [(name, grader, n) for name, by_grader in (report.get("grader_errors") or {}).items()
              for grader, n in by_grader.items() if n]
    if not counts:
        return '<p class="muted">Grader errors: none (every grader scored every answer).</p>'
    said = "; ".join(f"{escape(grader)} on {escape(name)}: {n}" for name, grader, n in counts)
    return (f'<p class="fail">Grader errors — answers a grader could not score, left out of every candidate\'s '
            f'comparison: {said}.</p>')


def summary(report: Mapping[str, Any], paths: Mapping[str, str]) -> dict[str, Any]:
    """The registry's `evaluation` field (Table Storage properties are capped at 64 KiB, so small): what
    GET runs/{id} and the approval view show — scores with intervals, the comparison with base and with
    the champion the environment serves today, the content-filter rate and cost per candidate."""
    grader = report.get("gate_grader", "token_f1")
    candidates = report["candidates"]
    comparisons = report.get("comparisons") or {}
    return {"passed": report["passed"], "chosen": report["chosen"]["model"], "chosen_name": report["chosen"]["name"],
            "grader": grader,
            "scores": {c["name"]: _mean(c["metrics"], grader) for c in candidates},
            "intervals": {c["name"]: list(b) for c in candidates if (b := _bounds(c["metrics"], grader))},
            "base_score": next((_mean(c["metrics"], grader) for c in candidates if c["kind"] == "base"), None),
            "comparison": {other: {"model": row.get("model"), **(row["improvement"].get(grader) or {})}
                           for other, row in comparisons.items()},
            "champion": report.get("champion"),
            "content_filter_rate": {c["name"]: c["metrics"].get("content_filter_rate") for c in candidates},
            "cost_per_1k_requests_usd": {c["name"]: c["metrics"].get("cost_per_1k_requests_usd") for c in candidates},
            "grader_errors": {name: counts for name, counts in (report.get("grader_errors") or {}).items() if counts},
            "gates": report["gates"], "failed_gates": report["failed_gates"],
            "examples": report["examples"]["evaluated"], "reports": dict(paths)}
