"""Memory flat in the number of examples: exact statistics from counts, an exact compact duplicate index, and a
validator whose memory does not grow with the lines it has seen (issue 24). Checked by simulation against the
plain per-example lists and dicts they replace, on synthetic data with known truth."""
from __future__ import annotations

import math
import random
import tracemalloc

import numpy as np

from shared.validation import ValidationOptions, validate_file
from shared.validation.digests import DigestIndex
from shared.validation.stats import ContextCounts, histogram, percentile


def _nearest_rank(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, min(len(ordered), math.ceil(q * len(ordered)))) - 1]


def _reference_histogram(values: list[int], limit: int | None, bins: int = 24) -> list[int]:
    top = max(values)
    if limit and top >= limit * 0.5:
        top = max(top, limit)
    width = max(1, -(-(top + 1) // bins))
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, v // width)] += 1
    return counts


def test_counted_statistics_equal_the_sorted_list_ones() -> None:
    rng = random.Random(7)
    for trial in range(30):
        n = rng.randint(1, 3000)
        # Skewed sizes, with some past the exact array (a line of hundreds of kilobytes) in a third of the trials.
        values = [int(rng.paretovariate(1.2) * rng.choice((5, 50, 400))) for _ in range(n)]
        if trial % 3 == 0:
            values += [ContextCounts.EXACT_BELOW + rng.randint(0, 5) for _ in range(rng.randint(1, 4))]
        counts = ContextCounts()
        for start in range(0, len(values), 700):   # in blocks, as the validator adds them
            counts.add(__import__("array").array("I", values[start:start + 700]))
        v, c = counts.values_counts()
        assert counts.n == len(values) and int(v[0]) == min(values) and int(v[-1]) == max(values)
        for q in (0.01, 0.5, 0.95, 0.999, 1.0):
            assert percentile(v, c, q) == _nearest_rank(values, q)
        limit = rng.choice((None, 128, 4096))
        assert histogram(v, c, limit)["counts"] == _reference_histogram(values, limit)


def _digests_with_duplicates(rng: random.Random, n: int) -> list[int]:
    pool: list[int] = []
    out = []
    for _ in range(n):
        if pool and rng.random() < 0.3:
            out.append(rng.choice(pool))
        else:
            d = rng.getrandbits(64)
            pool.append(d)
            out.append(d)
    return out


def test_digest_index_finds_exactly_the_duplicates_a_dict_finds() -> None:
    rng = random.Random(11)
    digests = _digests_with_duplicates(rng, 20_000) + [0, 0, 2**64 - 1]   # extreme digests too
    lines = sorted(rng.sample(range(1, 200_000), len(digests)))
    index, seen, expected, got = DigestIndex(), {}, [], []
    pos = 0
    while pos < len(digests):   # blocks of varied size, so runs get merged and searched
        size = rng.randint(1, 900)
        block_d = np.array(digests[pos:pos + size], dtype=np.uint64)
        block_l = np.array(lines[pos:pos + size], dtype=np.uint32)
        dup_lines, dup_first = index.add(block_d, block_l)
        got += list(zip(dup_lines.tolist(), dup_first.tolist(), strict=True))
        for d, line in zip(digests[pos:pos + size], lines[pos:pos + size], strict=True):
            if d in seen:
                expected.append((line, seen[d]))
            else:
                seen[d] = line
        pos += size
    assert got == expected and len(index) == len(seen) and index.uncovered == 0
    assert sorted(index.items()) == sorted(seen.items())
    probe = rng.sample(list(seen), 50) + [rng.getrandbits(64) for _ in range(50)]
    assert [index.get(d) for d in probe] == [seen.get(d) for d in probe]


def test_a_full_digest_index_keeps_the_first_lines_and_counts_the_rest() -> None:
    index = DigestIndex(max_entries=10)
    index.add(np.arange(1, 8, dtype=np.uint64), np.arange(1, 8, dtype=np.uint32))
    dup_lines, dup_first = index.add(np.array([9, 1, 8, 11, 12, 9], dtype=np.uint64),
                                     np.array([8, 9, 10, 11, 12, 13], dtype=np.uint32))
    assert list(zip(dup_lines.tolist(), dup_first.tolist())) == [(9, 1), (13, 8)]
    assert len(index) == 10 and index.uncovered == 1 and 12 not in index and index.get(11) == 11
    index.add(np.array([20, 21, 1], dtype=np.uint64), np.array([14, 15, 16], dtype=np.uint32))
    assert len(index) == 10 and index.uncovered == 3 and 20 not in index


def _peak_bytes(data: bytes) -> int:
    chunks = [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    tracemalloc.start()
    try:
        validate_file(chunks, name="t.jsonl", options=ValidationOptions())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_examples() -> None:
    validate_file([b'{"input":1}\n'], name="warm.jsonl", options=ValidationOptions())   # tokenizer loaded once
    tiny = [b'{"input":%d}' % i for i in range(240_000)]   # distinct tiny lines: the duplicate index's worst case
    small = _peak_bytes(b"\n".join(tiny[:60_000]))
    large = _peak_bytes(b"\n".join(tiny))
    # 180,000 more lines: the duplicate index's 12 bytes each (2 MiB, twice while two runs merge), nothing per
    # line of the blocks behind (a dict of digests alone would take ~18 MiB more).
    assert large - small < 6 << 20, (small, large)
