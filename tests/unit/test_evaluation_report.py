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
    assert "Mean token_f1 per candidate (95 % interval)" in html and "min score 0.50" in html
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
