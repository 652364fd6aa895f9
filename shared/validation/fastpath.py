"""Plain supervised chat lines, checked over columns: a typed decode per line in C (msgspec), then list
comprehensions and numpy over the whole block instead of Python code per message.

A line is *plain* when msgspec decodes it as exactly `{"messages": [{"role": "system" | "user" | "assistant",
"content": <string>}, ...]}` (keys in any order, no other key) and its messages need no finding but
`short_assistant_answer`: at least one assistant and one system or user message, no two assistant messages in a
row, no empty assistant answer, no `<|` in a text. Every other line is left to the general path
(worker.prepare_block and formats.Checker), which decides and words every finding. msgspec accepts a line only
where orjson and json read the same value (UTF-8 checked, lone surrogates and control characters refused, the
last of duplicate keys kept); tests/unit/validation/test_validation_fastpath.py compares both paths' reports
on hostile lines. For a plain line the general path's counts reduce to: 3 tokens per message plus its role's,
its text's, and 3 to prime the reply, every text on the prompt side but the assistant's (formats.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, compress
from typing import Any, Literal

import msgspec
import numpy as np

from .formats import REPLY_PRIMING, TOKENS_PER_MESSAGE
from .options import FINDINGS_PER_CODE
from .tokens import Counter

SHORT_ANSWER_CHARS = 48  # as formats.Checker: an assistant text this short may be a single word
# The three roles differ in length: a role's code is its len() (a C call per message, no dict lookup).
_ROLE_LEN = {"system": 6, "user": 4, "assistant": 9}
_ASSISTANT = _ROLE_LEN["assistant"]


class _Message(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: Literal["system", "user", "assistant"]
    content: str


class _Example(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    messages: list[_Message]


_decode = msgspec.json.Decoder(_Example).decode


@dataclass
class PlainBlock:
    """A block's plain examples (in line order) and where the rest of its lines are."""

    rest: list[int]  # indexes (in the block) of the lines the general path checks
    lines: list[int] = field(default_factory=list)  # line number of each plain example
    messages: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # per example
    eager: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # per example: all but text tokens
    texts: list[str] = field(default_factory=list)  # every message's text, example after example
    assistant: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # per text: an assistant's
    findings: list[tuple[int, str, str]] = field(default_factory=list)  # (line, code, message), in line order
    not_listed: dict[str, int] = field(default_factory=dict)  # per code: findings past the cap, only counted


def _decode_all(raws: list[bytes]) -> list[Any]:
    try:  # one comprehension while every line decodes (the usual block)...
        return [_decode(raw) for raw in raws]
    except Exception:  # noqa: BLE001 - ...else line by line: a line msgspec refuses is the general path's
        out: list[Any] = []
        for raw in raws:
            try:
                out.append(_decode(raw))
            except Exception:  # noqa: BLE001 - any refusal (syntax, type, depth): the general path decides
                out.append(None)
        return out


class PlainChecker:
    """Picks and checks a block's plain lines for one process (its counter's role tokens, computed once)."""

    def __init__(self, counter: Counter) -> None:
        role_tokens = np.zeros(max(_ROLE_LEN.values()) + 1, np.int64)
        for role, code in _ROLE_LEN.items():
            role_tokens[code] = TOKENS_PER_MESSAGE + counter.count(role)
        self._role_tokens = role_tokens

    def check(self, raws: list[bytes], first_line: int, special: bool) -> PlainBlock:
        """`raws`: the block's lines; `special`: some line may spell a special token (worker.prepare_block)."""
        objs = _decode_all(raws)
        lists = [o.messages if o is not None else [] for o in objs]
        n = np.fromiter(map(len, lists), np.int64, len(lists))
        ok = n > 0  # also False where the line was refused (no list: none of its messages)
        flat = list(chain.from_iterable(lists))
        del lists, objs
        codes = np.fromiter(map(len, [m.role for m in flat]), np.int8, len(flat))
        texts = [m.content for m in flat]
        del flat
        sizes = np.fromiter(map(len, texts), np.int64, len(texts))
        assistant = codes == _ASSISTANT
        starts = np.zeros(len(n), np.int64)
        np.cumsum(n[:-1], out=starts[1:])
        owner = np.repeat(np.arange(len(n)), n)  # per message: the index of its line
        n_assistant = np.zeros(len(n), np.int64)
        np.add.at(n_assistant, owner[assistant], 1)
        ok &= (n_assistant > 0) & (n_assistant < n)  # an assistant message and a system or user one
        twice = assistant[1:] & assistant[:-1] & (owner[1:] == owner[:-1])
        ok[owner[1:][twice]] = False  # two assistant messages in a row
        ok[owner[assistant & (sizes == 0)]] = False  # an empty answer
        if special:  # "<|" in a text: the general path words the special_token finding
            suspects = [i for i, raw in enumerate(raws) if ok[i] and (b"<" in raw or b"\\u003" in raw)]
            for i in suspects:
                if any("<|" in t for t in texts[starts[i]:starts[i] + n[i]]):
                    ok[i] = False
        keep = ok[owner]
        if not keep.all():
            texts = list(compress(texts, keep.tolist()))
            codes, assistant, sizes, owner = codes[keep], assistant[keep], sizes[keep], owner[keep]
        plain = np.flatnonzero(ok)
        n_plain = n[plain]
        eager = np.zeros(len(plain), np.int64)
        if len(plain):
            eager = np.add.reduceat(self._role_tokens[codes], np.cumsum(n_plain) - n_plain) + REPLY_PRIMING
        block = PlainBlock(np.flatnonzero(~ok).tolist(), (plain + first_line).tolist(), n_plain, eager, texts,
                           assistant)
        short = np.flatnonzero(assistant & (sizes < SHORT_ANSWER_CHARS))
        if len(short):  # one word or none: listed up to the cap, the rest only counted
            short = short[[len(texts[k].split()) <= 1 for k in short.tolist()]]
            first_text = np.cumsum(n_plain) - n_plain
            where = np.searchsorted(first_text, short, side="right") - 1
            listed = short[:FINDINGS_PER_CODE].tolist()
            block.findings = [(int(plain[ex]) + first_line, "short_assistant_answer",
                               f"messages[{k - int(first_text[ex]) + 1}]: answer is empty or one word")
                              for k, ex in zip(listed, where[:len(listed)].tolist(), strict=True)]
            if len(short) > len(listed):
                block.not_listed["short_assistant_answer"] = len(short) - len(listed)
        return block


def plain_totals(block: PlainBlock, counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per plain example: (its tokens, its assistant tokens), given the token count of each of its texts."""
    if not block.lines:
        empty = np.zeros(0, np.int64)
        return empty, empty
    per_text = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(block.messages) - block.messages
    text_tokens = np.add.reduceat(per_text, starts)
    assistant_tokens = np.add.reduceat(np.where(block.assistant, per_text, 0), starts)
    return block.eager + text_tokens, assistant_tokens


