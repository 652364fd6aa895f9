from __future__ import annotations

import random

import pytest

from shared.validation import tokens
from shared.validation.tokens import Counter, VocabularyError, fast_counter, get_encoding

AWKWARD = [
    "", " ", "  \n\n  x", "\r\n" * 40, "a\u2028b\u2029c\x85d", "don't I'LL we've They'D",
    "123456789012345 3.14159 1,000,000", "ü" * 500, "🙂" * 200 + "👍🏽", "東京都 注文 ありがとうございます",
    "مرحبا بالعالم", "Здравствуйте", "é́ combining", " " * 3000 + "x", "\t\tindented\n    code()",
    "<|endoftext|> is text here", "x" * 20000, "https://contoso.com/a/b?q=1&r=2#frag", "\u00a0nbsp\u200bzwsp",
]


def _random_text(rng: random.Random) -> str:
    alphabet = "abcXYZ019 \n\r\t'’.,!?-_/éü東京🙂\u2028\u0301"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_counts_equal_tiktoken_encode(name: str) -> None:
    enc = get_encoding(name)
    reference = Counter(name, fast=False)
    counter = Counter(name)
    rng = random.Random(1)
    for text in AWKWARD + [_random_text(rng) for _ in range(2000)]:
        expected = len(enc.encode_ordinary(text))
        assert reference.count(text) == expected, text
        assert counter.count(text) == expected, (counter.backend, text)


@pytest.mark.parametrize("fast", [True, False])
def test_texts_given_as_their_utf8_bytes_count_the_same(fast: bool) -> None:
    rng = random.Random(2)
    texts = AWKWARD + [_random_text(rng) for _ in range(500)]
    counter = Counter("o200k_base", fast=fast)
    assert counter.count_array([t.encode() for t in texts]).tolist() == counter.count_array(texts).tolist()


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_role_counts_known_without_a_tokenizer_are_tiktokens(name: str) -> None:
    from shared.validation.formats import RFT_ROLES

    assert set(tokens.ROLE_TOKENS[name]) == RFT_ROLES  # every role a message may have
    enc = get_encoding(name)
    assert tokens.ROLE_TOKENS[name] == {role: len(enc.encode_ordinary(role)) for role in RFT_ROLES}


def test_known_ids_prove_the_official_vocabulary() -> None:
    assert get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert get_encoding("o200k_base").encode("hello world") == [24912, 2375]


def test_lone_surrogates_are_counted_and_flagged() -> None:
    for fast in (True, False):
        counter = Counter("o200k_base", fast=fast)
        assert counter.count("a\ud800b") == counter.count("a\ufffdb")
        assert counter.replaced == 1


def test_vocabulary_hash_is_checked(monkeypatch) -> None:
    monkeypatch.setitem(tokens._SHA256, "o200k_base", "0" * 64)
    with pytest.raises(VocabularyError, match="sha256"):
        tokens._official_file("o200k_base")


def test_tokenizer_can_be_forced_to_tiktoken(monkeypatch) -> None:
    fast_counter.cache_clear()
    monkeypatch.setenv("FTOPS_TOKENIZER", "tiktoken")
    try:
        assert Counter("o200k_base").backend == "tiktoken"
    finally:
        fast_counter.cache_clear()


def test_nothing_is_downloaded(monkeypatch) -> None:
    import tiktoken.load

    def refuse(*_a, **_k):
        raise AssertionError("tried to download a vocabulary")

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    get_encoding.cache_clear()
    try:
        assert get_encoding("cl100k_base").encode("ok") == [564]
    finally:
        get_encoding.cache_clear()


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_the_pinned_quicktok_vocabularies_are_proven_rank_by_rank(name: str) -> None:
    # A process whose quicktok reads a pinned file skips the proof: this test is that proof, for the installed
    # quicktok (requirements.txt pins it). Upgrading quicktok means proving and pinning its files here.
    import quicktok

    fast = quicktok.get_encoding(name)
    tokens.prove_ranks(fast, name)  # raises on any rank that differs
    assert (quicktok.__version__, name) in tokens.PROVEN_VOCABULARIES
    assert tokens.is_proven(quicktok, name, tokens.PROVEN_VOCABULARIES)
    # another version, or other bytes in the file, are not taken as proven: the process proves them itself
    assert not tokens.is_proven(quicktok, name, {})
    file, _ = tokens.PROVEN_VOCABULARIES[quicktok.__version__, name]
    assert not tokens.is_proven(quicktok, name, {(quicktok.__version__, name): (file, "0" * 64)})


def test_a_differing_rank_is_caught_by_the_proof() -> None:
    class Shifted:  # a vocabulary whose rank 1000 holds other bytes
        def __init__(self, real) -> None:
            self.real = real

        def decode_single_token_bytes(self, rank: int) -> bytes:
            return b"?" if rank == 1000 else self.real.decode_single_token_bytes(rank)

    import quicktok

    with pytest.raises(VocabularyError, match="rank 1000"):
        tokens.prove_ranks(Shifted(quicktok.get_encoding("o200k_base")), "o200k_base")


@pytest.mark.parametrize("fast", [True, False])
def test_count_array_gives_count_many_counts(fast: bool) -> None:
    counter = Counter("o200k_base", fast=fast)
    rng = random.Random(2)
    texts = [t for t in AWKWARD if "\ud800" not in t] + [_random_text(rng) for _ in range(200)]
    assert counter.count_array(texts).tolist() == counter.count_many(texts)
    assert counter.count_array([]).tolist() == []


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_the_pinned_special_tokens_are_tiktokens(name: str) -> None:
    # quicktok's special tokens are checked against the pinned set: it must be tiktoken_ext.openai_public's own.
    assert tokens.OFFICIAL_SPECIAL_TOKENS[name] == get_encoding(name).special_tokens_set
