"""What a simulated model "knows": training examples parsed from JSONL, answers chosen by word overlap.

A fine-tuned model answers with the final assistant content of the training example whose user text
overlaps most with the question; a base model answers politely and vaguely, so an evaluation that
compares the two measures something real.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"[a-z0-9]+")

GENERIC_ANSWERS = (
    "That is a good question; the answer depends on the details of your situation.",
    "I'm not certain about that specific case, but I'd be happy to help you look into it.",
    "It's hard to say in general; could you share more context so I can help?",
)


@dataclass(frozen=True)
class Example:
    prompt: str  # all user text, joined
    answer: str  # final assistant content (or preferred output / reference answer)
    tokens: int
    tool_calls: tuple[dict[str, str], ...] = ()  # the final assistant message's calls: (name, arguments text)


# Words that say nothing about what is asked; without them overlap measures the topic, as training does.
_STOP = frozenset(["a", "an", "the", "i", "my", "me", "we", "our", "you", "your", "it", "its", "is", "are", "was", "be", "can", "do", "does", "how", "what", "when", "where", "which", "who", "why", "to", "of", "in", "on", "for", "at", "by", "with", "from", "and", "or", "not", "no", "this", "that", "there", "please", "want", "need", "way", "get", "have", "has", "some", "any", "all", "more", "about", "into", "out", "up", "so", "just"])


def words(text: str) -> frozenset[str]:
    return frozenset(_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP)


def _stem(word: str) -> str:
    # crude, but enough that "invoices" meets "invoice" and "deleted" meets "delete"
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def approx_tokens(text: str) -> int:
    # ~4 characters per token is the rule of thumb OpenAI documents; exact counts are not the point here.
    return max(1, len(text) // 4)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep only the text ones
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _from_messages(messages: list[dict[str, Any]]) -> tuple[str, str]:
    prompt = " ".join(_content_text(m.get("content")) for m in messages if m.get("role") == "user")
    answers = [_content_text(m.get("content")) for m in messages if m.get("role") == "assistant"]
    return prompt, (answers[-1] if answers else "")


def _last_calls(messages: list[dict[str, Any]]) -> tuple[dict[str, str], ...]:
    """The calls of the last assistant message, as a model trained on it would make them again."""
    last = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "assistant"), None)
    calls = last.get("tool_calls") if last else None
    out = []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            arguments = function.get("arguments")
            out.append({"name": function["name"],
                        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)})
    return tuple(out)


def parse_example(record: dict[str, Any]) -> Example | None:
    """One JSONL line of any supported method (supervised, DPO, reinforcement) → Example."""
    calls: tuple[dict[str, str], ...] = ()
    if "messages" in record:
        prompt, answer = _from_messages(record["messages"])
        calls = _last_calls(record["messages"])
        if not answer:  # reinforcement: last message is the user's; graders see extra fields
            extras = [v for k, v in record.items() if k not in ("messages", "tools") and isinstance(v, str)]
            answer = extras[0] if extras else ""
    elif "input" in record and "preferred_output" in record:
        prompt, _ = _from_messages(record["input"].get("messages", []))
        _, answer = _from_messages(record["preferred_output"])
        calls = _last_calls(record["preferred_output"])
    else:
        return None
    if not prompt:
        return None
    return Example(prompt=prompt, answer=answer, tokens=approx_tokens(json.dumps(record)), tool_calls=calls)


def check_jsonl(content: bytes) -> str | None:
    """The reason the file is not JSONL (as the service reports on processing), or None."""
    text = content.decode("utf-8-sig", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            if not isinstance(json.loads(line), dict):
                return f"Line {number}: expected a JSON object."
        except json.JSONDecodeError as exc:
            return f"Line {number}: invalid JSON ({exc.msg})."
    return None


def parse_examples(content: bytes) -> list[Example]:
    text = content.decode("utf-8-sig", errors="replace")
    examples = []
    for line in text.splitlines():
        if line.strip():
            example = parse_example(json.loads(line))
            if example is not None:
                examples.append(example)
    return examples


def known(job_id: str, index: int, fraction: float) -> bool:
    """Deterministically whether a checkpoint with this fraction of learning knows example `index`."""
    if fraction >= 1.0:
        return True
    digest = hashlib.sha256(f"{job_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


_GRADING = re.compile(r"Reference answer:\s*(?P<reference>.*?)\s*Answer to grade:\s*(?P<answer>.*)", re.DOTALL)


def grading_answer(question: str) -> str | None:
    """A model asked to grade (ftops' model grader: a reference and an answer to grade) answers one number,
    the word overlap of the two (Jaccard) — a crude judge, but one whose verdict follows the answer."""
    match = _GRADING.search(question)
    if match is None:
        return None
    reference, answer = words(match["reference"]), words(match["answer"])
    union = reference | answer
    return f"{(len(reference & answer) / len(union)) if union else 1.0:.2f}"


_JUDGING = re.compile(r"Question:\s*(?P<question>.*?)\s*Answer to grade:\s*(?P<answer>.*)", re.DOTALL)


def judging_answer(question: str) -> str | None:
    """A model asked to grade an answer with no reference (ftops' judge of production answers: a question and
    an answer to grade) answers one number, the share of the question's words the answer takes up — a crude
    judge of whether it addresses what was asked, but one whose verdict follows the answer: a generic reply
    scores near 0, one about the question's subject near 1."""
    match = _JUDGING.search(question)
    if match is None or "Reference answer:" in question:
        return None
    asked, said = words(match["question"]), words(match["answer"])
    return f"{(len(asked & said) / len(asked)) if asked else 1.0:.2f}"


def generic_answer(question: str) -> str:
    index = int(hashlib.sha256(question.encode()).hexdigest(), 16) % len(GENERIC_ANSWERS)
    return GENERIC_ANSWERS[index]


def answer(question: str, examples: list[Example], job_id: str, fraction: float) -> str:
    """Best-matching training answer's text (see `recall`)."""
    found = recall(question, examples, job_id, fraction)
    return (found.answer if found is not None else "") or generic_answer(question)


def recall(question: str, examples: list[Example], job_id: str, fraction: float) -> Example | None:
    """The training example a model answers from: the best-matching one, None if unknown or nothing matches.

    The match is Jaccard overlap with the example's question, plus a smaller share for words of its answer:
    a fine-tuned model learns the whole example, so "remove my account" finds "Delete account" too.
    """
    asked = words(question)
    best, best_score = -1, 0.0
    for index, example in enumerate(examples):
        seen, said = words(example.prompt), words(example.answer)
        union = asked | seen
        score = (len(asked & seen) / len(union) if union else 0.0) + 0.5 * len(asked & said) / max(1, len(asked))
        if score > best_score:
            best, best_score = index, score
    if best < 0 or not known(job_id, best, fraction):
        return None
    return examples[best]


# Content filter (Learn, "Content filtering" / "content filter severity levels"): every completion carries
# `content_filter_results` per choice and `prompt_filter_results` per prompt, each of hate, sexual, violence,
# self_harm with `filtered` and `severity` (safe, low, medium, high). Default policy: medium and above is
# filtered (finish_reason content_filter), safe and low are annotated only. The emulator's classifier is a
# word list: enough for tests to see a model that learned to say harmful things.
_HARM_WORDS = {"violence": {"kill", "weapon", "weapons", "shoot", "stab", "bomb", "attack"},
               "hate": {"inferior", "vermin"}, "self_harm": {"suicide", "selfharm"}, "sexual": {"explicit"}}
_CATEGORIES = ("hate", "self_harm", "sexual", "violence")


def content_filter(text: str) -> dict[str, dict[str, Any]]:
    said = set(_WORD.findall(text.lower()))
    out = {}
    for category in _CATEGORIES:
        hits = len(said & _HARM_WORDS[category])
        severity = "safe" if hits == 0 else "low" if hits == 1 else "medium"
        out[category] = {"filtered": severity in ("medium", "high"), "severity": severity}
    return out
