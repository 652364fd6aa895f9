"""The raw-byte work of a block that needs no tokenizer: content hashes and the privacy scan.

It runs inline, or in a small helper process so that the main thread (the bottleneck: parsing and
the Python checks) does not spend ~3.5 s of the 480 MiB benchmark on it. The helper loads only this
file and shared/run/privacy.py, by path (~22 MB with its RE2 cache: no tokenizer, no package import). Blocks go to it through its
stdin and results come back in order (sidecar.py). Anything going wrong with the helper falls back to the inline
computation.
"""

from __future__ import annotations

import logging
import marshal
import os
import re
import struct
import sys
from array import array
from bisect import bisect_right
from collections import deque
from concurrent.futures import Future
from typing import Any

from xxhash import xxh3_64_intdigest

if __package__:  # imported as shared.validation.rawscan
    from shared.run import privacy

    from . import sidecar
else:  # the helper process: loaded by path beside sidecar.py (sidecar._BOOT), with no package import
    sidecar = sys.modules["_ftops_sidecar"]
    privacy = sidecar.load("_ftops_privacy", os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run", "privacy.py"))

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"  # as lines.BOM (not imported: the helper loads this file alone)
_HEADER = struct.Struct("<Q")  # a request: the first line of the block, then the block
Findings = list[tuple[int, str, str]]


def scan_block(data: bytes, first_line: int) -> tuple[bytes, Findings]:
    """(content digests of the non-blank lines, packed native 64-bit, in order; privacy findings as (line,
    code, message) in byte order) for a block of lines joined by b"\\n". A line's digest is the 64-bit XXH3 of
    its bytes without surrounding whitespace (CR included) and leading BOM (as lines.normalize): exact
    duplicates share it; two different lines do with probability 2^-64 (some pair of n lines: about n^2/2^65)."""
    # How long the block's lines are, from its first _SAMPLE_BYTES, picks how they are found (the digests are the
    # same either way): a few huge lines or long ones are hashed where they lie (_digests_line_by_line); under 2 bytes
    # a line, mostly empty ones are skipped in C by a regular expression; other blocks are split.
    sampled = min(len(data), _SAMPLE_BYTES)
    breaks = data.count(b"\n", 0, sampled)
    if len(data) < _SPLIT_BELOW and breaks * _LONG_LINE > sampled:
        # Without its surrounding whitespace a line is empty exactly when prepare_block calls it blank; a
        # leading BOM is removed after that decision (a line of a BOM alone is an example).
        if sampled < 2 * (breaks + 1):
            keys = _STRIPPED_LINE.findall(data)
        else:
            keys = [key for key in map(bytes.strip, data.split(b"\n")) if key]
        if BOM in data:
            keys = [key[3:].strip() if key.startswith(BOM) else key for key in keys]
        digests = array("Q", map(xxh3_64_intdigest, keys))
        del keys
    else:
        digests = _digests_line_by_line(data)
    found = list(privacy.scan(data))
    if found:
        starts = [0]
        pos = data.find(b"\n")
        while pos != -1:
            starts.append(pos + 1)
            pos = data.find(b"\n", pos + 1)
        found = [(first_line + bisect_right(starts, off) - 1, code, message) for off, code, message in found]
    if _ASCII_ESCAPE.search(data):
        found += _escaped_findings(data, first_line, found)
    return digests.tobytes(), found


# A non-blank line without its surrounding whitespace (bytes.strip removes what \s matches): its first other byte
# to its last. Slower than splitting where most lines are not blank (2 MiB of "{}" lines: 0.1 s against 0.06 s).
_STRIPPED_LINE = re.compile(rb"\S(?:[^\n]*\S)?")

# Blocks under this size are split into lines at once; larger ones (a few huge lines, which the engine checks
# alone in the main process) are hashed line by line, never all of their lines at once (memory)...
_SPLIT_BELOW = 8 << 20
# ... and so are blocks whose lines average this long or more over their first _SAMPLE_BYTES: their lines hashed
# where they lie cost less than copies of them (per 128 MiB: 0.12 s became 0.03 s on long examples, 0.25 s 0.14 s
# on ~450-byte ones; ~110-byte ones took 0.40 s instead of 0.32 s).
_LONG_LINE = 256
_SAMPLE_BYTES = 1 << 16
_EDGE = frozenset(b" \t\n\r\x0b\x0c" + BOM[:1])  # what bytes.strip() removes, and a BOM's first byte


def _digests_line_by_line(data: bytes) -> array[int]:
    digests = array("Q")
    append = digests.append
    find = data.find
    view = memoryview(data)
    pos, end = 0, len(data)
    while pos <= end:
        nl = find(b"\n", pos)
        if nl == -1:
            nl = end
        if pos < nl and data[pos] not in _EDGE and data[nl - 1] not in _EDGE:  # the usual line: nothing to remove
            append(xxh3_64_intdigest(view[pos:nl]))
        elif key := data[pos:nl].strip():  # else a blank line: no digest
            if key.startswith(BOM):
                key = key[3:].strip()
            append(xxh3_64_intdigest(key))
        pos = nl + 1
    return digests


# A JSON escape of an ASCII character (\u0040 is "@"): only these can spell what the patterns look
# for, so only lines holding one are decoded and scanned again (non-ASCII escapes are common and safe).
_ASCII_ESCAPE = privacy.compile_linear(rb"\\u00[0-7][0-9A-Fa-f]")  # RE2: ~4x faster than `re` here


def _escaped_findings(data: bytes, first_line: int, known: Findings) -> Findings:
    """Privacy findings that only the decoded strings of a line show, in line order."""
    seen = set(known)
    out: Findings = []
    line, counted = first_line, 0
    m = _ASCII_ESCAPE.search(data)
    while m is not None:
        start = data.rfind(b"\n", 0, m.start()) + 1
        end = data.find(b"\n", m.end())
        end = len(data) if end == -1 else end
        line += data.count(b"\n", counted, start)
        counted = start
        for code, message in privacy.scan_decoded(data[start:end]):
            if (line, code, message) not in seen:
                seen.add((line, code, message))
                out.append((line, code, message))
        m = _ASCII_ESCAPE.search(data, end)
    return out


# --- the helper process
def serve() -> None:
    """Helper main loop: a header and a block in, marshalled results out, until stdin closes."""
    def handle(request: bytes) -> bytes:
        first_line, = _HEADER.unpack_from(request)
        return marshal.dumps(scan_block(request[_HEADER.size:], first_line))

    sidecar.serve(handle)


class Helper:
    """One helper process; submit() blocks in order, result() returns their results in order."""

    def __init__(self) -> None:
        self._side = sidecar.Sidecar(os.path.abspath(__file__), "_ftops_rawscan")
        self._results: deque[Future[bytes]] = deque()

    @property
    def broken(self) -> bool:
        return self._side.broken

    def submit(self, data: bytes, first_line: int) -> None:
        self._results.append(self._side.submit(_HEADER.pack(first_line), data))

    def result(self) -> tuple[bytes, Findings] | None:
        """The next block's result, or None if the helper failed (the caller computes it inline;
        the helper is not used again)."""
        try:
            value: Any = marshal.loads(self._results.popleft().result())
            return value[0], [tuple(f) for f in value[1]]
        except (sidecar.HelperFailed, ValueError, EOFError, TypeError, IndexError):
            pass
        log.warning("the scan helper process failed; scanning inline")
        return None

    def close(self) -> None:
        self._side.close()


def start_helper() -> Helper | None:
    try:
        return Helper()
    except Exception as exc:  # noqa: BLE001 - no helper: everything is computed inline as before
        log.warning("scan helper process not started (%s); scanning inline", exc)
        return None
