"""Plain supervised chat lines, checked over columns: a typed decode per line in C (msgspec), then list
comprehensions and numpy over the whole block instead of Python code per message.

A line is *plain* when msgspec decodes it as exactly `{"messages": [{"role": "system" | "user" | "assistant",
"content": <string>}, ...]}` (keys in any order, no other key) and its messages need no finding but
`short_assistant_answer`: at least one assistant and one system or user message, no two assistant messages in a
row, no empty assistant answer, no `<|` in a text. A line msgspec refuses so, if it spells `"tool`, is decoded
again as a tool-calling conversation (`tools`, assistant `tool_calls`, `tool` replies) and checked line by line under the same rule,
plus: every call well formed with JSON arguments, every tool reply answering an earlier call of its example,
the `tools` list valid. Every other line is left to the general path (worker.prepare_block and
formats.Checker), which decides and words every finding. msgspec accepts a line only where orjson and json read
the same value (UTF-8 checked, lone surrogates and control characters refused, the last of duplicate keys
kept); tests/unit/validation/test_validation_fastpath.py compares both paths' reports on hostile lines. For
such a line the general path's counts reduce to: 3 tokens per message plus its role's, its texts' (content,
and a call's name and arguments), the `tools` list's compact JSON and 3 to prime the reply, every text on the
prompt side but the assistant's (formats.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, compress
from typing import Any, Literal

import msgspec
import numpy as np

from .formats import (
    _COMPACT,
    DECODE_JSON,
    REPLY_PRIMING,
    SHORT_ANSWER_CHARS,
    TOKENS_PER_MESSAGE,
    _arguments_problem,
    _tool_ok,
    one_word,
)
from .options import FINDINGS_PER_CODE
from .tokens import Counter

# A message's role as a small int: the three roles of a plain line differ in length, so their code is their
# len() (a C call per message, no dict lookup); "tool" (only in tool-calling lines, coded one at a time) has 0.
_ROLE_CODE = {"system": 6, "user": 4, "assistant": 9, "tool": 0}
_ASSISTANT = _ROLE_CODE["assistant"]
TOOLS_CACHE = 256  # distinct `tools` lists remembered per process (datasets repeat one on every line)
_TOOLS_CACHED_BYTES = 65536  # ... each at most this long
_UNSET = msgspec.UNSET


class _Message(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: Literal["system", "user", "assistant"]
    content: str


class _Example(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    messages: list[_Message]


class _Function(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    name: str
    arguments: str


class _Call(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    id: str
    type: Literal["function"]
    function: _Function


class _ToolMessage(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None | msgspec.UnsetType = _UNSET  # missing and null read alike (the Checker's .get)
    tool_calls: list[_Call] | msgspec.UnsetType = _UNSET
    tool_call_id: str | msgspec.UnsetType = _UNSET


class _ToolExample(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    messages: list[_ToolMessage]
    tools: msgspec.Raw | msgspec.UnsetType = _UNSET


_decode = msgspec.json.Decoder(_Example).decode
_decode_tools = msgspec.json.Decoder(_ToolExample).decode


@dataclass
class PlainBlock:
    """A block's plain examples (in line order) and where the rest of its lines are."""

    rest: list[int]  # indexes (in the block) of the lines the general path checks
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # line number of each example
    messages: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # per example
    n_texts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # per example
    roles: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))  # per message of the examples: its code
    texts: list[str] = field(default_factory=list)  # every example's texts, example after example
    assistant: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # per text: an assistant's
    findings: list[tuple[int, str, str]] = field(default_factory=list)  # (line, code, message), in line order
    not_listed: dict[str, int] = field(default_factory=dict)  # per code: findings past the cap, only counted


# Only refused lines spelling this are tried again as tool-calling conversations.
_TOOL_KEY = b'"tool'
# A block whose lines are nearly all refused (hostile, or another format) stops being tried after this many
# refusals: a refused decode costs about what the general path's check of a blank line does.
GIVE_UP_AFTER = 256


def _decode_all(raws: list[bytes]) -> tuple[list[Any], bool]:
    """(per line: its plain struct, or None (refused, or not tried); whether any line was refused)."""
    try:  # one comprehension while every line decodes (the usual block)...
        return [_decode(raw) for raw in raws], False
    except Exception:  # noqa: BLE001 - ...else line by line: a line msgspec refuses is the general path's
        out: list[Any] = []
        append = out.append
        refused = 0
        for tried, raw in enumerate(raws, 1):
            if not raw or (raw[0] != 0x7B and raw.lstrip()[:1] != b"{"):  # blank, or not an object
                append(None)
                continue
            try:
                append(_decode(raw))
            except Exception:  # noqa: BLE001 - any refusal (syntax, type, depth): the general path decides
                append(None)
                refused += 1
                if refused > GIVE_UP_AFTER and 10 * refused > 9 * tried:
                    out += [None] * (len(raws) - tried)
                    break
        return out, True


