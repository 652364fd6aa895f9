from __future__ import annotations

import json
import random
import tracemalloc
from itertools import accumulate

from vhelpers import at, chat, check, codes, jsonl, padded

from shared.validation import content_hash, iter_examples
from shared.validation.lines import EMPTY_PER_LINE, split_blocks


def _lines_of(chunks: list[bytes], cap: int, block: int) -> list[tuple[int, bytes | None]]:
    got: list[tuple[int, bytes | None]] = []
    for blk in split_blocks(chunks, max_line_bytes=cap, block_bytes=block):
        if blk.too_long is not None:
            got.append((blk.too_long, None))
        else:
            got.extend((blk.first_line + i, line) for i, line in enumerate(blk.data.split(b"\n")))
    return got


def test_splitter_matches_a_plain_split_for_any_chunking() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        lines = [bytes(rng.choice(b"ab\r") for _ in range(rng.choice([0, 1, 2, 5, 30])))
                 for _ in range(rng.randint(0, 12))]
        data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
        cap, block = rng.choice([3, 10, 1000]), rng.choice([1, 5, 100])
        ref = data.split(b"\n")
        ref = [] if not data else ref[:-1] if data.endswith(b"\n") else ref
        expected = [(i + 1, line if len(line) <= cap else None) for i, line in enumerate(ref)]
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 5)))) if len(data) > 1 else []
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        assert _lines_of(chunks, cap, block) == expected, (data, chunks, cap, block)


def test_unicode_line_separators_inside_strings_are_not_line_breaks() -> None:
    tricky = chat(user="first\u2028second\u2029third\x85fourth\x0bfifth\x0cend")
    data = ("\n".join([json.dumps(tricky, ensure_ascii=False)] + [json.dumps(o) for o in padded([], 10)])).encode()
    report = check(data)
    assert report.valid, report.errors
    assert report.examples == 11


def test_crlf_bom_and_no_final_newline_are_accepted() -> None:
    body = jsonl(padded([]), end="").replace(b"\n", b"\r\n")
    report = check(b"\xef\xbb\xbf" + body)
    assert report.valid, report.errors
    assert report.examples == 10
    assert codes(report) == []


def test_bom_split_across_chunks_and_lines_split_mid_utf8_sequence() -> None:
    data = b"\xef\xbb\xbf" + jsonl(padded([chat(user="caf\u00e9 \u6771\u4eac \U0001f642")]), end="")
    chunks = [data[i:i + 1] for i in range(len(data))]  # one byte at a time
    report = check(chunks)
    assert report.valid, report.errors


def test_blank_lines_are_reported_with_their_line_numbers() -> None:
    lines = padded([])
    data = jsonl(lines[:3]) + b"\n   \n" + jsonl(lines[3:])
    report = check(data)
    assert at(report, "blank_line") == [4, 5]
    assert report.examples == 10
    assert report.valid


def test_a_200_mb_line_is_rejected_without_holding_it(monkeypatch) -> None:
    piece = b"x" * (4 << 20)

    def chunks():
        yield jsonl(padded([]))
        yield b'{"messages": "'
        for _ in range(50):  # 200 MiB, never materialized as one object
            yield piece
        yield b'"}\n'
        yield jsonl([chat()])

    tracemalloc.start()
    report = check(chunks())  # type: ignore[arg-type]  (a generator: streamed)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert at(report, "line_too_long") == [11]
    assert report.examples == 12
    assert peak < 96 << 20, f"peak {peak >> 20} MiB"


def test_iter_examples_yields_line_numbers_and_raw_bytes() -> None:
    data = b'{"a": 1}\r\n\n{"b": 2}\n{"c": 3}'
    got = list(iter_examples([data[:5], data[5:]]))
    assert got == [(1, b'{"a": 1}'), (3, b'{"b": 2}'), (4, b'{"c": 3}')]


def test_content_hash_ignores_line_endings_and_bom_only() -> None:
    assert content_hash(b'{"a": 1}\r') == content_hash(b'\xef\xbb\xbf{"a": 1}') == content_hash(b' {"a": 1} ')
    assert content_hash(b'{"a": 1}') != content_hash(b'{"a": 2}')





def _weight(block: bytes) -> int:
    """A block's weight in split_blocks' units: a line weighs EMPTY_PER_LINE, an empty one 1."""
    return sum(EMPTY_PER_LINE if line else 1 for line in block.split(b"\n"))


def _first_lines(blocks: list) -> list[int]:
    return list(accumulate([1] + [b.data.count(b"\n") + 1 for b in blocks[:-1]]))


def test_blocks_of_tiny_lines_stop_at_the_line_cap() -> None:
    data = b"\n".join(b"{}" if i % 7 else b"" for i in range(1, 1000)) + b"\n"
    chunks = [data[i:i + 333] for i in range(0, len(data), 333)]
    blocks = list(split_blocks(chunks, max_line_bytes=1 << 20, block_lines=64))
    assert all(_weight(b.data) <= 64 * EMPTY_PER_LINE for b in blocks)
    assert b"\n".join(b.data for b in blocks) == data[:-1]
    assert [b.first_line for b in blocks] == _first_lines(blocks)


def test_the_line_cap_cuts_blocks_at_the_exact_line_in_large_chunks() -> None:
    # Large chunks of short lines: the cut is found over numpy windows (lines._take_lines), not line by line.
    rng = random.Random(1)
    for _ in range(30):
        data = b"\n".join(b"x" * rng.choice([0, 0, 1, 5, 40, 300]) for _ in range(rng.randint(1000, 30_000))) + b"\n"
        size, cap = rng.choice([1 << 16, 1 << 20, len(data)]), rng.choice([1, 2, 97, 1000, 16_384])
        blocks = list(split_blocks([data[i:i + size] for i in range(0, len(data), size)],
                                   max_line_bytes=1 << 20, block_bytes=1 << 30, block_lines=cap))
        assert b"\n".join(b.data for b in blocks) == data[:-1]
        room = cap * EMPTY_PER_LINE
        assert all(room - EMPTY_PER_LINE < _weight(b.data) <= room for b in blocks[:-1])  # full: no room for a line
        assert _weight(blocks[-1].data) <= room
        assert [b.first_line for b in blocks] == _first_lines(blocks)


def test_a_file_of_empty_lines_is_cut_in_few_blocks() -> None:
    data = b"\n" * 1_000_000 + b'{"messages": []}\n' + b"\n" * 10
    blocks = list(split_blocks([data[i:i + (4 << 20)] for i in range(0, len(data), 4 << 20)],
                               max_line_bytes=1 << 20, block_lines=16_384))
    assert len(blocks) == 4  # 16 times the line cap each, not 62 blocks of 16,384 lines
    assert sum(b.data.count(b"\n") + 1 for b in blocks) == 1_000_011
