"""A self-contained HTML validation report: summary, findings, stats and a token-length histogram.

No external assets (it is read from blob storage and mail attachments); every piece of text is
escaped; findings already hold only masked excerpts.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from .options import DatasetReport, Finding

_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1b1b1b;max-width:70em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}
.ok{color:#0a6b2d}.bad{color:#b00020}.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f3f3f3;padding:0 .25em}"""


def _findings_table(title: str, findings: list[Finding], several: bool) -> str:
    if not findings:
        return f"<h2>{escape(title)}</h2><p>None.</p>"
    head = "<tr>" + ("<th>File</th>" if several else "") + "<th>Line</th><th>Code</th><th>Message</th></tr>"
    rows = []
    for f in findings:
        file_cell = f"<td>{escape(f.file or '')}</td>" if several else ""
        line = "" if f.line is None else str(f.line)
        rows.append(f"<tr>{file_cell}<td class=num>{line}</td><td><code>{escape(f.code)}</code></td>"
                    f"<td>{escape(f.message)}</td></tr>")
    return f"<h2>{escape(title)} ({len(findings)})</h2><table>{head}{''.join(rows)}</table>"


def _histogram_svg(hist: dict[str, list[int]], limit: int | None) -> str:
    counts, edges = hist.get("counts") or [], hist.get("edges") or []
    if not counts or not edges:
        return "<p>No examples to chart.</p>"
    width, height, pad = 640, 220, 36
    top = max(counts) or 1
    bar_w = (width - 2 * pad) / len(counts)
    span = edges[-1] or 1
    bars = []
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * c / top
        x, y = pad + i * bar_w, height - pad - h
        tip = escape(f"{edges[i]}-{edges[i + 1] - 1} tokens: {c} examples")
        bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}" '
                    f'fill="#3b6ea8"><title>{tip}</title></rect>')
    marks = [f'<text x="{pad}" y="{height - 12}" font-size="11">0</text>',
             f'<text x="{width - pad}" y="{height - 12}" font-size="11" text-anchor="end">{span}</text>',
             f'<text x="{pad - 4}" y="{pad}" font-size="11" text-anchor="end">{top}</text>']
    if limit and limit <= span:
        lx = pad + (width - 2 * pad) * limit / span
        marks.append(f'<line x1="{lx:.1f}" y1="{pad / 2}" x2="{lx:.1f}" y2="{height - pad}" '
                     f'stroke="#b00020" stroke-dasharray="4 3"/><text x="{lx:.1f}" y="{pad / 2 - 2}" '
                     f'font-size="11" text-anchor="middle" fill="#b00020">limit {limit}</text>')
    axis = (f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#555"/>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="Histogram of tokens per example">{"".join(bars)}{axis}{"".join(marks)}</svg>'
            f"<p>Tokens per example (x) against number of examples (y).</p>")


def _stats_table(stats: dict[str, Any]) -> str:
    tok = stats.get("tokens", {})
    per = tok.get("per_example", {})
    cost = stats.get("cost", {})
    rows = [("Examples", stats.get("examples")), ("Messages", stats.get("messages")),
            ("Tokens (total)", tok.get("total")), ("Tokens (assistant)", tok.get("assistant")),
            ("Tokens per example: min / median / p95 / max",
             f"{per.get('min')} / {per.get('median')} / {per.get('p95')} / {per.get('max')}"),
            ("Per-example limit", tok.get("limit")), ("Examples over the limit", tok.get("over_limit")),
            ("Epochs (" + str(cost.get("epochs_rule", "")) + ")", cost.get("epochs")),
            ("Billed tokens", cost.get("billed_tokens")),
            ("Estimated training cost (USD, estimate)", cost.get("estimated_usd")),
            ("Formats", json.dumps(stats.get("formats", {})))]
    if cost.get("note"):
        rows.append(("Note", cost["note"]))
    body = "".join(f"<tr><th>{escape(str(k))}</th><td class=num>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def method_note(report: DatasetReport) -> str:
    """Says where the method came from when nobody set it, so a surprise is visible in the report."""
    if report.method_source == "detected" and report.method:
        return (f"detected from the data (the settings do not set it; set \"method\": \"{report.method}\" "
                "in run.json to make it explicit)")
    return ""


def _method_note(report: DatasetReport) -> str:
    note = method_note(report)
    return f" ({escape(note)})" if note else ""


def render_html(report: DatasetReport, *, title: str) -> str:
    several = len(report.files) > 1
    verdict = ('<p class=ok><strong>Accepted</strong></p>' if report.valid
               else '<p class=bad><strong>Rejected</strong></p>')
    files = "".join(f"<tr><td>{escape(role)}</td><td>{escape(r.name)}</td><td class=num>{r.examples}</td>"
                    f"<td>{'valid' if r.valid else 'rejected'}</td></tr>" for role, r in report.files.items())
    hist = report.stats.get("histogram", {})
    limit = report.stats.get("tokens", {}).get("limit")
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>{verdict}"
            f"<p>Method: <code>{escape(str(report.method))}</code>{_method_note(report)} &middot; examples: {report.examples} "
            f"&middot; errors: {len(report.errors)} &middot; warnings: {len(report.warnings)}</p>"
            f"<h2>Files</h2><table><tr><th>Role</th><th>File</th><th>Examples</th><th>Result</th></tr>"
            f"{files}</table><h2>Training data statistics</h2>{_stats_table(report.stats)}"
            f"<h2>Token length</h2>{_histogram_svg(hist, limit)}"
            f"{_findings_table('Errors', report.errors, several)}"
            f"{_findings_table('Warnings', report.warnings, several)}</body></html>")
