"""Datasets of every shape for `make bench`, generated deterministically outside the repo (once, then reused).

Speed shapes (measured beside the cookbook-style baseline): `long` (multi-turn support conversations, some
long documents: the original benchmark file), `short` (one-turn support, SQL, extraction and multilingual
examples, some with tool calls: ~450 bytes each) and `tiny` (classification: ~110 bytes each).
Format shapes (beside the baseline once): `dpo` (preference pairs) and `rft` (reinforcement prompts).
Memory shapes (hostile or odd files, only the validator's peak memory matters): blank lines, `{}` lines,
lines with empty `messages`, distinct tiny lines, a few huge examples, one 64 MiB line.
Tests call `write_shape` with a small size; the benchmark with a large one.
"""
from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

MIB = 1 << 20
SEED = 20250414
SPEED_SHAPES = ("long", "short", "tiny")
# Other formats, compared with the baseline once (the validator checks them on its general path).
FORMAT_SHAPES = ("dpo", "rft")
MEMORY_SHAPES = ("blank", "braces", "empty_messages", "distinct_tiny", "huge", "one_line_64mib")

_WORDS = ["order", "refund", "shipping", "delivery", "account", "password", "invoice", "subscription", "discount",
          "warranty", "battery", "screen", "charger", "replacement", "tracking", "address", "payment", "card",
          "bank", "transfer", "schedule", "appointment", "router", "firmware", "update", "install", "error",
          "message", "restart", "settings", "profile", "upgrade", "downgrade", "plan", "monthly", "yearly",
          "customer", "support", "ticket", "escalate", "manager", "policy", "return", "label", "package",
          "courier", "weather", "forecast", "morning", "evening", "tomorrow", "yesterday", "quickly",
          "carefully", "please", "thank", "sorry", "help", "the", "a", "an", "and", "or", "but", "if", "then",
          "because", "while", "with", "without", "within", "about", "above", "below", "between", "is", "are",
          "was", "were", "be", "been", "have", "has", "had", "do", "does", "did", "will", "would", "can",
          "could", "should", "may", "might", "must", "I", "you", "he", "she", "it", "we", "they", "my", "your",
          "our", "their", "this", "that", "these", "those", "here", "there", "when", "where", "why", "how"]
_ACCENTED = ["café", "naïve", "façade", "Müller", "São", "Paulo", "Łódź", "Ærø", "señor", "jalapeño", "crème",
             "brûlée"]
_CJK = ["東京", "注文", "配送", "ありがとう", "退款", "客户", "서울", "감사합니다"]
_EMOJI = ["🙂", "🚚", "📦", "✅", "❗"]
_TOOLS = [{"type": "function", "function": {"name": "lookup_order", "description": "Find an order by id",
                                            "parameters": {"type": "object", "properties": {
                                                "order_id": {"type": "string"}}, "required": ["order_id"]}}}]
_LABELS = ["positive", "negative", "neutral", "billing", "shipping", "technical", "other"]
_TABLES = ["orders", "customers", "invoices", "shipments", "tickets"]
_COLUMNS = ["id", "status", "total", "created_at", "customer_id", "country", "amount"]


def _sentence(rng: random.Random, lo: int = 6, hi: int = 28) -> str:
    words = []
    for _ in range(rng.randint(lo, hi)):
        r = rng.random()
        if r < 0.86:
            words.append(rng.choice(_WORDS))
        elif r < 0.91:
            words.append(rng.choice(_ACCENTED))
        elif r < 0.94:
            words.append(rng.choice(_CJK))
        elif r < 0.955:
            words.append(rng.choice(_EMOJI))
        elif r < 0.975:
            words.append(f"#{rng.randint(100000, 9999999)}")
        elif r < 0.99:
            words.append(f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}")
        else:
            words.append(f"${rng.randint(1, 999)}.{rng.randint(0, 99):02d}")
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice(".?!")


def _paragraph(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(lo, hi)))


def _tool_turn(rng: random.Random, i: int, turn: int) -> list[dict]:
    call_id = f"call_{i}_{turn}"
    return [{"role": "assistant", "tool_calls": [{"id": call_id, "type": "function", "function": {
                "name": "lookup_order", "arguments": json.dumps({"order_id": str(rng.randint(1, 10**7))})}}]},
            {"role": "tool", "tool_call_id": call_id,
             "content": json.dumps({"status": rng.choice(["shipped", "pending"])})}]


def long_example(rng: random.Random, i: int) -> dict:
    """Multi-turn support conversations, a few long documents (the original 480 MiB benchmark's examples)."""
    messages = [{"role": "system", "content": "You are Contoso's support assistant. " + _sentence(rng)}]
    long_tail = rng.random() < 0.03
    for turn in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        user = _paragraph(rng, 1, 30 if long_tail else 4)
        if rng.random() < 0.002:
            user += f" You can reach me at user{i}@contoso.com."
        messages.append({"role": "user", "content": user})
        if rng.random() < 0.12:
            messages += _tool_turn(rng, i, turn)
        messages.append({"role": "assistant", "content": _paragraph(rng, 1, 12)})
    example: dict = {"messages": messages}
    if any("tool_calls" in m for m in messages):
        example["tools"] = _TOOLS
    return example


