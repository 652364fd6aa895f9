"""The duplicate index: every example line's 64-bit content digest and the line it first appeared on.

Twelve bytes an entry (a digest and a line number in sorted numpy runs), not a dict of Python ints (~100
bytes an entry): a file of millions of short examples stays small. Lookups are exact on the digest (the
64-bit XXH3 of rawscan.scan_block, ~7x cheaper than the 64-bit blake2b of `lines.content_hash`, which the
split keeps: some pair of n different lines shares one with probability about n²/2⁶⁵, under 10⁻⁶ for a
million lines). New digests arrive a block at a time; each block becomes one
sorted run, and runs of similar size are merged while they are small (log-structured), so a lookup is one
binary search per run, and the largest run is never copied to grow.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Runs are merged while the result stays under this many entries (12 MiB): merging costs a copy of both, so
# the largest runs are left alone; a full index holds a few of these, each searched in one vectorized call.
MERGE_LIMIT = 1 << 20
# 12 bytes an entry: 96 MiB at the cap. A file of valid examples under the upload limit (512 MB; a usable
# example takes at least ~75 bytes) has fewer distinct lines than this; past it (hostile files of millions of
# distinct tiny lines) the index stops growing and the report says how many lines the check covered.
MAX_ENTRIES = 8_000_000


def _merge(k1: np.ndarray, l1: np.ndarray, k2: np.ndarray, l2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted runs as one, the first's entries first among equal digests: each entry placed where it goes (~13
    bytes an entry beside the result) rather than both sorted again (an argsort and copies: ~32 bytes an entry)."""
    n = len(k1) + len(k2)
    at2 = np.searchsorted(k1, k2, side="right") + np.arange(len(k2))  # where each of the second run's goes
    keys, lines = np.empty(n, np.uint64), np.empty(n, np.uint32)
    keys[at2], lines[at2] = k2, l2
    first = np.ones(n, bool)
    first[at2] = False
    keys[first], lines[first] = k1, l1
    return keys, lines


class DigestIndex:
    """digest → first line, for duplicate and leakage checks (exact on the 64-bit digest)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []   # (sorted uint64 digests, uint32 first lines)
        self._size = 0
        self.uncovered = 0   # distinct lines not indexed because the index was full (0: the check was exact)

    def __len__(self) -> int:
        return self._size

    @property
    def full(self) -> bool:
        return self._size >= self.max_entries

    def lookup(self, digests: np.ndarray) -> np.ndarray:
        """The first line of each digest (uint32), 0 where it is not in the index."""
        found = np.zeros(len(digests), dtype=np.uint32)
        for keys, lines in self._runs:
            pos = np.searchsorted(keys, digests)
            pos[pos == len(keys)] = 0
            hit = (keys[pos] == digests) & (found == 0)
            found[hit] = lines[pos[hit]]
        return found

    def add(self, digests: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index a block's digests (with their lines, in increasing order); returns the duplicates as
        (their lines, the first line of the same example), in line order."""
        if not len(digests):
            empty = np.zeros(0, dtype=np.uint32)
            return empty, empty
        digests = np.asarray(digests, dtype=np.uint64)
        lines = np.asarray(lines, dtype=np.uint32)
        order = np.argsort(digests, kind="stable")   # equal digests keep line order: the first is the earliest
        keys, at = digests[order], lines[order]
        first_in_block = np.ones(len(keys), dtype=bool)
        first_in_block[1:] = keys[1:] != keys[:-1]
        # Each digest's earliest line within the block; earlier blocks' lines come first.
        group = np.cumsum(first_in_block) - 1
        earliest = at[first_in_block][group]
        before = self.lookup(keys[first_in_block])
        first = np.where(before[group] != 0, before[group], earliest)
        dup = first != at
        new = first_in_block & (before[group] == 0)
        room = self.max_entries - self._size
        if new.sum() > room:   # full: the first `room` new digests (in line order) are kept, the rest counted
            candidates = np.flatnonzero(new)
            keep = candidates[np.argsort(at[candidates], kind="stable")[:room]]
            self.uncovered += len(candidates) - len(keep)
            new = np.zeros(len(keys), dtype=bool)
            new[keep] = True
        if new.any():
            self._push(keys[new], at[new])
        dup_lines, dup_first = at[dup], first[dup]
        by_line = np.argsort(dup_lines, kind="stable")
        return dup_lines[by_line], dup_first[by_line]

    def _push(self, keys: np.ndarray, lines: np.ndarray) -> None:
        self._runs.append((keys, lines))
        self._size += len(keys)
        while len(self._runs) > 1:
            (k1, l1), (k2, l2) = self._runs[-2], self._runs[-1]
            if len(k1) > 2 * len(k2) or len(k1) + len(k2) > MERGE_LIMIT:
                break
            self._runs[-2:] = [_merge(k1, l1, k2, l2)]

    # --- dict-like reads (tests, small files)
    def get(self, digest: int, default: int | None = None) -> int | None:
        line = int(self.lookup(np.array([digest], dtype=np.uint64))[0])
        return line if line else default

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, int) and self.get(digest) is not None

    def __getitem__(self, digest: int) -> int:
        line = self.get(digest)
        if line is None:
            raise KeyError(digest)
        return line

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(digests, first lines) of every entry, in line order."""
        if not self._runs:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint32)
        keys = np.concatenate([k for k, _ in self._runs])
        lines = np.concatenate([v for _, v in self._runs])
        order = np.argsort(lines, kind="stable")
        return keys[order], lines[order]

    def items(self) -> Iterator[tuple[int, int]]:
        keys, lines = self.arrays()
        return zip(keys.tolist(), lines.tolist(), strict=True)
