"""The report: JSON shape, HTML escaping, inline SVG, lenient training metrics."""
from __future__ import annotations

import json
import re

from shared.evaluation.examples import Example
from shared.evaluation.gates import Gate
from shared.evaluation.metrics import aggregate, score
from shared.evaluation.report import build_report, loss_rows, render_html, summary, truncate
from shared.evaluation.runner import Candidate

EVIL = '<script>alert("x")</script> & more'


def _report(training_metrics: object = None) -> dict:
    examples = [Example(line=i + 1, messages=[{"role": "user", "content": f"{EVIL} q{i}"}], reference=f"a{i}")
                for i in range(3)]
    cands = [Candidate("final", "final", "ft<1>", "d1"), Candidate("base", "base", "gpt-4.1-mini", "d2")]
    results = {"final": [score(i, f"a{i}" if i else EVIL, f"a{i}", latency_ms=100 + i) for i in range(3)],
               "base": [score(i, "dunno", f"a{i}", latency_ms=50) for i in range(3)]}
    metrics = {k: aggregate(v) for k, v in results.items()}
    gates = [Gate("min_score", metrics["final"].mean_f1, 0.5, True, "ok"),
             Gate("min_improvement", 0.6, 0.05, True, f"detail {EVIL}"),
             Gate("max_latency_p95_ms", 101.9, 1000.0, True, "ok")]
    return build_report(run_id="run-<1>", base_model="gpt-4.1-mini", fine_tuned_model="ft<1>", eval_path="r/eval.jsonl",
                        examples=examples, available=3, skipped_lines=[f"line 9: {EVIL}"], candidates=cands,
                        results=results, metrics=metrics, skipped_candidates=[{"name": "checkpoint step 5",
                                                                                 "reason": EVIL}],
                        chosen=cands[0], gates=gates, training_metrics=training_metrics)


def test_json_report_is_serialisable_and_names_the_worst_example_first() -> None:
    report = _report()
    json.dumps(report)
    assert report["passed"] is True and report["failed_gates"] == []
    assert report["worst_examples"][0]["line"] == 1 and report["worst_examples"][0]["f1"] == 0.0
    assert [c["name"] for c in report["candidates"]] == ["final", "base"]
    assert len(report["candidates"][0]["latencies_ms"]) == 3
    small = summary(report, {"json": "reports/x/evaluation.json", "html": "reports/x/evaluation.html"})
    assert small["chosen"] == "ft<1>" and small["passed"] is True and "worst_examples" not in small


def test_html_escapes_every_string_and_embeds_svg_charts() -> None:
    html = render_html(_report([{"step": i, "train_loss": 2 / (i + 1), "valid_loss": 2.2 / (i + 1)}
                                for i in range(1, 20)]))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "run-&lt;1&gt;" in html
    assert html.count("<svg") == 3          # score bars, latency strips, training loss
    assert "Mean token_f1 per candidate; whisker: 95 % interval" in html and "min_score gate 0.50" in html
    assert "<polyline" in html and "limit 1000 ms" in html
    assert not re.search(r"<(link|img|iframe)\b|src=", html)   # self-contained


def test_html_without_training_metrics_has_no_loss_chart() -> None:
    assert render_html(_report(None)).count("<svg") == 2


def test_loss_rows_accepts_rows_wrapped_rows_and_columns() -> None:
    rows = [{"step": "1", "train_loss": "2.5", "valid_loss": ""}, {"step": 2, "train_loss": 1.5}, {"step": "x"}]
    assert loss_rows(rows) == [{"step": 1.0, "train_loss": 2.5}, {"step": 2.0, "train_loss": 1.5}]
    assert loss_rows({"results": rows, "final": {"train_loss": 1}}) == loss_rows(rows)
    assert loss_rows({"step": [1, 2], "train_loss": [3.0, 2.0], "valid_loss": [3.5]}) == \
        [{"step": 1.0, "train_loss": 3.0, "valid_loss": 3.5}, {"step": 2.0, "train_loss": 2.0}]
    poller = {"final": {"step": 2, "train_loss": 1.5}, "steps": 2, "series": rows[:2], "blob": "r/training/metrics.json"}
    assert loss_rows(poller) == loss_rows(rows)          # shared.stages.polling's shape
    assert loss_rows(None) == [] and loss_rows({"train_loss": 1.2}) == []
    assert len(loss_rows([{"step": i, "train_loss": 1.0} for i in range(5000)])) <= 400


