"""Curation of production exchanges into training examples, with the validator's own rules.

An exchange (a stored completion or a line of a `traffic/` drop) becomes a chat example only if it is a
well-formed supervised example (the validator's `Checker`), carries no personal data or secret (the
validator's privacy detectors: dropped, or masked when the policy says so), is rated high enough (when the
policy sets `min_rating` and the exchange has a rating), is not a duplicate (the validator's content hash),
and does not overlap the environment's held-out evaluation data or the previous training set (leakage).
Pure: the harvest stage (shared.stages.harvest) reads and writes; this decides. Counts are kept per reason.

Overlap is measured on the user turns, normalised (case, whitespace, punctuation): an exact match, or a
Jaccard similarity of their word 3-gram shingles at or above the policy's `leakage_threshold`. Prompts of
fewer than three words are compared exactly only.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.run import privacy
from shared.validation.codes import CODES
from shared.validation.formats import Checker
from shared.validation.lines import content_hash

SHINGLE = 3
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Exchange:
    """One production exchange: the conversation as the model saw it, and its answer as the last message."""
    id: str                                   # stored completion id, or `<blob>#<line>` for a traffic drop
    messages: tuple[dict[str, Any], ...]
    created: float = 0.0                      # seconds since the epoch
    rating: float | None = None
    tools: tuple[dict[str, Any], ...] = ()
    reference: str | None = None              # the right answer, when someone supplied it (the drift watch)


@dataclass(frozen=True)
class CurationPolicy:
    privacy: Literal["drop", "mask"] = "drop"
    min_rating: float | None = None
    leakage_threshold: float = 0.6


@dataclass
class Curated:
    kept: list[dict[str, Any]] = field(default_factory=list)       # example objects, ready for train.jsonl
    dropped: Counter[str] = field(default_factory=Counter)           # reason → count
    masked: int = 0                                                  # exchanges kept with masked findings
    privacy_findings: int = 0                                        # findings seen (dropped or masked)

    def counts(self) -> dict[str, Any]:
        return {"kept": len(self.kept), "dropped": dict(sorted(self.dropped.items())), "masked": self.masked,
                "privacy_findings": self.privacy_findings}


def prompt_text(messages: Iterable[dict[str, Any]]) -> str:
    """The user turns of a conversation, normalised: what leakage is measured on."""
    parts = []
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):   # content parts
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            parts.append(str(content or ""))
    return " ".join(_WORD.findall(" ".join(parts).casefold()))


def shingles(text: str) -> frozenset[tuple[str, ...]]:
    words = text.split()
    return frozenset(tuple(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1))


class Overlap:
    """Prompts that training data must not repeat (held-out data, the previous training set)."""

    def __init__(self, prompts: Iterable[str], threshold: float) -> None:
        self.threshold = threshold
        self.exact: set[str] = set()
        self.shingled: list[frozenset[tuple[str, ...]]] = []
        self.index: dict[tuple[str, ...], list[int]] = {}
        for text in prompts:
            self.add(text)

    def add(self, text: str) -> None:
        self.exact.add(text)
        grams = shingles(text)
        if grams:
            n = len(self.shingled)
            self.shingled.append(grams)
            for g in grams:
                self.index.setdefault(g, []).append(n)

    def hits(self, text: str) -> bool:
        if text in self.exact:
            return True
        grams = shingles(text)
        if not grams:
            return False
        shared: Counter[int] = Counter(i for g in grams for i in self.index.get(g, ()))
        return any(common / len(grams | self.shingled[i]) >= self.threshold for i, common in shared.items())


def _format_problem(example: dict[str, Any]) -> str | None:
    """The first error the validator finds in this example (its warnings do not drop it)."""
    found: list[str] = []
    Checker(None, None, lambda code, _message: found.append(code), defer_min_chars=1 << 30).check(example,
                                                                                                 "supervised")
    return next((code for code in found if CODES[code].severity == "error"), None)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return privacy.mask(value)
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


def curate(exchanges: Sequence[Exchange], policy: CurationPolicy, *, held_out: Overlap, previous: Overlap,
           seen: set[int] | None = None) -> Curated:
    """The exchanges that may train a model, in order; `seen` (content hashes already kept, e.g. by an
    earlier tick's pool) grows with what is kept here."""
    out, seen = Curated(), seen if seen is not None else set()
    for exchange in exchanges:
        example: dict[str, Any] = {"messages": [dict(m) for m in exchange.messages]}
        if exchange.tools:
            example["tools"] = list(exchange.tools)
        if not example["messages"] or example["messages"][-1].get("role") != "assistant":
            out.dropped["malformed: no answer"] += 1
            continue
        problem = _format_problem(example)
        if problem:
            out.dropped[f"malformed: {problem}"] += 1
            continue
        if policy.min_rating is not None and exchange.rating is not None and exchange.rating < policy.min_rating:
            out.dropped["rated below min_rating"] += 1
            continue
        line = json.dumps(example, ensure_ascii=False).encode()
        findings = privacy.scan_decoded(line)
        if findings:
            out.privacy_findings += len(findings)
            if policy.privacy == "drop":
                out.dropped["personal data or secret"] += 1
                continue
            example = _masked(example)
            line = json.dumps(example, ensure_ascii=False).encode()
            if privacy.scan_decoded(line):   # masking must leave nothing a scan finds
                out.dropped["personal data or secret (unmaskable)"] += 1
                continue
            out.masked += 1
        text = prompt_text(example["messages"])
        if held_out.hits(text):
            out.dropped["overlaps held-out evaluation data"] += 1
            continue
        if previous.hits(text):
            out.dropped["overlaps the previous training set"] += 1
            continue
        digest = content_hash(line)
        if digest in seen:
            out.dropped["duplicate"] += 1
            continue
        seen.add(digest)
        out.kept.append(example)
    return out
