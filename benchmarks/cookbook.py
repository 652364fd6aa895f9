"""The cookbook-style baseline: how a dataset is usually checked in a notebook, for `make bench` to compare with.

It follows OpenAI's cookbook data-preparation notebook ("Data preparation and analysis for chat model
fine-tuning", examples/Chat_finetuning_data_prep.ipynb): load every line with `json.loads` into a list, run
its format checks, count tokens per message with tiktoken (3 per message, 1 per name, 3 to prime the reply)
and keep per-example lists for the distributions. Three changes so it runs on every shape of `make bench`:
values that are not strings (tool calls, content parts) are counted as their JSON text, special-token
strings are encoded as text instead of raising, and a DPO example's messages are its input's and both
outputs' (the notebook knows chat examples only: without this it would only parse DPO lines). The encoding is tiktoken's own, built offline from the
bundled official vocabulary (shared.validation.tokens.get_encoding), as the validator's is.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shared.validation.tokens import get_encoding


def run(path: Path, encoding_name: str = "o200k_base") -> dict[str, Any]:
    """The notebook's checks and statistics over the file at `path` (every line held in memory, as there)."""
    with path.open(encoding="utf-8") as f:
        dataset = [json.loads(line) for line in f if line.strip()]
    format_errors = _format_errors(dataset)
    encoding = get_encoding(encoding_name)
    encode = encoding.encode

    def tokens(value: Any) -> int:
        return len(encode(value if isinstance(value, str) else json.dumps(value), disallowed_special=()))

    n_missing_system = n_missing_user = 0
    n_messages: list[int] = []
    convo_lens: list[int] = []
    assistant_message_lens: list[int] = []
    for ex in dataset:
        messages = _messages(ex)
        if not isinstance(messages, list):
            continue
        messages = [m for m in messages if isinstance(m, dict)]
        if not any(m.get("role") == "system" for m in messages):
            n_missing_system += 1
        if not any(m.get("role") == "user" for m in messages):
            n_missing_user += 1
        n_messages.append(len(messages))
        num = 0
        for m in messages:
            num += 3
            for key, value in m.items():
                num += tokens(value)
                if key == "name":
                    num += 1
        convo_lens.append(num + 3)
        assistant_message_lens.append(sum(tokens(m.get("content") or "") for m in messages
                                          if m.get("role") == "assistant"))
    return {"examples": len(dataset), "format_errors": dict(format_errors), "missing_system": n_missing_system,
            "missing_user": n_missing_user, "tokens": sum(convo_lens),
            "distribution": _distribution(convo_lens), "assistant": _distribution(assistant_message_lens),
            "messages": _distribution(n_messages)}


def _format_errors(dataset: Iterable[Any]) -> dict[str, int]:
    format_errors: dict[str, int] = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = _messages(ex)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if not isinstance(message, dict):
                format_errors["data_type"] += 1
                continue
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(isinstance(m, dict) and m.get("role", None) == "assistant" for m in messages):
            format_errors["example_missing_assistant_message"] += 1
    return format_errors


def _messages(ex: Any) -> Any:
    """A chat example's messages; a DPO example's input messages and both outputs, one after the other (counted as
    one conversation: 3 tokens per message, then 3 to prime the reply, as the validator counts them)."""
    if not isinstance(ex, dict):
        return None
    if "input" not in ex:
        return ex.get("messages")
    prompt = ex["input"].get("messages") if isinstance(ex["input"], dict) else None
    parts = (prompt, ex.get("preferred_output"), ex.get("non_preferred_output"))
    return [m for part in parts for m in part] if all(isinstance(part, list) for part in parts) else None


def _distribution(values: list[int]) -> dict[str, float]:
    """min, max, mean, median and the 10th/90th percentiles, as the notebook prints them (sorted list)."""
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)
    return {"min": ordered[0], "max": ordered[-1], "mean": sum(ordered) / n, "median": ordered[n // 2],
            "p10": ordered[int(0.1 * (n - 1))], "p90": ordered[int(0.9 * (n - 1))]}