def test_truncate_marks_cut_text() -> None:
    assert truncate("x" * 500, 10) == "x" * 9 + "…"
    assert truncate(None) == ""


def _built(*, final: list[str], graders: int = 0, lineage: dict | None = None) -> dict:
    from shared.evaluation.graders import Grader
    n = len(final)
    examples = [Example(line=i + 1, messages=[{"role": "user", "content": f"q{i}"}], reference=f"a{i}") for i in range(n)]
    cands = [Candidate("final", "final", "ft", "d1"), Candidate("base", "base", "gpt-4.1-mini", "d2"),
             Candidate("checkpoint step 10", "checkpoint", "ck", "d3", step=10)]
    names = [f"grader_number_{k}" for k in range(graders)]
    def rows(answers: list[str]) -> list:
        from dataclasses import replace
        return [replace(score(i, a, f"a{i}", latency_ms=100), scores={g: 0.5 for g in names}) for i, a in enumerate(answers)]
    results = {"final": rows(final), "base": rows(["dunno"] * n), "checkpoint step 10": rows(["dunno"] * n)}
    metrics = {k: aggregate(v, graders=names) for k, v in results.items()}
    gates = [Gate("min_score", 1.0, 0.5, True, "ok"), Gate("min_improvement", 0.6, 0.05, True, "ok")]
    return build_report(run_id="r", base_model="gpt-4.1-mini", fine_tuned_model="ft", eval_path="r/eval.jsonl",
                        examples=examples, available=n, skipped_lines=[], candidates=cands, results=results,
                        metrics=metrics, skipped_candidates=[], chosen=cands[0], gates=gates, training_metrics=None,
                        graders=[Grader(g, "token_f1") for g in names], lineage=lineage)


def test_worst_examples_are_only_the_bad_ones() -> None:
    """Before: the 15 'worst' were listed whatever they scored, perfect answers included."""
    perfect = _built(final=[f"a{i}" for i in range(40)])
    assert perfect["worst_examples"] == [] and "None: every answer of the chosen model scored 1.0" in render_html(perfect)
    two_bad = _built(final=[f"a{i}" if i not in (3, 7) else "wrong" for i in range(40)])
    assert [w["line"] for w in two_bad["worst_examples"]] == [4, 8]


def test_the_report_carries_its_lineage() -> None:
    lineage = {"dataset_hash": "ab" * 32, "validation_report": "validation.json", "settings": {"seed": 7},
               "trained_tokens": 123456, "training_cost_usd": 0.68, "approvals": {}}
    report = _built(final=["a0"] * 40, lineage=lineage)
    assert report["lineage"] == lineage
    html = render_html(report)
    assert f"sha256:{'ab' * 32}" in html and 'href="validation.json"' in html and "123,456 trained tokens" in html
    assert "$0.68" in html and "approvals: none yet" in html and "&quot;seed&quot;: 7" in html


def test_each_gate_states_its_rule_in_words_and_charts_draw_only_real_thresholds() -> None:
    html = render_html(_built(final=["a0"] * 40))
    assert "better than the base model: the lower bound of the paired interval" in html
    assert "the mean score is at least the threshold" in html
    assert "base + min improvement" not in html      # a line that looked like the improvement gate, but was not


def test_the_candidate_table_grows_down_not_across_with_many_graders() -> None:
    """12 graders used to mean 19 columns; now a row per grader and a column per candidate."""
    html = render_html(_built(final=["a0"] * 40, graders=12))
    table = html[html.index("<h2>Candidates</h2>"):]
    table = table[: table.index("</table>")]
    header = table[table.index("<tr>"): table.index("</tr>")]
    assert header.count("<th>") == 4                 # grader + three candidates
    assert table.count("grader_number_") == 12 and "table-layout:fixed" in html
