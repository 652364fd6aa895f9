"""Structure rules and token counts for one parsed example (supervised chat, DPO, reinforcement).

Rules follow the Azure OpenAI fine-tuning how-tos (chat format, tool calling, vision, DPO, RFT) and
OpenAI's fine-tuning guide; see docs/validation.md for the sources. Token counts follow OpenAI's
cookbook (3 tokens per message, +1 per name, +3 to prime the reply); tool definitions and tool calls
are counted as their compact JSON, which the cookbook leaves out: an estimate that errs high.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

from shared.run.echo import echo
from shared.run.models import DPO, REINFORCEMENT, SUPERVISED, ModelFacts

from .tokens import SPECIAL_TOKENS, Counter

ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
# Reasoning models take instructions as `developer` messages ("with o1 models and newer, developer
# messages replace system messages": OpenAI API reference), and reinforcement trains o4-mini only.
RFT_ROLES = ROLES | {"developer"}
DETAILS = frozenset({"low", "high", "auto"})
IMAGE_DATA_PREFIXES = ("data:image/jpeg;base64,", "data:image/jpg;base64,", "data:image/png;base64,",
                       "data:image/webp;base64,")
MAX_IMAGES = 64  # Azure vision fine-tuning: max images per example
# Top-level keys that are part of the chat format; anything else on a messages line is RFT data.
CHAT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
SHORT_ANSWER_CHARS = 48  # an assistant text this short may be a single word (short_assistant_answer)


def one_word(text: str) -> bool:
    """Whether `text` is empty or one word (len(text.split()) <= 1). A class label is alphanumeric, and no
    alphanumeric character is whitespace: isalnum() answers most short answers without building a list."""
    return text.isalnum() or len(text.split()) <= 1


# Deferred counting: a text counted later (in a batch) adds to one of five slots of its example:
# the prompt side (input, tools, non-assistant turns), then for each output (supervised and RFT
# have one) its non-assistant and its assistant text. The totals are then
#   base = eager base + slot 0; out_k = eager out_k + its two slots
#   tokens = base + out_0 + out_1; context = base + max(out_0, out_1); assistant = eager + slots 2 and 4
SLOTS = 5
_BASE, _OUT0, _OUT0_ASSISTANT, _OUT1, _OUT1_ASSISTANT = range(SLOTS)
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # = json.dumps(...)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


# Strict JSON (NaN, Infinity refused), one decoder for all lines: json.loads with an option builds a new
# JSONDecoder per call. The general path (worker.prepare_block) and the fast path's `tools` lists read with it.
DECODE_JSON = json.JSONDecoder(parse_constant=_reject_constant).decode


@dataclass(slots=True)
class Example:
    method: str | None = None  # detected format; None when the line is not a usable object
    tokens: int = 0  # everything billed (DPO: input and both outputs), counted so far
    context_tokens: int = 0  # the longest sequence trained on, checked against the model's limit
    assistant_tokens: int = 0
    messages: int = 0
    base: int = 0  # eager parts: tokens = base + out0 + out1, context = base + max(out0, out1)
    out0: int = 0
    out1: int = 0
    slot: int = 0  # first of this example's SLOTS deferred-count slots


class Checker:
    """Checks parsed examples; findings go to `report(code, message)` for the current line."""

    def __init__(self, facts: ModelFacts | None, counter: Counter | None,
                 report: Callable[[str, str], None], *, defer_min_chars: int) -> None:
        self.facts = facts
        self.counter = counter
        self.report = report
        # Deferred counting (set `defer` per example; only for text without lone surrogates):
        # texts of at least `defer_min_chars` characters (Tuning) are collected with their slot instead.
        self.defer = False
        self.defer_min_chars = defer_min_chars
        # False when the example's raw line holds neither "<|" nor a \u00XX escape: no special token.
        self.special = True
        self.texts: list[str] = []
        self.slots: list[int] = []
        self.n_examples = 0  # checked so far: example k has slots SLOTS * k ... SLOTS * k + SLOTS - 1
        self._first = 0  # first slot of the current example
        self._slot = 0  # where a deferred text goes now
        self._role_tokens: dict[str, int] = {}
        self._tools_cache: dict[str, int] = {}  # role -> its message's fixed tokens (3 + the role's)

    # --- entry point
    def check(self, obj: Any, method: str | None) -> Example:
        self._first = self._slot = self.n_examples * SLOTS
        self.n_examples += 1
        ex = self._check(obj, method)
        ex.slot = self._first
        return ex

    def _check(self, obj: Any, method: str | None) -> Example:
        if not isinstance(obj, dict):
            self.report("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
            return Example()
        if "input" in obj or "preferred_output" in obj or "non_preferred_output" in obj:
            return self._dpo(obj)
        if "messages" in obj:
            # A lone "messages" key cannot be reinforcement data (it needs a field for the grader): no call.
            if method == REINFORCEMENT or (method is None and len(obj) > 1 and _looks_rft(obj)):
                return self._rft(obj)
            return self._supervised(obj)
        if "prompt" in obj or "completion" in obj:
            self.report("legacy_format", "prompt/completion lines are not accepted by chat models")
        else:
            keys = ", ".join(echo(k, 40) for k in sorted(obj)[:5]) or "none"
            self.report("unknown_format", f"no messages or input field (keys: {keys})")
        return Example()

    # --- formats
    def _supervised(self, obj: dict[str, Any]) -> Example:
        ex = Example(method=SUPERVISED)
        msgs = obj.get("messages")
        if not _nonempty_list(msgs):
            self.report("missing_messages", "messages must be a non-empty list")
            return ex
        if len(obj) > 1:   # per-example overhead: a line of messages alone has no tools to check
            tools = self._tools(obj)
        else:
            tools, self._slot = 0, self._first + _BASE
        tokens, assistant, state = self._messages(msgs, "messages", outputs=False,
                                                  slots=(_BASE, _OUT0_ASSISTANT))
        if not state.assistant:
            self.report("no_assistant_message", "no assistant message to learn from")
        if not state.prompt:
            self.report("no_prompt_message", "no system or user message")
        ex.tokens = ex.context_tokens = ex.base = tokens + tools + REPLY_PRIMING
        ex.assistant_tokens, ex.messages = assistant, len(msgs)
        return ex

    def _dpo(self, obj: dict[str, Any]) -> Example:
        ex = Example(method=DPO)
        inp = obj.get("input")
        if not isinstance(inp, dict) or not _nonempty_list(inp.get("messages")):
            self.report("invalid_dpo_input", "input must be an object with a non-empty messages list")
            return ex
        tools = self._tools(inp)
        in_tokens, _, state = self._messages(inp["messages"], "input.messages", outputs=False, text_only=True,
                                             slots=(_BASE, _BASE))
        if not state.prompt:
            self.report("no_prompt_message", "input has no system or user message")
        outs = []
        for key, slots in (("preferred_output", (_OUT0, _OUT0_ASSISTANT)),
                           ("non_preferred_output", (_OUT1, _OUT1_ASSISTANT))):
            out = obj.get(key)
            if not _nonempty_list(out):
                self.report("invalid_dpo_output", f"{key} must be a non-empty list of assistant messages")
                outs.append((0, 0))
                continue
            tokens, assistant, ostate = self._messages(out, key, outputs=True, text_only=True, slots=slots)
            if not ostate.assistant:
                self.report("invalid_dpo_output", f"{key} has no assistant message")
            outs.append((tokens, assistant))
        base = ex.base = in_tokens + tools + REPLY_PRIMING
        ex.out0, ex.out1 = outs[0][0], outs[1][0]
        ex.tokens = base + outs[0][0] + outs[1][0]
        ex.context_tokens = base + max(outs[0][0], outs[1][0])
        ex.assistant_tokens = outs[0][1] + outs[1][1]
        ex.messages = len(inp["messages"]) + sum(len(out) for k in ("preferred_output", "non_preferred_output")
                                                 if isinstance(out := obj.get(k), list))
        return ex

    def _rft(self, obj: dict[str, Any]) -> Example:
        ex = Example(method=REINFORCEMENT)
        msgs = obj.get("messages")
        if not _nonempty_list(msgs):
            self.report("missing_messages", "messages must be a non-empty list")
            return ex
        tools = self._tools(obj)
        tokens, _, state = self._messages(msgs, "messages", outputs=False, slots=(_BASE, _BASE), roles=RFT_ROLES)
        last = msgs[-1]
        if not (isinstance(last, dict) and last.get("role") == "user"):
            self.report("rft_last_message_not_user", "the last message must be the user's")
        if state.system:
            self.report("rft_system_message", "system messages are not supported for reinforcement")
        if CHAT_KEYS.issuperset(obj):
            self.report("rft_missing_reference", "no field besides messages for the grader to use")
        ex.tokens = ex.context_tokens = ex.base = tokens + tools + REPLY_PRIMING
        ex.messages = len(msgs)
        return ex

    # --- parts
    def _tools(self, obj: dict[str, Any]) -> int:
        self._slot = self._first + _BASE
        tokens = 0
        for key in ("tools", "functions"):
            if key not in obj:
                continue
            tools = obj[key]
            ok = isinstance(tools, list) and all(_tool_ok(t, key) for t in tools)
            if not ok:
                self.report("invalid_tools", f"{key} must be a list of function definitions")
            else:
                tokens += self._count_tools(_COMPACT(tools))
        if "parallel_tool_calls" in obj and not isinstance(obj["parallel_tool_calls"], bool):
            self.report("invalid_tools", "parallel_tool_calls must be true or false")
        return tokens

    def _count_tools(self, text: str) -> int:
        # Datasets repeat the same tool definitions on every line: count each serialization once.
        # Only for lines parsed by orjson (no lone surrogate: nothing to report while counting).
        if not self.defer or self.counter is None or len(text) > 65536:
            return self._count(text)
        n = self._tools_cache.get(text)
        if n is None:
            n = self.counter.count(text)
            if len(self._tools_cache) < 256:
                self._tools_cache[text] = n
        return n

    def _messages(self, msgs: list[Any], where: str, *, outputs: bool, text_only: bool = False,
                  slots: tuple[int, int] = (_BASE, _OUT0_ASSISTANT),
                  roles: frozenset[str] = ROLES) -> tuple[int, int, _State]:
        # The hot loop (about a million messages on the benchmark): a message's location string is
        # built only when a finding is reported, and plain string content is checked inline. The
        # order of the checks, and so of the findings, is that of the general methods.
        state = _State()
        other_slot, assistant_slot = self._first + slots[0], self._first + slots[1]
        tokens = assistant_tokens = 0
        prev_role = None
        report = self.report
        counter = self.counter
        special = self.special
        defer = self.defer and counter is not None
        min_chars = self.defer_min_chars
        texts_append, slots_append = self.texts.append, self.slots.append
        role_tokens = self._role_tokens
        for i, msg in enumerate(msgs, 1):
            if not isinstance(msg, dict):
                report("invalid_message", f"{where}[{i}] is not an object")
                continue
            role = msg.get("role")
            if not isinstance(role, str) or role not in roles:   # a list or object here must not crash us
                report("invalid_role", f"{where}[{i}]: role {echo(role, 20)!r} is not one of "
                                       f"{', '.join(sorted(roles))}")
                continue
            assistant = role == "assistant"
            if outputs and not (assistant or role == "tool"):
                report("invalid_dpo_output", f"{where}[{i}]: outputs hold assistant or tool messages only")
            if assistant and prev_role == "assistant":
                report("consecutive_assistant", f"{where}[{i}]: second assistant message in a row "
                                                "without a tool reply")
            prev_role = role
            n = role_tokens.get(role)
            if n is None:  # one of ROLES: plain ASCII, counted at once (never deferred)
                n = role_tokens[role] = TOKENS_PER_MESSAGE + (counter.count(role) if counter else 0)
            slot = assistant_slot if assistant else other_slot
            content = msg.get("content")
            if type(content) is str:  # _content and _text, inline
                if (assistant and len(content) < SHORT_ANSWER_CHARS and "tool_calls" not in msg
                        and one_word(content) and msg.get("weight", 1) != 0):
                    report("short_assistant_answer", f"{where}[{i}]: answer is empty or one word")
                if special and "<|" in content:
                    self._special(content, f"{where}[{i}]")
                if defer and len(content) >= min_chars:
                    texts_append(content)
                    slots_append(slot)
                    text_tokens = 0
                else:
                    self._slot = slot
                    text_tokens = self._count(content)
            else:
                self._slot = slot
                text_tokens = self._content(msg, role, f"{where}[{i}]", state, text_only)
            n += text_tokens
            if "name" in msg:
                name = msg["name"]
                if not isinstance(name, str):
                    report("invalid_message", f"{where}[{i}]: name must be a string")
                elif defer and len(name) >= min_chars:
                    texts_append(name)
                    slots_append(other_slot)
                    n += TOKENS_PER_NAME
                else:
                    self._slot = other_slot
                    n += self._count(name) + TOKENS_PER_NAME
            if "weight" in msg and (not assistant or type(msg["weight"]) is not int
                                    or msg["weight"] not in (0, 1)):
                report("invalid_weight", f"{where}[{i}]: weight must be 0 or 1, on assistant messages only")
            if assistant:
                if "tool_calls" in msg or "function_call" in msg:
                    self._slot = assistant_slot
                    calls = self._calls(msg, f"{where}[{i}]", state)
                    n += calls
                else:
                    calls = 0
                state.assistant = True
                if content in (None, "") and not calls and "tool_calls" not in msg \
                        and "function_call" not in msg:
                    report("empty_assistant_message", f"{where}[{i}]: no content and no tool_calls")
                assistant_tokens += text_tokens + calls
            elif role == "user" or role == "system":
                state.prompt = True
                if role == "system":
                    state.system = True
            elif role == "tool":
                call_id = msg.get("tool_call_id")
                if not isinstance(call_id, str) or call_id not in state.call_ids:
                    report("orphan_tool_message", f"{where}[{i}]: tool_call_id {echo(call_id, 40)!r} "
                                                  "answers no earlier tool call")
            elif role == "function" and not isinstance(msg.get("name"), str):
                report("invalid_message", f"{where}[{i}]: a function message needs its name")
            tokens += n
        self._slot = other_slot
        if state.images > MAX_IMAGES:
            report("too_many_images", f"{state.images} images (at most {MAX_IMAGES} per example)")
        return tokens, assistant_tokens, state

    def _content(self, msg: dict[str, Any], role: str, here: str, state: _State, text_only: bool) -> int:
        content = msg.get("content")
        if content is None:
            if role != "assistant":  # only an assistant turn may carry tool calls instead of text
                self.report("invalid_content", f"{here}: {role} message without content")
            return 0
        if isinstance(content, str):
            if (role == "assistant" and len(content) < SHORT_ANSWER_CHARS and "tool_calls" not in msg
                    and one_word(content) and msg.get("weight", 1) != 0):
                self.report("short_assistant_answer", f"{here}: answer is empty or one word")
            return self._text(content, here)
        if not isinstance(content, list):
            self.report("invalid_content", f"{here}: content must be a string, null or a list of parts")
            return 0
        tokens = 0
        for j, part in enumerate(content, 1):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                tokens += self._text(part["text"], here)
            elif kind == "image_url":
                state.images += 1
                self._image(part, role, f"{here}.content[{j}]", text_only)
            else:
                self.report("invalid_content", f"{here}.content[{j}]: parts are text or image_url")
        return tokens

    def _image(self, part: dict[str, Any], role: str, here: str, text_only: bool) -> None:
        if role == "assistant":
            self.report("image_in_assistant", f"{here}: images are not allowed in assistant messages")
        elif text_only:
            self.report("invalid_content", f"{here}: DPO supports text only")
        elif self.facts is not None and not self.facts.vision:
            self.report("images_not_supported", f"{here}: {self.facts.name} takes no images")
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://") + IMAGE_DATA_PREFIXES):
            self.report("invalid_image", f"{here}: url must be http(s) or a JPEG/PNG/WEBP data URI")
        elif isinstance(image, dict) and "detail" in image and image["detail"] not in DETAILS:
            self.report("invalid_image", f"{here}: detail must be low, high or auto")

    def _calls(self, msg: dict[str, Any], here: str, state: _State) -> int:
        tokens = 0
        if "tool_calls" in msg:
            calls = msg["tool_calls"]
            if not _nonempty_list(calls):
                self.report("invalid_tool_calls", f"{here}: tool_calls must be a non-empty list")
            else:
                for k, call in enumerate(calls, 1):
                    problem = _call_problem(call)
                    if problem:
                        self.report("invalid_tool_calls", f"{here}.tool_calls[{k}]: {problem}")
                    else:
                        state.call_ids.add(call["id"])
                        tokens += self._text(call["function"]["name"], here)
                        tokens += self._text(call["function"]["arguments"], here)
        if "function_call" in msg:
            call = msg["function_call"]
            problem = _function_problem(call)
            if problem:
                self.report("invalid_tool_calls", f"{here}.function_call: {problem}")
            else:
                tokens += self._text(call["name"], here) + self._text(call["arguments"], here)
        return tokens

    def _text(self, text: str, here: str) -> int:
        if self.special and "<|" in text:
            self._special(text, here)
        return self._count(text)

    def _special(self, text: str, here: str) -> None:
        found = sorted(t for t in SPECIAL_TOKENS if t in text)
        if found:
            self.report("special_token", f"{here}: contains {', '.join(found)}")

    def _count(self, text: str) -> int:
        if self.counter is None:
            return 0
        if self.defer and len(text) >= self.defer_min_chars:
            self.texts.append(text)
            self.slots.append(self._slot)
            return 0
        before = self.counter.replaced
        n = self.counter.count(text)
        if self.counter.replaced != before:
            self.report("lone_surrogate", "a string holds an unpaired UTF-16 surrogate escape")
        return n


class _State:
    __slots__ = ("assistant", "call_ids", "images", "prompt", "system")

    def __init__(self) -> None:
        self.assistant = self.prompt = self.system = False
        self.images = 0
        self.call_ids: set[Any] = set()


def _nonempty_list(value: Any) -> TypeGuard[list[Any]]:
    return isinstance(value, list) and len(value) > 0


def _looks_rft(obj: dict[str, Any]) -> bool:
    msgs = obj.get("messages")
    if not _nonempty_list(msgs) or not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "user":
        return False
    return not CHAT_KEYS.issuperset(obj)


def _tool_ok(tool: Any, key: str) -> bool:
    if key == "functions":
        return isinstance(tool, dict) and isinstance(tool.get("name"), str) and bool(tool["name"])
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return False
    fn = tool.get("function")
    return (isinstance(fn, dict) and isinstance(fn.get("name"), str) and bool(fn["name"])
            and isinstance(fn.get("parameters", {}), dict))


def _arguments_problem(args: Any) -> str | None:
    if not isinstance(args, str):
        return "arguments must be a JSON string, not a JSON value"
    try:
        json.loads(args)
    except ValueError:
        return "arguments is not valid JSON"
    return None


def _call_problem(call: Any) -> str | None:
    if not isinstance(call, dict):
        return "not an object"
    if not isinstance(call.get("id"), str) or not call["id"]:
        return "id must be a non-empty string"
    if call.get("type") != "function":
        return "type must be 'function'"
    return _function_problem(call.get("function"))


def _function_problem(fn: Any) -> str | None:
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        return "function.name must be a non-empty string"
    return _arguments_problem(fn.get("arguments"))
