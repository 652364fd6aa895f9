"""Builders shared by the validation tests (imported as a plain module: pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from shared.validation import FileReport, ValidationOptions, validate_file


def chat(user: str = "Where is my order?", answer: str = "It ships tomorrow morning.", *,
         system: str | None = "You are a support agent.", **extra: Any) -> dict[str, Any]:
    msgs: list[dict[str, Any]] = []
    if system is not None:
        msgs.append({"role": "system", "content": system})
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": msgs, **extra}


def dpo(prompt: str = "Say hi politely.", good: str = "Hello, nice to meet you.",
        bad: str = "What do you want.") -> dict[str, Any]:
    return {"input": {"messages": [{"role": "user", "content": prompt}]},
            "preferred_output": [{"role": "assistant", "content": good}],
            "non_preferred_output": [{"role": "assistant", "content": bad}]}


def rft(question: str = "What is 2 + 2?", answer: str = "4") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}], "reference_answer": answer}


def jsonl(objs: list[Any], *, end: str = "\n") -> bytes:
    return ("\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs) + end).encode()


def padded(objs: list[Any], n: int = 10, filler: Any = None) -> list[Any]:
    """Objects followed by distinct valid chat examples up to n lines (the minimum-size rule)."""
    out = list(objs)
    i = 0
    while len(out) < n:
        out.append(filler or chat(user=f"Question number {i} about my order?", answer=f"Answer {i} is yes."))
        i += 1
    return out


def check(data: bytes | Iterable[bytes], **opts: Any) -> FileReport:
    chunks = [data] if isinstance(data, bytes) else data
    opts.setdefault("workers", 1)
    return validate_file(chunks, name="train.jsonl", options=ValidationOptions(**opts))


def codes(report: FileReport, kind: str = "all") -> list[str]:
    items = {"errors": report.errors, "warnings": report.warnings}.get(kind, report.errors + report.warnings)
    return [f.code for f in items]


def at(report: FileReport, code: str) -> list[int | None]:
    return [f.line for f in report.errors + report.warnings if f.code == code]

