from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.run.models import UnknownModelError, model_facts
from shared.validation import CODES

DOC = Path(__file__).resolve().parents[3] / "docs" / "validation.md"
SRC = Path(__file__).resolve().parents[3] / "shared" / "validation"


def test_every_code_is_documented_with_meaning_and_action() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z0-9_]+)` \|.*\|$", text, re.MULTILINE)}
    assert set(CODES) <= set(rows), sorted(set(CODES) - set(rows))
    for code, row in rows.items():
        assert row.count("|") >= 5, code  # code | severity | meaning | what to do


def test_every_code_the_source_emits_is_registered() -> None:
    emitted = set()
    for path in SRC.glob("*.py"):
        src = path.read_text(encoding="utf-8")
        emitted |= set(re.findall(r'(?:report|add)\(\s*(?:[\w.]+,\s*)?"([a-z0-9_]+)"', src))
        emitted |= set(re.findall(r'yield [\w.]+, "([a-z0-9_]+)"', src))
        emitted |= set(re.findall(r'return "(pii_[a-z_]+)"', src))
    assert emitted, "the scan found nothing: update the patterns"
    assert emitted <= set(CODES), sorted(emitted - set(CODES))


@pytest.mark.parametrize("name, base", [
    ("gpt-4.1-mini", "gpt-4.1-mini"), ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
    ("gpt-4.1-mini-2025-04-14.ft-abc123", "gpt-4.1-mini"), ("gpt-35-turbo-0125", "gpt-35-turbo"),
    ("gpt-4o-2024-08-06.ft-x:ckpt-step-10", "gpt-4o"), ("ft:gpt-4o-mini-2024-07-18:org::abc", "gpt-4o-mini"),
    ("o4-mini-2025-04-16", "o4-mini"),
])
def test_model_names_resolve(name: str, base: str) -> None:
    assert model_facts(name).name == base


def test_model_facts_table() -> None:
    assert model_facts("gpt-35-turbo").encoding == "cl100k_base"
    assert model_facts("gpt-4.1-nano").max_tokens_per_example == 32_768
    assert model_facts("gpt-4.1").developer_tier and not model_facts("gpt-4o").developer_tier
    assert model_facts("gpt-4.1-mini").supports("dpo") and not model_facts("gpt-4o-mini").supports("dpo")
    assert model_facts("o4-mini").methods == {"reinforcement"}
    with pytest.raises(UnknownModelError, match="gpt-9"):
        model_facts("gpt-9-2030-01-01")
