"""What a file is when it is not JSON Lines, from its first bytes: named, with the fix.

A CSV export or a gzip archive otherwise surfaces as `invalid_json … column 1` on every line (or as
UTF-16, for gzip's NUL bytes), which tells the user nothing about what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

# Magic numbers of the archive and binary formats people export datasets as (file signatures).
_MAGIC = (
    (b"\x1f\x8b", "a gzip-compressed file", "decompress it (gunzip) and drop the .jsonl inside"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)", "extract the .jsonl from it and drop that"),
    (b"BZh", "a bzip2-compressed file", "decompress it (bunzip2) and drop the .jsonl inside"),
    (b"\xfd7zXZ\x00", "an xz-compressed file", "decompress it (unxz) and drop the .jsonl inside"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file", "decompress it (unzstd) and drop the .jsonl inside"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "extract the .jsonl from it and drop that"),
    (b"PAR1", "a Parquet file", "export it as JSON Lines: one JSON object per line"),
    (b"%PDF", "a PDF document", "drop the dataset itself: one JSON object per line, UTF-8"),
    (b"SQLite format 3\x00", "an SQLite database", "export the examples as JSON Lines: one JSON object per line"),
)
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_TEXT_CONTROLS = {9, 10, 12, 13}


@dataclass(frozen=True)
class Kind:
    name: str   # "a CSV file (comma-separated values)"
    fix: str    # what to do about it

    def describe(self) -> str:
        return f"{self.name}, not JSON Lines: {self.fix}"


def sniff(head: bytes) -> Kind | None:
    """The kind of a file that is clearly not JSONL, from its first bytes; None if it may be JSONL
    (a JSONL file with bad lines is the line checks' business, not this one's)."""
    for magic, name, fix in _MAGIC:
        if head.startswith(magic):
            return Kind(name, fix)
    sample = head[:4096]
    if _looks_utf16(sample):
        return None  # text in another encoding: the encoding check names it
    if b"\x00" in sample or sum(b < 32 and b not in _TEXT_CONTROLS for b in sample) > len(sample) // 10:
        return Kind("a binary file", "drop the dataset as UTF-8 text, one JSON object per line")
    return _delimited(sample)


def _looks_utf16(sample: bytes) -> bool:
    if sample.startswith(_UTF16_BOMS):
        return True
    pairs = sample[:64]
    # ASCII in UTF-16/32: every other (or every fourth) byte is NUL
    return len(pairs) >= 4 and (pairs[1::2].count(0) >= len(pairs[1::2]) * 0.8
                                or pairs[0::2].count(0) >= len(pairs[0::2]) * 0.8)


def _delimited(sample: bytes) -> Kind | None:
    text = sample.decode("utf-8", "replace").lstrip("\ufeff")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    complete = lines[:-1] if len(lines) > 1 and not text.endswith(("\n", "\r")) else lines
    rows = complete[:2] or lines[:1]
    if not rows or any(r.startswith(("{", "[")) for r in rows):
        return None
    for sep, name, what in (("\t", "a TSV file (tab-separated values)", "tab"),
                            (",", "a CSV file (comma-separated values)", "comma"),
                            (";", "a CSV file (semicolon-separated values)", "semicolon")):
        counts = {r.count(sep) for r in rows}
        if len(counts) == 1 and counts != {0}:
            return Kind(name, f"convert each row to one JSON object per line (e.g. {{\"messages\": [...]}}) "
                              f"and save it as .jsonl; {what}-separated columns are not read")
    return None
