"""A reinforcement run's own grader, run on the held-out answers as the service runs it during training
(OpenAI's graders guide, developers.openai.com/api/docs/guides/graders; Azure's RFT page points to it):

- every `input`/`reference` template rendered from the line (`item`) and the answer (`sample`);
- `string_check`: `input` against `reference` (`like`/`ilike`: input contains reference);
- `text_similarity`: shared.evaluation.similarity on the rendered texts;
- `score_model`: its `input` messages rendered and sent to `model` (a hub deployment of that name); the
  first number of the reply, clipped to `range` (default [0, 1]) and put on 0–1 (7 on [0, 10] is 0.7); no
  number is 0, as the guide says;
- `label_model`: its messages sent the same way; 1 when the reply is one of `passing_labels`, else 0;
- `multi`: each named grader, then `calculate_output` over their scores (shared.run.graderspec, no eval),
  clipped to 0–1 for the gates;
- `python`: refused at intake unless run.json names `evaluation.graders` (shared.run.graderspec).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from shared.evaluation.similarity import similarity, string_check
from shared.run.graderspec import Formula, SpecError, parse_formula, render

if TYPE_CHECKING:
    from shared.azure.chat import JudgeFn
    from shared.evaluation.examples import Example

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def sample_of(text: str, tool_calls: tuple[dict[str, str], ...]) -> dict[str, Any]:
    """The `sample` namespace of one answer: output_text, output_json (when the text is JSON), output_tools and
    choices in the chat completions shape."""
    tools = [{"id": f"call_{i}", "type": "function", "function": {"name": c.get("name"), "arguments": c.get(
        "arguments", "")}} for i, c in enumerate(tool_calls)]
    try:
        parsed = json.loads(text) if text.strip()[:1] in ("{", "[") else None
    except (ValueError, RecursionError):
        parsed = None
    message: dict[str, Any] = {"role": "assistant", "content": text, **({"tool_calls": tools} if tools else {})}
    return {"output_text": text, "output_json": parsed, "output_tools": tools,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tools else "stop"}]}


def grade(spec: Mapping[str, Any], text: str, tool_calls: tuple[dict[str, str], ...], example: Example,
          judge: JudgeFn | None) -> float:
    namespaces = {"item": example.item, "sample": sample_of(text, tool_calls)}
    return _grade(spec, namespaces, judge)


def _grade(spec: Mapping[str, Any], ns: Mapping[str, Any], judge: JudgeFn | None) -> float:
    kind = spec.get("type")
    if kind == "string_check":
        return string_check(str(spec["operation"]), _text(spec.get("input"), ns), _text(spec.get("reference"), ns))
    if kind == "text_similarity":
        return similarity(str(spec["evaluation_metric"]), _text(spec.get("input"), ns), _text(spec.get("reference"), ns))
    if kind in ("score_model", "label_model"):
        if judge is None:
            raise ValueError(f"grader {spec.get('name') or kind}: no judge to ask")
        reply = judge(str(spec["model"]), messages(spec, ns))
        if kind == "label_model":
            return float(reply.strip().strip('"').strip() in [str(x) for x in spec.get("passing_labels") or []])
        return score_in_range(reply, spec.get("range") or [0, 1])
    if kind == "multi":
        inner = spec["graders"]
        scores = {key: _grade(sub, ns, judge) for key, sub in inner.items()}
        value = _formula(str(spec["calculate_output"]), tuple(inner))(scores)
        return min(1.0, max(0.0, value))
    raise SpecError(f"grader {spec.get('name') or kind}: a {kind} grader cannot run here")


@lru_cache(maxsize=64)
def _formula(text: str, names: tuple[str, ...]) -> Formula:
    """calculate_output parsed once per grader, not once per answer graded."""
    return parse_formula(text, list(names))


def _text(template: Any, ns: Mapping[str, Any]) -> str:
    return render(template, ns) if isinstance(template, str) else ""


def messages(spec: Mapping[str, Any], ns: Mapping[str, Any]) -> list[dict[str, str]]:
    """A model grader's `input` messages with their templates filled in."""
    out = []
    for m in spec.get("input") or []:
        if isinstance(m, Mapping):
            out.append({"role": str(m.get("role") or "user"), "content": _content_text(m.get("content"), ns)})
    return out


def _content_text(content: Any, ns: Mapping[str, Any]) -> str:
    """A message's content as the judge reads it: a string, or its text parts (`{"type": "input_text", "text"}`,
    alone or in a list), each rendered, joined by newlines. Before, the parts went out as their JSON with the
    values filled into it: the judge read JSON, broken by any quote in the answer. Another part (an image)
    goes as its JSON, unrendered."""
    if isinstance(content, str):
        return render(content, ns)
    parts = content if isinstance(content, list) else [content]
    texts = []
    for part in parts:
        if isinstance(part, Mapping) and isinstance(part.get("text"), str):
            texts.append(render(part["text"], ns))
        elif isinstance(part, str):
            texts.append(render(part, ns))
        else:
            texts.append(json.dumps(part, ensure_ascii=False))
    return "\n".join(texts)


def score_in_range(reply: str, bounds: list[float]) -> float:
    """The judge's number (a JSON `result` or the first number), clipped to `range`, then put on 0–1."""
    low, high = float(bounds[0]), float(bounds[1])
    value: float | None = None
    try:
        parsed = json.loads(reply)
        if isinstance(parsed, Mapping) and isinstance(parsed.get("result"), (int, float)):
            value = float(parsed["result"])
        elif isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
            value = float(parsed)
    except (ValueError, RecursionError):
        pass
    if value is None:
        match = _NUMBER.search(reply or "")
        value = float(match.group(0)) if match else 0.0   # the guide: a non-numeric output scores 0
    value = min(high, max(low, value))
    return (value - low) / (high - low)