def short_example(rng: random.Random, i: int) -> dict:
    """One turn: support, SQL, extraction or multilingual; some with a tool call (~450 bytes)."""
    kind = rng.random()
    if kind < 0.4:
        messages = [{"role": "system", "content": "You are Contoso's support assistant."},
                    {"role": "user", "content": _sentence(rng, 8, 30)}]
        if rng.random() < 0.15:
            messages += _tool_turn(rng, i, 0)
        messages.append({"role": "assistant", "content": _sentence(rng, 10, 40)})
    elif kind < 0.65:
        table, cols = rng.choice(_TABLES), rng.sample(_COLUMNS, rng.randint(1, 4))
        messages = [{"role": "system", "content": f"Write SQL for the table {table}({', '.join(_COLUMNS)})."},
                    {"role": "user", "content": f"Show {' and '.join(cols)} for {_sentence(rng, 4, 10)}"},
                    {"role": "assistant", "content": f"SELECT {', '.join(cols)} FROM {table} WHERE status = "
                                                     f"'{rng.choice(['open', 'paid', 'late'])}' LIMIT "
                                                     f"{rng.randint(1, 500)};"}]
    elif kind < 0.85:
        order = rng.randint(100000, 9999999)
        messages = [{"role": "system", "content": "Extract the order id and the issue as JSON."},
                    {"role": "user", "content": f"{_sentence(rng, 5, 20)} Order #{order}. {_sentence(rng, 3, 12)}"},
                    {"role": "assistant", "content": json.dumps({"order_id": order,
                                                                 "issue": rng.choice(_LABELS)})}]
    else:
        words = [rng.choice(_ACCENTED + _CJK) for _ in range(rng.randint(4, 16))]
        messages = [{"role": "system", "content": "Translate to English."},
                    {"role": "user", "content": " ".join(words)},
                    {"role": "assistant", "content": _sentence(rng, 4, 16)}]
    example: dict = {"messages": messages}
    if any("tool_calls" in m for m in messages):
        example["tools"] = _TOOLS
    return example


def tiny_example(rng: random.Random, i: int) -> dict:
    """Classification: a short text and its label (~110 bytes)."""
    return {"messages": [{"role": "user", "content": _sentence(rng, 3, 9)},
                         {"role": "assistant", "content": rng.choice(_LABELS)}]}


def dpo_example(rng: random.Random, i: int) -> dict:
    """DPO: a support prompt, a preferred and a non-preferred answer (~800 bytes)."""
    return {"input": {"messages": [{"role": "system", "content": "You are Contoso's support assistant."},
                                   {"role": "user", "content": _paragraph(rng, 1, 3)}]},
            "preferred_output": [{"role": "assistant", "content": _paragraph(rng, 1, 4)}],
            "non_preferred_output": [{"role": "assistant", "content": _paragraph(rng, 1, 4)}]}


def rft_example(rng: random.Random, i: int) -> dict:
    """Reinforcement: a user's question and the field its grader reads (~300 bytes)."""
    return {"messages": [{"role": "user", "content": _paragraph(rng, 1, 3)}], "reference_answer": rng.choice(_LABELS)}


_EXAMPLES: dict[str, Callable[[random.Random, int], dict]] = {
    "long": long_example, "short": short_example, "tiny": tiny_example, "dpo": dpo_example, "rft": rft_example}


def _example_lines(shape: str) -> Iterator[bytes]:
    rng = random.Random(SEED)
    make = _EXAMPLES[shape]
    i = 0
    while True:
        yield (json.dumps(make(rng, i), ensure_ascii=rng.random() < 0.5) + "\n").encode()
        i += 1


def _repeated(line: bytes) -> Iterator[bytes]:
    while True:
        yield line


def _blank() -> Iterator[bytes]:
    rng = random.Random(SEED)
    example = (json.dumps(tiny_example(rng, 0)) + "\n").encode()
    while True:   # mostly blank lines, an example now and then
        yield b"\n" * 999 + example


def _distinct_tiny() -> Iterator[bytes]:
    i = 0
    while True:   # every line a different, tiny, usable-format example (the duplicate index's worst case)
        yield b'{"input":%d}\n' % i
        i += 1


def _huge() -> Iterator[bytes]:
    rng = random.Random(SEED)
    words = " ".join(rng.choice(_WORDS) for _ in range(200_000))   # ~1.2 MB of text
    while True:   # ~24 MiB examples (under the 32 MiB line limit)
        content = " ".join([words] * 20)
        yield (json.dumps({"messages": [{"role": "user", "content": content},
                                        {"role": "assistant", "content": content[:100_000]}]}) + "\n").encode()


def _one_line() -> Iterator[bytes]:
    yield b'{"messages":[{"role":"user","content":"' + b"x" * (64 * MIB) + b'"}]}\n'
    yield from _example_lines("tiny")


def _lines(shape: str) -> Iterator[bytes]:
    if shape in _EXAMPLES:
        return _example_lines(shape)
    return {"blank": _blank, "braces": lambda: _repeated(b"{}\n"),
            "empty_messages": lambda: _repeated(b'{"messages":[]}\n'), "distinct_tiny": _distinct_tiny,
            "huge": _huge, "one_line_64mib": _one_line}[shape]()


def write_shape(path: Path, shape: str, size: int) -> int:
    """Write at most `size` bytes of whole lines of `shape` to `path` (atomically); the number of lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.partial")   # two runs generating the same file never share one
    written = lines = 0
    with tmp.open("wb") as out:
        buf: list[bytes] = []
        for piece in _lines(shape):
            if written + len(piece) > size:
                break
            buf.append(piece)
            written += len(piece)
            lines += piece.count(b"\n")
            if len(buf) >= 2000:
                out.write(b"".join(buf))
                buf.clear()
        out.write(b"".join(buf))
    tmp.replace(path)
    return lines


def shape_path(directory: Path, shape: str, size_mib: int) -> Path:
    return directory / f"{shape}-{size_mib}MiB.jsonl"
