"""Streaming line splitting over byte chunks, in bounded memory.

Lines are physical lines split on b"\\n" only: U+2028/U+2029 and NEL inside JSON strings are bytes
of a character, never a break (str.splitlines would split on them). A line longer than the cap is
never held whole: its bytes are dropped as they arrive and the line is reported once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .options import Tuning

BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Block:
    first_line: int  # 1-based number of the block's first line
    data: bytes  # complete lines joined by b"\n", without the final newline
    too_long: int | None = None  # set instead of data: this line exceeded the cap


def coalesce_head(chunks: Iterable[bytes], size: int = 4) -> Iterator[bytes]:
    """The same bytes, the first chunk holding at least `size` of them (a BOM may be split)."""
    it = iter(chunks)
    head = b""
    for chunk in it:
        head += chunk
        if len(head) >= size:
            break
    if head:
        yield head
    yield from it


def split_blocks(chunks: Iterable[bytes], *, max_line_bytes: int,
                 block_bytes: int = Tuning.block_bytes, block_lines: int = Tuning.block_lines) -> Iterator[Block]:
    """Blocks of whole lines (or a too-long marker), in order. A leading UTF-8 BOM is removed.
    Blocks hold at least `block_bytes` (4 MiB chunks: ~4 MiB) or exactly `block_lines` lines, but the last
    one and those before an over-long line. An empty line (no byte before its newline) weighs 1/EMPTY_PER_LINE
    of a line there: it holds nothing until the block is checked, and a file of millions of them is checked in
    blocks of 16 times more lines, not in ~1,000 blocks of 16 KiB, each costing its hand-overs."""
    line_no = 1  # number of the line being assembled
    pieces: list[bytes] = []  # its bytes so far, in pieces (no quadratic concatenation)
    pending = 0
    skipping = False  # it is over the cap: drop its bytes until its newline
    parts: list[bytes] = []  # runs of whole lines collected towards one block
    size = weight = 0  # bytes and weight of the lines collected so far (a line weighs EMPTY_PER_LINE, an empty one 1)
    room = block_lines * EMPTY_PER_LINE
    first_of_block = 1
    first_chunk = True
    for chunk in coalesce_head(chunks):
        if first_chunk and chunk:
            first_chunk = False
            if chunk.startswith(BOM):
                chunk = chunk[3:]
        pos, end = 0, len(chunk)
        while pos < end:
            nl = chunk.find(b"\n", pos)
            if nl == -1:  # the rest belongs to the unfinished line
                if not skipping:
                    pending += end - pos
                    if pending > max_line_bytes:
                        skipping, pieces, pending = True, [], 0
                    else:
                        pieces.append(chunk[pos:] if pos else chunk)
                break
            if skipping or pending + (nl - pos) > max_line_bytes:
                if parts:
                    yield Block(first_of_block, b"\n".join(parts))
                    parts, size, weight = [], 0, 0
                yield Block(line_no, b"", too_long=line_no)
                skipping, pieces, pending = False, [], 0
                line_no += 1
                pos = nl + 1
                continue
            # Take this line and every whole line after it in one slice, unless that span is
            # large enough to hide an over-long line (then go one line at a time).
            last = chunk.rfind(b"\n", nl)
            if last - nl > max_line_bytes:
                last = nl
            # Only up to the block's line cap (many tiny lines): the lines ending at nl ... last, up to its weight.
            empty = nl == pos and not pieces
            taken, used, last = _take_lines(chunk, nl, last, room - weight, 1 if empty else EMPTY_PER_LINE)
            body = chunk[pos:last]
            if pieces:
                pieces.append(body)
                body = b"".join(pieces)
                pieces, pending = [], 0
            if not parts:
                first_of_block = line_no
            parts.append(body)
            size += len(body)
            weight += used
            line_no += taken
            if size >= block_bytes or weight > room - EMPTY_PER_LINE:  # no room for one more line
                yield Block(first_of_block, b"\n".join(parts))
                parts, size, weight = [], 0, 0
            pos = last + 1
    if skipping:
        if parts:
            yield Block(first_of_block, b"\n".join(parts))
            parts = []
        yield Block(line_no, b"", too_long=line_no)
    elif pieces:  # last line without a final newline
        if not parts:
            first_of_block = line_no
        parts.append(b"".join(pieces))
    if parts:
        yield Block(first_of_block, b"\n".join(parts))


_NUMPY_FROM = 1 << 14  # spans at least this long are searched with numpy: bytes.count runs at ~1 GB/s
_SLICE = 1 << 20  # ... one slice at a time (its comparison array is as long as the slice)
EMPTY_PER_LINE = 16  # empty lines weigh as much as one other line in a block (split_blocks)


def _take_lines(chunk: bytes, nl: int, last: int, room: int, first: int) -> tuple[int, int, int]:
    """(n, weight, end): the lines ending at the newlines at `nl` ... `last` of `chunk`, or only the first of them
    whose weight fits in `room` (`end`: the newline of the last one taken). The first line weighs `first` and is
    taken whatever the room; each next one 1 if it is empty, else EMPTY_PER_LINE. Newlines are searched in
    windows from `nl` on, growing, never past the one that fills the room: a chunk of 4 million blank lines is
    cut into blocks in one pass over it, not one pass over the rest of the chunk per block."""
    full = EMPTY_PER_LINE
    if last - nl < _NUMPY_FROM:
        n, used, pos = 1, first, nl
        while (nxt := chunk.find(b"\n", pos + 1, last + 1)) != -1:
            w = 1 if nxt == pos + 1 else full
            if used + w > room:
                return n, used, pos
            n, used, pos = n + 1, used + w, nxt
        return n, used, pos
    import numpy as np  # loaded by the validator already; not with this module (the app's cold start)

    view = np.frombuffer(chunk, np.uint8)
    # The first window holds the room's lines if they are of ~4 bytes ("{}" and its newline: 3), not its empty ones.
    n, used, prev, start, window = 1, first, nl, nl + 1, max(_NUMPY_FROM, min(4 * (room // full), _SLICE))
    while start <= last:
        stop = min(start + window, last + 1)
        newline = view[start - 1:stop] == 10  # from the byte before the window: is its first line empty?
        here = newline[1:]
        empty = here & newline[:-1]  # a newline right after a newline ends an empty line
        lines, empties = int(np.count_nonzero(here)), int(np.count_nonzero(empty))
        weight = full * lines - (full - 1) * empties
        if used + weight > room:  # the room fills in this window: find the line that fills it
            hits = np.flatnonzero(here)
            total = np.cumsum(np.where(empty[hits], 1, full))
            fit = int(np.searchsorted(total, room - used, side="right"))  # how many of them fit (not all)
            return n + fit, used + (int(total[fit - 1]) if fit else 0), start + int(hits[fit - 1]) if fit else prev
        if lines:
            prev = chunk.rfind(b"\n", start, stop)
        n, used, start, window = n + lines, used + weight, stop, min(2 * window, _SLICE)
    return n, used, last


def normalize(line: bytes) -> bytes:
    """The bytes an example is identified by: surrounding whitespace, CR and BOM removed."""
    line = line.strip()
    return line[3:].strip() if line.startswith(BOM) else line


def content_hash(line: bytes) -> int:
    """64-bit content hash of an example line (exact duplicates share it; order/spacing matter)."""
    return int.from_bytes(hashlib.blake2b(normalize(line), digest_size=8).digest(), "little")


def iter_examples(chunks: Iterable[bytes], *, max_line_bytes: int = 32 << 20) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line bytes) for every non-blank line, streaming; over-long lines skipped.

    The intake's seeded split uses this with `content_hash` so duplicates never straddle a split.
    """
    for block in split_blocks(chunks, max_line_bytes=max_line_bytes):
        if block.too_long is not None:
            continue
        for i, line in enumerate(block.data.split(b"\n")):
            if line.strip():
                yield block.first_line + i, line.rstrip(b"\r")
