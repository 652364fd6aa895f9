"""Whatever shape a line has, the validator reports it; it never crashes (a crash would retry the blob
trigger in a loop instead of quarantining the data)."""
from __future__ import annotations

import json
import random

from vhelpers import check

ODD_VALUES = [None, 0, 1.5, True, "", "x", [], ["user"], {}, {"a": 1}, [{"role": "user"}], "\u2028", "<|endoftext|>"]
FIELDS = ["messages", "role", "content", "tool_calls", "tool_call_id", "weight", "name", "tools", "function",
          "id", "type", "arguments", "input", "preferred_output", "non_preferred_output", "image_url", "detail",
          "text", "parallel_tool_calls", "function_call"]


def odd(rng: random.Random, depth: int = 0) -> object:
    if depth > 3 or rng.random() < 0.4:
        return rng.choice(ODD_VALUES)
    if rng.random() < 0.5:
        return [odd(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(FIELDS): odd(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_random_shapes_in_every_field_are_reported_not_raised():
    rng = random.Random(20261122)
    lines = []
    for _ in range(400):
        messages = [{"role": rng.choice(["user", "assistant", "tool", "system", ["user"], {}, 3]),
                     "content": odd(rng), rng.choice(FIELDS): odd(rng)} for _ in range(rng.randint(0, 4))]
        record = rng.choice([{"messages": messages}, {"messages": odd(rng)}, {"input": {"messages": messages},
                             "preferred_output": odd(rng), "non_preferred_output": odd(rng)}, odd(rng)])
        lines.append(json.dumps(record))
    report = check(("\n".join(lines) + "\n").encode())
    assert not report.valid and report.errors   # every line judged, the file rejected, nothing raised
