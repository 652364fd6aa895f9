"""The evaluation report in a real headless browser at 1,280 px (issue 19, item 6): the candidate table and
every other table fit the width however many candidates and graders and however long their names, and no
text runs out of its cell. No stack: the page is self-contained, so it is loaded as it is stored."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from shared.evaluation.examples import Example
from shared.evaluation.gates import Gate
from shared.evaluation.graders import Grader
from shared.evaluation.metrics import aggregate, score
from shared.evaluation.report import build_report, render_html
from shared.evaluation.runner import Candidate

pytestmark = pytest.mark.e2e
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt: make setup")
WIDTH = 1280


def heavy_report() -> dict[str, Any]:
    """The widest report a run makes: final, base, two checkpoints and a champion, 12 graders with long
    names, fine-tuned model ids as Azure spells them, answers with long unbroken tokens."""
    n = 40
    long_model = "gpt-4.1-mini-2025-04-14.ft-0123456789abcdef0123456789abcdef"
    examples = [Example(line=i + 1, messages=[{"role": "user", "content": "x" * 280 + f" {i}"}],
                        reference="https://example.com/" + "a" * 250) for i in range(n)]
    cands = [Candidate("final", "final", long_model, "ev-run-final"),
             Candidate("base", "base", "gpt-4.1-mini-2025-04-14", "ev-run-base"),
             Candidate("checkpoint step 1200", "checkpoint", f"{long_model}:ckpt-step-1200", "ev-run-c1", step=1200),
             Candidate("checkpoint step 2400", "checkpoint", f"{long_model}:ckpt-step-2400", "ev-run-c2", step=2400),
             Candidate("champion", "champion", "gpt-4.1-mini-2025-04-14.ft-fedcba9876543210fedcba98765", "ev-run-ch",
                       environment="prod")]
    names = [f"text_similarity_rouge_l_with_a_long_name_{k}" for k in range(12)]
    results = {c.name: [replace(score(i, "y" * 300, examples[i].reference, latency_ms=100.0 + i),
                                scores={g: 0.3 for g in names}) for i in range(n)] for c in cands}
    metrics = {k: aggregate(v, graders=names, price_per_1m=(0.8, 3.2)) for k, v in results.items()}
    gates = [Gate("min_score", 0.3, 0.5, False, "mean " + "z" * 200), Gate("max_latency_p95_ms", 139.0, 1e4, True, "ok")]
    return build_report(run_id="support-bot-0123456789abcdef", base_model="gpt-4.1-mini-2025-04-14",
                        fine_tuned_model=long_model, eval_path="support-bot-0123456789abcdef/data/eval.jsonl",
                        examples=examples, available=n, skipped_lines=[], candidates=cands, results=results,
                        metrics=metrics, skipped_candidates=[], chosen=cands[0], gates=gates, training_metrics=None,
                        graders=[Grader(g, "text_similarity", metric="rouge_l") for g in names], gate_grader=names[0],
                        lineage={"dataset_hash": "ab" * 32, "settings": {"suffix": "s" * 300}})


AMENDED = {"evaluation_report_hash": "sha256:" + "f" * 64, "version": 3, "amended_at": "2030-01-02T00:00:00Z",
           "versions": [{"version": v, "amended_at": None if v == 1 else f"2030-01-0{v}T00:00:00Z"} for v in (1, 2, 3)],
           "decisions": [{"id": "approval:1", "kind": "approval", "at": "2030-01-02T00:00:00.123456Z", "environment": "prod",
                          "who": "Ops Person <6f1c2d3e-0000-4000-8000-0000000000a1>", "ticket": "CHG-" + "9" * 120,
                          "comment": "c" * 900, "evaluation_report_hash": "sha256:" + "f" * 64},
                         {"id": "rollback:2", "kind": "rollback", "at": "2030-01-03T00:00:00Z", "environment": "prod",
                          "who": "ops", "from_model": "m" * 80, "to_model": "n" * 80, "reason": "r" * 900}]}


@pytest.mark.parametrize("amended", [False, True], ids=["as-evaluated", "with-decisions"])
def test_the_report_fits_1280_pixels_with_five_candidates_and_twelve_graders(browser: Any, amended: bool) -> None:
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    page.set_content(render_html(heavy_report(), amendments=AMENDED if amended else None))
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")   # what a reader opens
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    overflowing = page.evaluate("""() => [...document.querySelectorAll('table, td, th, pre, code, svg')]
        .filter(el => el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'auto')
        .map(el => el.tagName + ': ' + el.textContent.slice(0, 40))""")
    assert overflowing == []
    candidates = page.locator("table.grid")
    box = candidates.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH
    page.close()
