"""Where a block's deferred texts are counted: inline, in a thread, or in a helper process of their own.

Counting is most of a validation's CPU, and building the tokenizer takes ~0.5 s holding the GIL (quicktok's
vocabulary). In a thread (quicktok releases the GIL while it counts) the main thread still waits out that
build before it parses anything. A large file is counted in a helper process instead (sidecar.py): it builds
its own tokenizer while the main thread parses the first blocks, and then counts beside it; the main process
builds none unless a line needs a count on the spot (role names' counts are known: tokens.ROLE_TOKENS). Every
way gives the same counts: the helper runs the same tokens.Counter, and if it fails (or cannot start), the
blocks it had not answered are checked and counted again in this process (engine.py: its answers raise
HelperFailed). A process that has built the tokenizer already (a warm Functions worker: the tokenizer is kept)
counts in a thread: nothing to wait for, nothing to send.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

if __package__:  # imported as shared.validation.counting
    from . import sidecar, tokens
else:  # the helper process: loaded by path beside sidecar.py (sidecar._BOOT), with no package import
    sidecar = sys.modules["_ftops_sidecar"]
    tokens = sidecar.load("_ftops_tokens", os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokens.py"))

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
HelperFailed = sidecar.HelperFailed


class Counts(Protocol):
    """A batch's counts, maybe still being computed: one int64 per text, in order."""

    def result(self) -> np.ndarray: ...

    def done(self) -> bool: ...


class Done:
    """Counts already computed."""

    def __init__(self, value: np.ndarray) -> None:
        self.value = value

    def result(self) -> np.ndarray:
        return self.value

    def done(self) -> bool:
        return True


class Inline:
    """Counts each batch at once, in the calling thread (worker processes; blocks of a few huge lines)."""

    def __init__(self, counter: tokens.Counter, batch_texts: int) -> None:
        self.counter = counter
        self.batch_texts = batch_texts  # texts per batch: fewer hand-overs, bounded text in memory

    def submit(self, texts: list[str]) -> Counts:
        return Done(self.counter.count_array(texts))

    def close(self) -> None:
        pass


class InThread(Inline):
    """Counts in a background thread (quicktok releases the GIL) while the main thread parses the next block."""

    def __init__(self, counter: tokens.Counter, batch_texts: int) -> None:
        super().__init__(counter, batch_texts)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ftops-count")

    def submit(self, texts: list[str]) -> Counts:
        return self._pool.submit(self.counter.count_array, texts)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class InHelper(Inline):
    """Counts in a helper process, started when first needed (`counter` builds its own tokenizer only for a count
    needed on the spot)."""

    def __init__(self, counter: tokens.Counter, threads: int = 1) -> None:
        # A block's texts in one request (a block holds at most Tuning.block_lines lines): each request costs
        # a frame each way and two thread wake-ups here.
        super().__init__(counter, 1 << 20)
        self._args = [counter.name, str(threads)]
        self._side: sidecar.Sidecar | None = None  # started when first needed: a file of bad lines counts nothing
        self._refused = False  # it could not start
        self._first: Counts | None = None  # its first request's counts: none until it has built its tokenizer

    def building(self) -> bool:
        """Whether the helper is building its tokenizer: started, and its first request not answered yet."""
        return self._first is not None and not self._first.done()

    def _started(self) -> sidecar.Sidecar | None:
        """The helper, started on first need; None if it could not start (then every batch fails over to this
        process: engine.py checks its blocks again)."""
        if self._side is None and not self._refused:
            try:
                self._side = sidecar.Sidecar(os.path.abspath(__file__), "_ftops_counting", self._args)
            except Exception as exc:  # noqa: BLE001 - no helper (no process or pipe left): counted in this process
                log.warning("counting helper process not started (%s); counting in this process", exc)
                self._refused = True
        return self._side

    def submit(self, texts: list[str]) -> Counts:
        side = self._started()
        if side is None:
            return _failed("the counting helper process could not start")
        try:
            request = _request(texts)
        except UnicodeEncodeError:  # a lone surrogate (none is deferred): its block is counted here, and flags it
            return _failed("a text the counting helper cannot take")
        counts = _Remote(side.submit(request))
        if self._first is None:
            self._first = counts
        return counts

    def close(self) -> None:
        if self._side is not None:
            self._side.close()


# A request: the number of texts, then their UTF-8 bytes joined by 0xFF, a byte UTF-8 never holds. The helper splits
# them in one call and quicktok counts bytes as they are: unlike marshalled strings, nothing is decoded to str in
# the helper and encoded back to UTF-8 for the tokenizer (~0.3 s of its CPU per 128 MiB of long examples).
_COUNT = struct.Struct("<Q")
_SEPARATOR = b"\xff"


def _request(texts: list[str]) -> bytes:
    return _COUNT.pack(len(texts)) + _SEPARATOR.join([text.encode() for text in texts])


def _texts(request: bytes) -> list[bytes]:
    n, = _COUNT.unpack_from(request)
    texts = request[_COUNT.size:].split(_SEPARATOR) if n else []
    if len(texts) != n:
        raise ValueError(f"{n} texts announced, {len(texts)} received")
    return texts


def _failed(why: str) -> Counts:
    """Counts that never come: the engine checks their block again in this process."""
    refused: Future[bytes] = Future()
    refused.set_exception(HelperFailed(why))
    return _Remote(refused)


class _Remote:
    def __init__(self, future: Future[bytes]) -> None:
        self._future = future

    def done(self) -> bool:
        return self._future.done()

    def result(self) -> np.ndarray:
        """The counts, or HelperFailed (the texts are not kept: their block is checked again)."""
        import numpy as np

        counts: np.ndarray = np.frombuffer(self._future.result(), "<u4").astype(np.int64)
        return counts


# --- the helper process
def serve(encoding: str, threads: str) -> None:
    """Helper main loop: for each request of texts (_request), their packed uint32 counts.

    A batch is counted with `threads` threads while more requests wait in the pipe (counting is what the validation
    waits for: long texts), with one while the helper waits for the main thread (it is what the validation waits
    for: short lines, and a second thread would only take its core)."""
    counter = tokens.Counter(encoding)
    most = int(threads)

    def handle(request: bytes) -> bytes:
        counter.threads = most if _waiting_input() else 1
        counts: bytes = counter.count_array(_texts(request)).astype("<u4").tobytes()
        return counts

    sidecar.serve(handle)


def _waiting_input() -> bool:
    """Whether the next request is already (at least partly) in the pipe."""
    try:
        import fcntl
        import termios

        buf = bytearray(4)
        fcntl.ioctl(sys.stdin.fileno(), termios.FIONREAD, buf)
        return int.from_bytes(buf, sys.byteorder) > 0
    except (OSError, ImportError, ValueError):
        return False
