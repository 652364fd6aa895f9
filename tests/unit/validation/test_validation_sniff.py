"""Files that are not JSON Lines are named for what they are, with the fix (not `invalid_json` per line)."""
from __future__ import annotations

import gzip
import io
import zipfile

import pytest
from vhelpers import chat, check, codes, jsonl, padded

from shared.validation.sniff import sniff


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("train.jsonl", jsonl(padded([])))
    return buf.getvalue()


@pytest.mark.parametrize("data, name, fix", [
    (gzip.compress(jsonl(padded([]))), "gzip", "gunzip"),
    (_zip(), "ZIP", "extract"),
    (b"prompt,completion\nhi,hello\nbye,see you\n", "CSV", "one JSON object per line"),
    (b"prompt\tcompletion\nhi\thello\n", "TSV", "one JSON object per line"),
    (bytes(range(256)) * 4, "binary", "UTF-8 text"),
], ids=["gzip", "zip", "csv", "tsv", "binary"])   # named: gzip and ZIP bytes hold the time (parallel workers collect alike)
def test_the_kind_and_the_fix_are_named(data: bytes, name: str, fix: str) -> None:
    report = check(data)
    [finding] = report.errors
    assert finding.code == "not_jsonl" and name in finding.message and fix in finding.message


@pytest.mark.parametrize("data", [
    jsonl(padded([])),
    "\ufeff".encode() + jsonl(padded([])),
    b"\n\n" + jsonl(padded([])),
    jsonl(padded(["{oops, broken", chat()])),       # a bad line is the line checks' business
])
def test_jsonl_even_with_bad_lines_is_not_taken_for_another_format(data: bytes) -> None:
    assert sniff(data) is None
    assert "not_jsonl" not in codes(check(data))


def test_utf16_is_still_reported_as_an_encoding_problem() -> None:
    report = check(jsonl(padded([])).decode().encode("utf-16"))
    assert codes(report) == ["utf16_encoding"]
