"""Held-out examples: JSONL chat examples → (prompt messages, reference answer), capped by a seeded sample."""
from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.run.echo import echo

MAX_EXAMPLES = 200   # enough for a stable mean F1; bounds cost and wall time of one evaluation
MAX_LINE_BYTES = 32 << 20  # as validation's line cap

# Fields the chat completions API accepts on a message; training-only fields (e.g. `weight`) are dropped
# because the API rejects unknown ones.
_MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id")


@dataclass(frozen=True)
class Example:
    line: int                                   # 1-based line in the eval file, for the report
    messages: list[dict[str, Any]]              # the prompt: everything before the reference answer
    reference: str
    tools: list[dict[str, Any]] | None = field(default=None)
    reference_tool_calls: tuple[dict[str, str], ...] = ()   # the answer calls tools: [{"name", "arguments"}]
    item: dict[str, Any] = field(default_factory=dict)       # reinforcement: the line's other fields ({{item.x}})

    @property
    def prompt_text(self) -> str:
        """The user's side of the prompt, for reports."""
        return "\n".join(content_text(m.get("content")) for m in self.messages if m.get("role") == "user")


@dataclass(frozen=True)
class LoadedExamples:
    examples: list[Example]
    total: int           # usable examples in the file (before sampling)
    skipped: list[str]   # "line N: why", first few only


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):   # content parts: only text parts carry a comparable answer
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def tool_calls_of(message: dict[str, Any]) -> tuple[dict[str, str], ...]:
    """An assistant message's `tool_calls` as (name, arguments text) pairs; malformed entries dropped."""
    calls = message.get("tool_calls")
    out = []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            arguments = function.get("arguments")
            out.append({"name": function["name"],
                        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)})
    return tuple(out)


def _clean(message: dict[str, Any]) -> dict[str, Any]:
    return {k: message[k] for k in _MESSAGE_FIELDS if k in message}


def parse_example(record: Any, line: int) -> Example | str:
    """One JSONL record → Example, or the reason it cannot be evaluated."""
    if not isinstance(record, dict):
        return "not a JSON object"
    tools = record.get("tools")
    calls: tuple[dict[str, str], ...] = ()
    item: dict[str, Any] = {}
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            return "'messages' is empty"
        last = messages[-1]
        extras = {k: v for k, v in record.items() if k not in ("messages", "tools", "parallel_tool_calls")}
        if isinstance(last, dict) and last.get("role") == "user" and extras:
            # reinforcement: the grader reads the line's other fields; the first text one is the reference
            item, prompt = extras, messages
            reference = next((v for v in extras.values() if isinstance(v, str)), json.dumps(extras))
        elif not isinstance(last, dict) or last.get("role") != "assistant":
            return "the last message is not an assistant answer (nothing to compare with)"
        else:
            reference, prompt, calls = content_text(last.get("content")), messages[:-1], tool_calls_of(last)
    elif isinstance(record.get("input"), dict) and isinstance(record.get("preferred_output"), list):
        # DPO: the preferred output is the reference answer
        prompt = record["input"].get("messages") or []
        tools = record["input"].get("tools", tools)
        answers = [m for m in record["preferred_output"] if isinstance(m, dict) and m.get("role") == "assistant"]
        if not answers:
            return "'preferred_output' has no assistant message"
        reference, calls = content_text(answers[-1].get("content")), tool_calls_of(answers[-1])
    else:
        return "neither 'messages' nor a DPO 'input'/'preferred_output'"
    if not any(isinstance(m, dict) and m.get("role") == "user" for m in prompt):
        return "no user message before the answer"
    if not reference.strip() and not calls:
        return "the reference answer has no text"
    return Example(line=line, messages=[_clean(m) for m in prompt if isinstance(m, dict)], reference=reference,
                   tools=tools if isinstance(tools, list) and tools else None, reference_tool_calls=calls,
                   item=item)


def load_examples(lines: Iterable[str | bytes], *, seed: int | str, limit: int = MAX_EXAMPLES) -> LoadedExamples:
    """A uniform, seeded sample of at most `limit` usable examples, read in one pass.

    Reservoir sampling (Algorithm R): memory holds `limit` examples whatever the file's size, and the
    same file and seed give the same sample, so a retry evaluates exactly the same examples.
    """
    rng = random.Random(str(seed))
    examples: list[Example] = []
    skipped: list[str] = []
    n_skipped = total = 0
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8-sig", "replace") if isinstance(raw, bytes) else raw.lstrip("\ufeff")
        if not text.strip():
            continue
        try:
            parsed = parse_example(json.loads(text), number)
        except ValueError as exc:
            parsed = f"not JSON ({echo(exc)})"
        except RecursionError:
            parsed = "not JSON (nested too deeply to parse)"
        if isinstance(parsed, Example):
            if total < limit:
                examples.append(parsed)
            else:
                slot = rng.randrange(total + 1)
                if slot < limit:
                    examples[slot] = parsed
            total += 1
        else:
            n_skipped += 1
            if len(skipped) < 10:
                skipped.append(f"line {number}: {parsed}")
    if n_skipped > len(skipped):
        skipped.append(f"… and {n_skipped - len(skipped)} more")
    examples.sort(key=lambda e: e.line)  # file order, for the report
    return LoadedExamples(examples=examples, total=total, skipped=skipped)


def stream_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Every line of a JSONL blob in order (blank ones too, so numbers match the file), one block of
    lines in memory at a time. An over-long line comes out empty: intake already rejected its file."""
    from shared.validation.lines import split_blocks

    for block in split_blocks(chunks, max_line_bytes=MAX_LINE_BYTES):
        if block.too_long is not None:
            yield b""
        else:
            yield from block.data.split(b"\n")
