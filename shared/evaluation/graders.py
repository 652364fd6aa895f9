"""Graders: how one answer is scored against one held-out example, 0 (wrong) to 1 (right).

The kinds follow the graders Azure OpenAI documents for fine-tuning and evaluations (string_check with
eq/ne/like/ilike; text_similarity with fuzzy_match, bleu, gleu, rouge_1…rouge_5, rouge_l; score_model, an
LLM judge scoring 0–1), plus what a held-out set of chat examples needs: SQuAD token F1 (the old metric),
JSON validity and field-by-field match when references are JSON, and tool-call match (name and
arguments) when references call tools. Similarity metrics come from well-kept libraries (rapidfuzz,
rouge-score, nltk), imported on first use so a cold start does not pay for them.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from shared.azure.chat import JudgeFn
from shared.evaluation.examples import Example
from shared.evaluation.metrics import token_f1

ROUGE = {f"rouge_{n}": f"rouge{n}" for n in range(1, 6)} | {"rouge_l": "rougeL"}
SIMILARITY_METRICS = ("fuzzy_match", "bleu", "gleu", *ROUGE)
STRING_OPERATIONS = ("eq", "ne", "like", "ilike")
KINDS = ("token_f1", "string_check", "text_similarity", "json_valid", "json_match", "tool_call_match", "score_model")

JUDGE_PROMPT = (
    "You grade an assistant's answer against a reference answer. Rubric: {rubric}\n"
    "Reply with one number between 0 and 1 (1: fully correct and as useful as the reference; 0: wrong or "
    "useless) and nothing else.")
DEFAULT_RUBRIC = ("the answer is correct when it says what the reference says, in any words; "
                  "extra correct detail is fine, anything contradicting the reference is wrong")
_NUMBER = re.compile(r"[-+]?\d*\.?\d+")


@dataclass(frozen=True)
class Reply:
    """What a candidate answered: text and/or tool calls (`[{"name", "arguments"}]`, arguments as text)."""
    text: str
    tool_calls: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class Grader:
    name: str
    kind: str
    operation: str | None = None          # string_check
    metric: str | None = None             # text_similarity
    model: str | None = None              # score_model: a deployment on the hub
    rubric: str | None = None             # score_model
    reference: str | None = None          # "{{item.<field>}}": where the reference comes from (RFT graders)
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind}
        for key in ("operation", "metric", "model", "reference"):
            if getattr(self, key):
                out["evaluation_metric" if key == "metric" else key] = getattr(self, key)
        if self.kind == "score_model":
            out["prompt"] = JUDGE_PROMPT.format(rubric=self.rubric or DEFAULT_RUBRIC)
        return out


# A judge call: (hub deployment, messages) → reply text. The stage hands in one on the openai SDK.


def from_specs(specs: Sequence[Mapping[str, Any]]) -> list[Grader]:
    """run.json `evaluation.graders` (already validated by shared.run.settings) → graders."""
    out = []
    for s in specs:
        kind = str(s["type"])
        out.append(Grader(name=str(s.get("name") or _default_name(s)), kind=kind, operation=s.get("operation"),
                          metric=s.get("evaluation_metric"), model=s.get("model"), rubric=s.get("rubric"),
                          reference=s.get("reference")))
    return out


def _default_name(spec: Mapping[str, Any]) -> str:
    kind = str(spec["type"])
    detail = spec.get("operation") or spec.get("evaluation_metric")
    return f"{kind}_{detail}" if detail else kind


def from_reinforcement(grader: Mapping[str, Any]) -> list[Grader]:
    """A reinforcement run's own grader (the job's `grader` object) as evaluation graders: the model is
    judged by what it was trained to please. `multi` contributes each of its graders; `python` and
    `label_model` graders cannot run here and are left out (the report lists what was used)."""
    kind = grader.get("type")
    if kind == "multi":
        inner = grader.get("graders") or {}
        items = inner.items() if isinstance(inner, Mapping) else enumerate(inner)
        return [g for name, spec in items if isinstance(spec, Mapping)
                for g in from_reinforcement({"name": str(name), **spec})]
    reference = grader.get("reference") if isinstance(grader.get("reference"), str) else None
    name = str(grader.get("name") or kind)
    if kind == "string_check" and grader.get("operation") in STRING_OPERATIONS:
        return [Grader(name, "string_check", operation=grader["operation"], reference=reference)]
    if kind == "text_similarity" and grader.get("evaluation_metric") in SIMILARITY_METRICS:
        return [Grader(name, "text_similarity", metric=grader["evaluation_metric"], reference=reference)]
    if kind == "score_model" and isinstance(grader.get("model"), str):
        rubric = _messages_text(grader.get("input"))
        return [Grader(name, "score_model", model=grader["model"], rubric=rubric or None)]
    return []


def _messages_text(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(m.get("content", "")) for m in value if isinstance(m, Mapping))[:2000]
    return ""


def defaults_for(examples: Sequence[Example]) -> list[Grader]:
    """Graders that fit the data's shape: tool calls → tool-call match; JSON references → JSON match and
    validity; free text → token F1, ROUGE-L, fuzzy match and exact string check. The first one gates."""
    if any(e.reference_tool_calls for e in examples):
        return [Grader("tool_call_match", "tool_call_match"), Grader("token_f1", "token_f1")]
    if examples and sum(_as_json(e.reference) is not None for e in examples) * 2 > len(examples):
        return [Grader("json_match", "json_match"), Grader("json_valid", "json_valid"),
                Grader("string_check_eq", "string_check", operation="eq")]
    return [Grader("token_f1", "token_f1"), Grader("rouge_l", "text_similarity", metric="rouge_l"),
            Grader("fuzzy_match", "text_similarity", metric="fuzzy_match"),
            Grader("string_check_eq", "string_check", operation="eq")]


def grade(grader: Grader, reply: Reply, example: Example, judge: JudgeFn | None = None) -> float:
    reference = _reference(grader, example)
    kind = grader.kind
    if kind == "token_f1":
        return token_f1(reply.text, reference)
    if kind == "string_check":
        return string_check(grader.operation or "eq", reply.text, reference)
    if kind == "text_similarity":
        return text_similarity(grader.metric or "fuzzy_match", reply.text, reference)
    if kind == "json_valid":
        return 1.0 if _as_json(reply.text) is not None else 0.0
    if kind == "json_match":
        return json_match(reply.text, reference)
    if kind == "tool_call_match":
        return tool_call_match(reply.tool_calls, example.reference_tool_calls or ())
    if kind == "score_model":
        if judge is None or not grader.model:
            raise ValueError(f"grader {grader.name}: a score_model grader needs a judge deployment")
        return score_model(grader, reply, example, reference, judge)
    raise ValueError(f"unknown grader kind {kind!r}")


def _reference(grader: Grader, example: Example) -> str:
    if grader.reference and (m := re.fullmatch(r"\{\{\s*item\.([A-Za-z0-9_]+)\s*\}\}", grader.reference)):
        value = example.item.get(m.group(1))
        return value if isinstance(value, str) else json.dumps(value) if value is not None else ""
    return example.reference


def string_check(operation: str, answer: str, reference: str) -> float:
    """Azure's string_check: eq/ne compare whole strings; like = contains; ilike = contains, any case."""
    if operation == "eq":
        return float(answer == reference)
    if operation == "ne":
        return float(answer != reference)
    if operation == "like":
        return float(reference in answer)
    if operation == "ilike":
        return float(reference.lower() in answer.lower())
    raise ValueError(f"unknown string_check operation {operation!r}")


