"""The raw-byte work of a block that needs no tokenizer: content hashes and the privacy scan.

It runs inline, or in a small helper process so that the main thread (the bottleneck: parsing and
the Python checks) does not spend ~3.5 s of the 480 MiB benchmark on it. The helper loads only this
file and shared/run/privacy.py, by path (~33 MB with its RE2 cache: no tokenizer, no package import). Blocks go to it through its
stdin from a sender thread (a blocking pipe write releases the GIL), results come back in order on
its stdout. Anything going wrong with the helper falls back to the inline computation.
"""

from __future__ import annotations

import importlib.util
import logging
import marshal
import os
import queue
import re
import struct
import subprocess
import sys
import threading
from array import array
from bisect import bisect_right
from typing import Any

from xxhash import xxh3_64_intdigest

try:
    from shared.run import privacy
except ImportError:  # loaded by path in the helper process (see _BOOT)
    _spec = importlib.util.spec_from_file_location("_ftops_privacy", os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run", "privacy.py"))
    assert _spec is not None and _spec.loader is not None
    privacy = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(privacy)

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"  # as lines.BOM (not imported: the helper loads this file alone)
_HEADER = struct.Struct("<QQ")  # first line of the block, byte length of what follows
Findings = list[tuple[int, str, str]]


def scan_block(data: bytes, first_line: int) -> tuple[bytes, Findings]:
    """(content digests of the non-blank lines, packed native 64-bit, in order; privacy findings as (line,
    code, message) in byte order) for a block of lines joined by b"\\n". A line's digest is the 64-bit XXH3 of
    its bytes without surrounding whitespace (CR included) and leading BOM (as lines.normalize): exact
    duplicates share it; two different lines do with probability 2^-64 (some pair of n lines: about n^2/2^65)."""
    if len(data) < _SPLIT_BELOW:
        # Without its surrounding whitespace a line is empty exactly when prepare_block calls it blank; a
        # leading BOM is removed after that decision (a line of a BOM alone is an example).
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


# Blocks under this size are split into lines at once; larger ones (a few huge lines, which the engine checks
# alone in the main process) are hashed line by line, never all of their lines at once (memory).
_SPLIT_BELOW = 8 << 20


def _digests_line_by_line(data: bytes) -> array[int]:
    digests = array("Q")
    append = digests.append
    find = data.find
    pos, end = 0, len(data)
    while pos <= end:
        nl = find(b"\n", pos)
        if nl == -1:
            nl = end
        key = data[pos:nl].strip()
        pos = nl + 1
        if not key:  # a blank line
            continue
        if key.startswith(BOM):
            key = key[3:].strip()
        append(xxh3_64_intdigest(key))
    return digests


# A JSON escape of an ASCII character (\u0040 is "@"): only these can spell what the patterns look
# for, so only lines holding one are decoded and scanned again (non-ASCII escapes are common and safe).
_ASCII_ESCAPE = re.compile(rb"\\u00[0-7][0-9A-Fa-f]")


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
_BOOT = ("import importlib.util, sys\n"
         "spec = importlib.util.spec_from_file_location('_ftops_rawscan', sys.argv[1])\n"
         "mod = importlib.util.module_from_spec(spec)\n"
         "spec.loader.exec_module(mod)\n"
         "mod.serve()\n")


def serve() -> None:
    """Helper main loop: a header and a block in, marshalled results out, until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = stdin.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        first_line, size = _HEADER.unpack(header)
        data = stdin.read(size)
        if len(data) < size:
            return
        out = marshal.dumps(scan_block(data, first_line))
        try:
            stdout.write(struct.pack("<Q", len(out)) + out)
            stdout.flush()
        except BrokenPipeError:  # the validator stopped early and closed its end: just leave
            os._exit(0)


class Helper:
    """One helper process; submit() blocks in order, result() returns their results in order."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", _BOOT, os.path.abspath(__file__)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        _widen(self._proc.stdin)
        self._todo: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_all, name="ftops-scan-send", daemon=True)
        self._sender.start()
        self.broken = False

    def _send_all(self) -> None:
        pipe = self._proc.stdin
        assert pipe is not None
        try:
            while (item := self._todo.get()) is not None:
                first_line, data = item
                pipe.write(_HEADER.pack(first_line, len(data)))
                pipe.write(data)  # blocks (without the GIL) while the helper scans the block before
                pipe.flush()
        except (OSError, ValueError):
            self.broken = True

    def submit(self, data: bytes, first_line: int) -> None:
        self._todo.put((first_line, data))

    def result(self) -> tuple[bytes, Findings] | None:
        """The next block's result, or None if the helper failed (the caller computes it inline;
        the helper is not used again)."""
        if self.broken:
            return None
        try:
            pipe = self._proc.stdout
            assert pipe is not None
            head = pipe.read(8)
            if len(head) == 8:
                body = pipe.read(struct.unpack("<Q", head)[0])
                value: Any = marshal.loads(body)
                return value[0], [tuple(f) for f in value[1]]
        except (OSError, ValueError, EOFError, TypeError, IndexError):
            pass
        log.warning("the scan helper process failed (exit status %s); scanning inline", self._proc.poll())
        self.broken = True
        return None

    def close(self) -> None:
        # Results first: a helper still writing one then fails (EPIPE) and exits, which in turn
        # unblocks a sender thread still writing a block to it.
        self._todo.put(None)
        for pipe, join in ((self._proc.stdout, True), (self._proc.stdin, False)):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
            if join:
                self._sender.join(timeout=10)
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _widen(pipe: Any) -> None:
    """A 1 MiB pipe (Linux's default cap for it), not 64 KiB: a block crosses in a few writes, each taking the GIL
    back from the main thread once, rather than ~32."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, ImportError, AttributeError, ValueError):
        pass  # another platform, or a lower cap: the default pipe works, only with more hand-overs


def start_helper() -> Helper | None:
    try:
        return Helper()
    except Exception as exc:  # noqa: BLE001 - no helper: everything is computed inline as before
        log.warning("scan helper process not started (%s); scanning inline", exc)
        return None