class PlainChecker:
    """Picks and checks a block's plain lines for one process (its counter's role tokens, computed once)."""

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._message_tokens: np.ndarray | None = None
        self._tools: dict[bytes, str | None] = {}  # a `tools` list's bytes -> its compact JSON (None: invalid)

    def message_tokens(self) -> np.ndarray:
        """Per role code: a message's tokens but its texts' (asked when the first block is finished, not when it is
        checked: the counter may be waiting for a helper's tokenizer meanwhile)."""
        if self._message_tokens is None:
            table = np.zeros(max(_ROLE_CODE.values()) + 1, np.int64)
            for role, code in _ROLE_CODE.items():
                table[code] = TOKENS_PER_MESSAGE + self._counter.count(role)
            self._message_tokens = table
        return self._message_tokens

    def check(self, raws: list[bytes], first_line: int, special: bool) -> PlainBlock:
        """`raws`: the block's lines; `special`: some line may spell a special token (worker.prepare_block searches
        the block once)."""
        objs, refused = _decode_all(raws)
        # A decoded line that breaks a rule has no tool field: only refused ones may be tool-calling lines (a
        # block with none is not searched: that was ~3% of the main thread on short lines).
        undecoded = [i for i, o in enumerate(objs) if o is None and _TOOL_KEY in raws[i]] if refused else []
        if not undecoded and not any(objs):  # nothing for the fast path (hostile lines, another format)
            return PlainBlock(list(range(len(raws))))
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
        block = PlainBlock([], plain + first_line, n_plain, n_plain, codes, texts, assistant)
        short = np.flatnonzero(assistant & (sizes < SHORT_ANSWER_CHARS))
        n_short = 0
        if len(short):  # one word or none: the first ones listed (in line order), the rest only counted
            short = short[[one_word(texts[k]) for k in short.tolist()]]
            first_text = np.cumsum(n_plain) - n_plain
            where = np.searchsorted(first_text, short, side="right") - 1
            n_short = len(short)
            block.findings = [(int(plain[ex]) + first_line, _SHORT, _short_message(k - int(first_text[ex]) + 1))
                              for k, ex in zip(short[:FINDINGS_PER_CODE].tolist(),
                                               where[:FINDINGS_PER_CODE].tolist(), strict=True)]
        if undecoded:
            taken, n_tool_short = self._tool_lines(block, raws, undecoded, first_line, special)
            ok[taken] = True
            n_short += n_tool_short
        block.rest = np.flatnonzero(~ok).tolist()
        if n_short > len(block.findings):
            block.not_listed[_SHORT] = n_short - len(block.findings)
        return block

    # --- the second tier: tool-calling conversations, line by line
    def _tool_lines(self, block: PlainBlock, raws: list[bytes], candidates: list[int], first_line: int,
                    special: bool) -> tuple[list[int], int]:
        """Add the candidate lines that are tool-calling conversations to `block`: (their indexes, the number
        of their short answers)."""
        taken: list[int] = []
        lines: list[int] = []
        messages: list[int] = []
        n_texts: list[int] = []
        roles: list[int] = []
        texts: list[str] = []
        assistant: list[bool] = []
        shorts: list[tuple[int, str, str]] = []
        for i in candidates:
            raw = raws[i]
            try:
                ex = _decode_tools(raw)
            except Exception:  # noqa: BLE001 - any refusal: the general path decides
                ex = None
            got = None if ex is None else self._tool_line(ex, special and (b"<" in raw or b"\\u003" in raw))
            if ex is None or got is None:
                continue
            taken.append(i)
            line_roles, line_texts, line_assistant, line_shorts = got
            lines.append(first_line + i)
            messages.append(len(ex.messages))
            n_texts.append(len(line_texts))
            roles += line_roles
            texts += line_texts
            assistant += line_assistant
            shorts += [(first_line + i, _SHORT, _short_message(k)) for k in line_shorts]
        if not lines:
            return taken, 0
        # Appended after the plain examples: worker._plain_finish puts every example back in line order.
        block.lines = np.concatenate((block.lines, np.asarray(lines, np.int64)))
        block.messages = np.concatenate((block.messages, np.asarray(messages, np.int64)))
        block.n_texts = np.concatenate((block.n_texts, np.asarray(n_texts, np.int64)))
        block.roles = np.concatenate((block.roles, np.asarray(roles, np.int8)))
        block.texts += texts
        block.assistant = np.concatenate((block.assistant, np.asarray(assistant, bool)))
        if shorts:  # each side holds its first ones in line order: so does their union (stable: message order)
            block.findings = sorted(block.findings + shorts[:FINDINGS_PER_CODE], key=_line)[:FINDINGS_PER_CODE]
        return taken, len(shorts)

    def _tool_line(self, ex: _ToolExample, special: bool) -> tuple[list[int], list[str], list[bool], list[int]] | None:
        """(its messages' role codes, texts, which are an assistant's, the messages with a short answer) of a
        tool-calling example with no finding but short answers, else None (the general path's)."""
        roles = [_ROLE_CODE[m.role] for m in ex.messages]
        texts: list[str] = []
        assistant: list[bool] = []
        shorts: list[int] = []
        call_ids: set[str] = set()
        prev: str | None = None
        prompt = answered = False
        for i, m in enumerate(ex.messages, 1):
            role, content = m.role, m.content
            if role == "assistant":
                if prev == "assistant" or m.tool_call_id is not _UNSET:
                    return None
                prev = role
                answered = True
                if m.tool_calls is _UNSET:
                    if not isinstance(content, str) or not content:
                        return None
                    if len(content) < SHORT_ANSWER_CHARS and one_word(content):
                        shorts.append(i)
                    texts.append(content)
                    assistant.append(True)
                    continue
                if not m.tool_calls or content == "":
                    return None
                if isinstance(content, str):
                    texts.append(content)
                    assistant.append(True)
                for call in m.tool_calls:
                    fn = call.function
                    if not call.id or not fn.name or _arguments_problem(fn.arguments) is not None:
                        return None
                    call_ids.add(call.id)
                    texts += (fn.name, fn.arguments)
                    assistant += (True, True)
            else:
                if not isinstance(content, str) or m.tool_calls is not _UNSET:
                    return None
                if role == "tool":
                    if m.tool_call_id not in call_ids:
                        return None
                elif m.tool_call_id is not _UNSET:
                    return None
                else:
                    prompt = True
                texts.append(content)
                assistant.append(False)
                prev = role
        if not (prompt and answered) or (special and any("<|" in t for t in texts)):
            return None
        if ex.tools is not _UNSET:  # counted, never searched for special tokens (as the Checker)
            tools = self._tools_text(ex.tools)
            if tools is None:
                return None
            texts.append(tools)
            assistant.append(False)
        return roles, texts, assistant, shorts

    def _tools_text(self, raw: msgspec.Raw) -> str | None:
        """The compact JSON the general path counts for a valid `tools` list (formats.Checker._tools), or None."""
        key = bytes(raw)
        if key in self._tools:
            return self._tools[key]
        text: str | None = None
        try:
            value = DECODE_JSON(key.decode("utf-8"))  # as the general path reads it
            if isinstance(value, list) and all(_tool_ok(t, "tools") for t in value):
                text = _COMPACT(value)
                text.encode("utf-8")  # a lone surrogate: the general path reports it while counting
        except (ValueError, RecursionError):  # UnicodeError is a ValueError
            text = None
        if len(key) <= _TOOLS_CACHED_BYTES and len(self._tools) < TOOLS_CACHE:
            self._tools[key] = text
        return text


_SHORT = "short_assistant_answer"


def _short_message(index: int) -> str:
    return f"messages[{index}]: answer is empty or one word"


def _line(finding: tuple[int, str, str]) -> int:
    return finding[0]


def plain_totals(block: PlainBlock, counts: np.ndarray, message_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per plain example: (its tokens, its assistant tokens), given the token count of each of its texts and
    PlainChecker.message_tokens()."""
    if not len(block.lines):
        empty = np.zeros(0, np.int64)
        return empty, empty
    per_text = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(block.n_texts) - block.n_texts
    text_tokens = np.add.reduceat(per_text, starts)
    assistant_tokens = np.add.reduceat(np.where(block.assistant, per_text, 0), starts)
    eager = np.add.reduceat(message_tokens[block.roles], np.cumsum(block.messages) - block.messages) + REPLY_PRIMING
    return eager + text_tokens, assistant_tokens