def text_similarity(metric: str, answer: str, reference: str) -> float:
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz
        return fuzz.ratio(answer, reference) / 100.0
    if metric in ROUGE:
        return float(_rouge(ROUGE[metric]).score(reference, answer)[ROUGE[metric]].fmeasure)
    hypothesis, references = _tokens(answer), [_tokens(reference)]
    if not hypothesis or not references[0]:
        return float(hypothesis == references[0])
    if metric == "bleu":
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
        # smoothing: a short answer with no 4-gram in common is not worth exactly 0 (Chen & Cherry 2014, method 1)
        return float(sentence_bleu(references, hypothesis, smoothing_function=SmoothingFunction().method1))
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu
        return float(sentence_gleu(references, hypothesis))
    raise ValueError(f"unknown text_similarity metric {metric!r}")


@cache
def _rouge(kind: str) -> Any:
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer([kind], use_stemmer=True)


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _as_json(text: str) -> Any:
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):
        return None


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _leaves(item, f"{path}.{key}").items()} or {path: {}}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _leaves(item, f"{path}[{i}]").items()} or {path: []}
    return {path: value}


def json_match(answer: str, reference: str) -> float:
    """Share of the reference's fields (leaf paths) the answer has with the same value; 0 when the answer is
    not JSON. A reference that is not JSON falls back to exact equality."""
    expected = _as_json(reference)
    if expected is None:
        return float(answer.strip() == reference.strip())
    got = _as_json(answer)
    if got is None:
        return 0.0
    want, have = _leaves(expected), _leaves(got)
    return sum(1 for path, value in want.items() if path in have and have[path] == value) / len(want)


def tool_call_match(answer: Sequence[Mapping[str, str]], reference: Sequence[Mapping[str, str]]) -> float:
    """Per reference call, in order: half for the function's name, half for its arguments (field by field,
    only when the name is right); divided by the larger count, so a missing or an extra call costs."""
    if not reference:
        return float(not answer)
    total = 0.0
    for want, got in zip(reference, answer, strict=False):
        if want.get("name") == got.get("name"):
            total += 0.5 + 0.5 * json_match(str(got.get("arguments", "")), str(want.get("arguments", "")))
    return total / max(len(reference), len(answer))


def judge_messages(grader: Grader, reply: Reply, example: Example, reference: str) -> list[dict[str, str]]:
    answer = reply.text or json.dumps([dict(c) for c in reply.tool_calls])
    return [{"role": "system", "content": JUDGE_PROMPT.format(rubric=grader.rubric or DEFAULT_RUBRIC)},
            {"role": "user", "content": f"Question:\n{example.prompt_text[:4000]}\n\nReference answer:\n"
                                        f"{reference[:4000]}\n\nAnswer to grade:\n{answer[:4000]}"}]


def score_model(grader: Grader, reply: Reply, example: Example, reference: str, judge: JudgeFn) -> float:
    """The judge's number, clamped to 0..1; a reply without a number is a 0 (and says so in the log)."""
    text = judge(str(grader.model), judge_messages(grader, reply, example, reference))
    match = _NUMBER.search(text or "")
    return min(1.0, max(0.0, float(match.group(0)))) if match else 0.0
