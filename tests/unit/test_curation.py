"""Curation of production exchanges: what a data scientist would check in the next training file."""
from __future__ import annotations

import json

import pytest

from shared.run import privacy
from shared.validation.curation import CurationPolicy, Exchange, Overlap, curate, prompt_text, shingles


def ex(question: str, answer: str | None = "Open Settings, then Security, and choose Reset.", *,
       rating: float | None = None, ident: str = "x") -> Exchange:
    messages = [{"role": "user", "content": question}] + ([{"role": "assistant", "content": answer}] if answer else [])
    return Exchange(id=ident, messages=tuple(messages), rating=rating)


def none() -> Overlap:
    return Overlap([], 0.6)


PLANTED = [
    "Send the invoice to maria.lopez@fabrikam.com please",
    "My card 4111 1111 1111 1111 was charged twice",
    "Refund to DE89 3704 0044 0532 0130 00",
    "key sk-proj-Zx8fQ2mN7rT4vW1yB6cH9jK3lP5sD0gA expired?",
]


@pytest.mark.parametrize("question", PLANTED)
def test_personal_data_and_secrets_never_reach_the_kept_examples(question: str) -> None:
    dropped = curate([ex(question)], CurationPolicy(), held_out=none(), previous=none())
    assert dropped.kept == [] and dropped.dropped == {"personal data or secret": 1}
    masked = curate([ex(question)], CurationPolicy(privacy="mask"), held_out=none(), previous=none())
    [kept] = masked.kept
    assert masked.masked == 1 and privacy.scan_decoded(json.dumps(kept).encode()) == []
    assert question not in json.dumps(kept)


def test_malformed_low_rated_and_repeated_exchanges_are_counted_not_kept() -> None:
    exchanges = [ex("How do I reset my password?"), ex("How do I reset my password?"),
                 ex("Where is my invoice?", None), ex("Is the API down?", rating=1),
                 Exchange(id="bad", messages=({"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"})),
                 ex("Is the API down today?", rating=5)]
    out = curate(exchanges, CurationPolicy(min_rating=3), held_out=none(), previous=none())
    assert [prompt_text(k["messages"]) for k in out.kept] == ["how do i reset my password", "is the api down today"]
    assert out.dropped["duplicate"] == 1 and out.dropped["rated below min_rating"] == 1
    assert out.dropped["malformed: no answer"] == 1 and sum(out.dropped.values()) == 4


def test_held_out_questions_and_near_copies_are_leakage_but_other_questions_are_not() -> None:
    held = Overlap([prompt_text([{"role": "user", "content": "How do I reset the password of my Contoso account?"}])],
                   0.6)
    exchanges = [ex("How do I reset the password of my Contoso account?"),          # verbatim
                 ex("how do i reset the PASSWORD of my contoso account ??"),          # normalised: same
                 ex("Hi! How do I reset the password of my Contoso account?"),        # one word more: 6/7 shingles
                 ex("Can I export my invoices as CSV files from the billing page?")]  # another question
    out = curate(exchanges, CurationPolicy(), held_out=held, previous=none())
    assert out.dropped == {"overlaps held-out evaluation data": 3} and len(out.kept) == 1


def test_seen_carries_duplicates_across_calls() -> None:
    seen: set[int] = set()
    first = curate([ex("Where do I change my plan?")], CurationPolicy(), held_out=none(), previous=none(), seen=seen)
    again = curate([ex("Where do I change my plan?")], CurationPolicy(), held_out=none(), previous=none(), seen=seen)
    assert len(first.kept) == 1 and again.dropped == {"duplicate": 1}


def test_shingles_of_short_prompts_are_compared_exactly_only() -> None:
    assert shingles("reset password") == frozenset()
    assert Overlap(["reset password"], 0.1).hits("reset password")
    assert not Overlap(["reset password"], 0.1).hits("reset my password")
