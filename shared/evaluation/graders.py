"""Graders: how one answer is scored against one held-out example, 0 (wrong) to 1 (right).

The kinds follow the graders Azure OpenAI documents for fine-tuning and evaluations (string_check with
eq/ne/like/ilike; text_similarity with fuzzy_match, bleu, gleu, rouge_1…rouge_5, rouge_l; score_model, an
LLM judge scoring 0–1), plus what a held-out set of chat examples needs: SQuAD token F1 (the old metric),
JSON validity and field-by-field match when references are JSON, and tool-call match (name and
arguments) when references call tools. A reference that calls tools is graded by tool_call_match only (and
tool_call_match grades nothing else): a wrong call must not pass on its text. A reinforcement run's own
grader runs as the service runs it (`shared.evaluation.rft`). Similarity metrics: shared.evaluation.similarity.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.azure.chat import JudgeFn
from shared.evaluation.examples import Example
from shared.evaluation.metrics import token_f1
from shared.evaluation.similarity import string_check

KINDS = ("token_f1", "string_check", "text_similarity", "json_valid", "json_match", "tool_call_match", "score_model",
         "reinforcement")


class NotApplicable(Exception):
    """The grader does not grade this kind of reference (a text grader on tool calls, or the reverse)."""

JUDGE_PROMPT = (
    "You grade an assistant's answer against a reference answer. Rubric: {rubric}\n"
    "Reply with one number between 0 and 1 (1: fully correct and as useful as the reference; 0: wrong or "
    "useless) and nothing else.")
DEFAULT_RUBRIC = ("the answer is correct when it says what the reference says, in any words; "
                  "extra correct detail is fine, anything contradicting the reference is wrong")
# Without a reference (production exchanges: the drift watch, the harvest's grader filter): the judge rates the
# answer against the question alone.
JUDGE_PROMPT_NO_REFERENCE = (
    "You grade an assistant's answer to a user's question; there is no reference answer. Rubric: {rubric}\n"
    "Reply with one number between 0 and 1 (1: answers exactly what was asked, correctly and usefully; 0: "
    "wrong, evasive or beside the question) and nothing else.")
DEFAULT_RUBRIC_NO_REFERENCE = ("the answer addresses what was asked, specifically; a vague, generic or "
                               "off-topic answer is wrong")
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

    @property
    def asks_judge(self) -> bool:
        """Whether grading calls a model (a score_model, or a reinforcement grader holding a model grader)."""
        if self.kind == "score_model":
            return True
        spec = self.extra.get("spec") if self.kind == "reinforcement" else None
        inner = spec.get("graders") if isinstance(spec, Mapping) and spec.get("type") == "multi" else None
        specs = list(inner.values()) if isinstance(inner, Mapping) else [spec]
        return any(isinstance(x, Mapping) and x.get("type") in ("score_model", "label_model") for x in specs)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind}
        for key in ("operation", "metric", "model", "reference"):
            if getattr(self, key):
                out["evaluation_metric" if key == "metric" else key] = getattr(self, key)
        if self.kind == "score_model":
            out["prompt"] = JUDGE_PROMPT.format(rubric=self.rubric or DEFAULT_RUBRIC)
        if self.kind == "reinforcement":
            out["grader"] = self.extra.get("spec")
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
    """A reinforcement run's own grader (the job's `grader` object) as one evaluation grader, run as the
    service runs it (shared.evaluation.rft): the model is judged by what it was trained to please. Intake
    has already refused what cannot run here (shared.run.graderspec.grader_problems)."""
    model = grader.get("model") if isinstance(grader.get("model"), str) else None
    return [Grader(str(grader.get("name") or "reinforcement")[:64], "reinforcement", model=model,
                   extra={"spec": dict(grader)})]


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
    """0..1; NotApplicable when the grader does not grade this kind of reference."""
    kind = grader.kind
    if kind == "reinforcement":
        from shared.evaluation import rft
        return rft.grade(grader.extra["spec"], reply.text, reply.tool_calls, example, judge)
    if (kind == "tool_call_match") != bool(example.reference_tool_calls):
        raise NotApplicable(kind)
    reference = _reference(grader, example)
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
    if grader.reference:
        from shared.run.graderspec import render
        return render(grader.reference, {"item": example.item})
    return example.reference


def text_similarity(metric: str, answer: str, reference: str) -> float:
    from shared.evaluation.similarity import similarity
    return similarity(metric, answer, reference)


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


def json_match(answer: str, reference: str, *, strict: bool = False) -> float:
    """Share of the reference's fields (leaf paths) the answer has with the same value; 0 when the answer is
    not JSON. A reference that is not JSON falls back to exact equality. `strict`: fields the reference does
    not have count against it too (matched / the union of both sides' fields): a tool call's extra argument
    changes what the call does."""
    expected = _as_json(reference)
    if expected is None:
        return float(answer.strip() == reference.strip())
    got = _as_json(answer)
    if got is None:
        return 0.0
    want, have = _leaves(expected), _leaves(got)
    matched = sum(1 for path, value in want.items() if path in have and same_json(have[path], value))
    return matched / (len(want.keys() | have.keys()) if strict else len(want))


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: `true` is not `1`, `"1"` is not `1`; numbers by value (1 and 1.0 are equal)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def tool_call_match(answer: Sequence[Mapping[str, str]], reference: Sequence[Mapping[str, str]]) -> float:
    """Each reference call paired with the answer's call that matches it best, in any order (the calls of one
    assistant message are parallel: their order means nothing): half for the function's name, half for its
    arguments field by field, only when the name is right, and an argument the reference does not have
    counts against it; divided by the larger count, so a missing or an extra call costs."""
    if not reference:
        return float(not answer)

    def pair(want: Mapping[str, str], got: Mapping[str, str]) -> float:
        if want.get("name") != got.get("name"):
            return 0.0
        return 0.5 + 0.5 * json_match(str(got.get("arguments", "")), str(want.get("arguments", "")), strict=True)

    scores = sorted(((pair(w, g), i, j) for i, w in enumerate(reference) for j, g in enumerate(answer)),
                    key=lambda t: (-t[0], t[1], t[2]))
    used_ref: set[int] = set()
    used_answer: set[int] = set()
    total = 0.0
    for value, i, j in scores:   # best pairs first (greedy matching; a handful of calls)
        if i not in used_ref and j not in used_answer:
            used_ref.add(i)
            used_answer.add(j)
            total += value
    return total / max(len(reference), len(answer))


def judge_messages(grader: Grader, reply: Reply, example: Example, reference: str) -> list[dict[str, str]]:
    answer = reply.text or json.dumps([dict(c) for c in reply.tool_calls])
    return [{"role": "system", "content": JUDGE_PROMPT.format(rubric=grader.rubric or DEFAULT_RUBRIC)},
            {"role": "user", "content": f"Question:\n{example.prompt_text[:4000]}\n\nReference answer:\n"
                                        f"{reference[:4000]}\n\nAnswer to grade:\n{answer[:4000]}"}]


_RATIO = re.compile(r"([-+]?\d*\.?\d+)\s*(?:/\s*(\d*\.?\d+)|(%))")


class UnreadableJudge(ValueError):
    """The judge replied with no score between 0 and 1: a grader error (left out, counted), never a 0 or a 1."""


def score_model(grader: Grader, reply: Reply, example: Example, reference: str, judge: JudgeFn) -> float:
    """The judge's score in 0..1: its first number, or a fraction it wrote as `8/10` or `80%`. A reply with no
    number, or a number outside 0..1 ("7": on what scale?), is UnreadableJudge — a grader error, like a failed
    judge call: before, "7" and "8/10" scored 1.0 and "I cannot tell" scored 0."""
    text = judge(str(grader.model), judge_messages(grader, reply, example, reference)) or ""
    value = _judge_number(text)
    if value is None:
        raise UnreadableJudge(f"grader {grader.name}: the judge replied {text[:80]!r}, no score")
    if not 0.0 <= value <= 1.0:
        raise UnreadableJudge(f"grader {grader.name}: the judge replied {text[:80]!r}, not a score between 0 and 1")
    return value


def _judge_number(text: str) -> float | None:
    """A judge's first number, or the fraction it wrote as `8/10` or `80%` (NaN for `x/0`); None if none."""
    ratio = _RATIO.search(text)
    match = _NUMBER.search(text)
    if ratio and match and ratio.start() == match.start():
        bottom = 100.0 if ratio.group(3) else float(ratio.group(2))
        return float(ratio.group(1)) / bottom if bottom else float("nan")
    return float(match.group(0)) if match else None


def judge_without_reference(model: str, rubric: str | None, question: str, answer: str,
                            judge: JudgeFn) -> float | None:
    """A judge's 0..1 for an answer with no reference, read as score_model reads one; None when its reply holds
    no score between 0 and 1 (the judge failed: not a score of the answer). Errors of the call propagate: the
    caller counts them, never as a 0."""
    messages = [{"role": "system", "content": JUDGE_PROMPT_NO_REFERENCE.format(
                    rubric=rubric or DEFAULT_RUBRIC_NO_REFERENCE)},
                {"role": "user", "content": f"Question:\n{question[:4000]}\n\nAnswer to grade:\n{answer[:4000]}"}]
    value = _judge_number(judge(model, messages) or "")
    return value if value is not None and 0.0 <= value <= 1.0 else None
