"""Validation speed and memory on a 480 MiB chat dataset (just under the 512 MB upload limit).

    python -m benchmarks.validation [--path FILE] [--size-mib N] [--workers N]

The dataset is generated once, deterministically, outside the repo (default
/tmp/ftops-bench/chat-480MiB.jsonl): multi-turn support conversations of varied length, some with
tool calls, accented and CJK text and emoji, order numbers, dates and prices, and a sprinkling of
personal data, so every check has work to do. Prints wall time, MB/s and the peak memory of all the
validator's process tree together, as proportional set size (shared pages counted once), sampled.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

from shared.validation import ValidationOptions, validate_dataset

MIB = 1 << 20
DEFAULT_PATH = Path("/tmp/ftops-bench/chat-480MiB.jsonl")
SEED = 20250414

_WORDS = ["order", "refund", "shipping", "delivery", "account", "password", "invoice", "subscription", "discount", "warranty", "battery", "screen", "charger", "replacement", "tracking", "address", "payment", "card", "bank", "transfer", "schedule", "appointment", "router", "firmware", "update", "install", "error", "message", "restart", "settings", "profile", "upgrade", "downgrade", "plan", "monthly", "yearly", "customer", "support", "ticket", "escalate", "manager", "policy", "return", "label", "package", "courier", "weather", "forecast", "morning", "evening", "tomorrow", "yesterday", "quickly", "carefully", "please", "thank", "sorry", "help", "the", "a", "an", "and", "or", "but", "if", "then", "because", "while", "with", "without", "within", "about", "above", "below", "between", "is", "are", "was", "were", "be", "been", "have", "has", "had", "do", "does", "did", "will", "would", "can", "could", "should", "may", "might", "must", "I", "you", "he", "she", "it", "we", "they", "my", "your", "our", "their", "this", "that", "these", "those", "here", "there", "when", "where", "why", "how"]
_ACCENTED = ["café", "naïve", "façade", "Müller", "São", "Paulo", "Łódź", "Ærø", "señor", "jalapeño", "crème", "brûlée"]
_CJK = ["東京", "注文", "配送", "ありがとう", "退款", "客户", "서울", "감사합니다"]
_EMOJI = ["🙂", "🚚", "📦", "✅", "❗"]
_TOOLS = [{"type": "function", "function": {"name": "lookup_order", "description": "Find an order by id",
                                            "parameters": {"type": "object", "properties": {
                                                "order_id": {"type": "string"}}, "required": ["order_id"]}}}]


def _sentence(rng: random.Random) -> str:
    words = []
    for _ in range(rng.randint(6, 28)):
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


def _example(rng: random.Random, i: int) -> dict:
    messages = [{"role": "system", "content": "You are Contoso's support assistant. " + _sentence(rng)}]
    long_tail = rng.random() < 0.03  # a few long documents, as real datasets have
    for turn in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        user = _paragraph(rng, 1, 30 if long_tail else 4)
        if rng.random() < 0.002:
            user += f" You can reach me at user{i}@contoso.com."
        messages.append({"role": "user", "content": user})
        if rng.random() < 0.12:
            call_id = f"call_{i}_{turn}"
            messages.append({"role": "assistant", "tool_calls": [{"id": call_id, "type": "function",
                             "function": {"name": "lookup_order",
                                          "arguments": json.dumps({"order_id": str(rng.randint(1, 10**7))})}}]})
            messages.append({"role": "tool", "tool_call_id": call_id,
                             "content": json.dumps({"status": rng.choice(["shipped", "pending"])})})
        messages.append({"role": "assistant", "content": _paragraph(rng, 1, 12)})
    example: dict = {"messages": messages}
    if any("tool_calls" in m for m in messages):
        example["tools"] = _TOOLS
    return example


def generate(path: Path, size: int) -> None:
    """Write the dataset (deterministic for a given size); a partial file is never left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    rng = random.Random(SEED)
    written, i = 0, 0
    with tmp.open("wb") as out:
        buf: list[bytes] = []
        while True:
            line = (json.dumps(_example(rng, i), ensure_ascii=rng.random() < 0.5) + "\n").encode()
            if written + len(line) > size:
                break
            buf.append(line)
            written += len(line)
            i += 1
            if len(buf) >= 2000:
                out.write(b"".join(buf))
                buf.clear()
        out.write(b"".join(buf))
    tmp.replace(path)


_SAMPLER = r"""
import os, sys, select
root = int(sys.argv[1])
peak_total, peaks = 0, {}  # the tree's summed PSS at its highest; each process's own highest PSS

def tree(pid):
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    out += tree(int(child))
    except OSError:
        pass
    return out

def pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0

while not select.select([sys.stdin], [], [], 0.05)[0]:
    now = {pid: pss(pid) for pid in tree(root) if pid != os.getpid()}
    peak_total = max(peak_total, sum(now.values()))
    for pid, value in now.items():
        peaks[pid] = max(peaks.get(pid, 0), value)
print(peak_total, *sorted(peaks.values(), reverse=True))
"""


class _PeakMemory:
    """Peak memory of this process and its descendants, as proportional set size (PSS): pages shared
    between them (the helper's interpreter, the libraries) are counted once across the tree.

    PSS has no kernel high-water mark, so a separate, mostly sleeping process samples the whole tree
    every 50 ms and keeps the highest sum (a sampling thread here would compete for the GIL).
    """

    def __init__(self) -> None:
        self.peak = 0
        self.per_process: list[int] = []  # each process's own peak PSS, largest first

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen([sys.executable, "-c", _SAMPLER, str(os.getpid())],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self._proc.communicate("stop\n", timeout=30)
        values = [int(v) for v in out.split()] or [0]
        self.peak, self.per_process = values[0], values[1:]


def _chunks(path: Path, size: int = 4 * MIB):
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.validation", description=__doc__.split("\n")[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--size-mib", type=int, default=480)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    args = parser.parse_args(argv)
    path: Path = args.path
    if not path.exists():
        print(f"generating {args.size_mib} MiB dataset at {path} (once) ...", flush=True)
        t0 = time.perf_counter()
        generate(path, args.size_mib * MIB)
        print(f"  generated in {time.perf_counter() - t0:.1f} s", flush=True)
    size = path.stat().st_size
    options = ValidationOptions(workers=args.workers)
    with _PeakMemory() as mem:
        t0 = time.perf_counter()
        report = validate_dataset({"train": lambda: _chunks(path)}, options=options)
        wall = time.perf_counter() - t0
    stats = report.stats
    print(f"file          {path} ({size / MIB:.0f} MiB, {report.examples} examples)")
    print(f"result        {'accepted' if report.valid else 'rejected'}: {len(report.errors)} errors listed, "
          f"{len(report.warnings)} warnings listed; {stats['tokens']['total']:,} tokens")
    print(f"wall time     {wall:.1f} s")
    print(f"throughput    {size / 1e6 / wall:.1f} MB/s ({size / MIB / wall:.1f} MiB/s)")
    parts = " + ".join(f"{v / MIB:.0f}" for v in mem.per_process)
    print(f"peak memory   {mem.peak / MIB:.0f} MiB (PSS of the whole process tree at its peak; "
          f"each process's own peak: {parts})")
    print(f"cpu time      {sum(os.times()[:4]):.1f} s (this process and its reaped children)")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
