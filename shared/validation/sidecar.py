"""A helper process fed through pipes: requests go in, results come back in the same order, as futures.

The validator's main thread is the bottleneck of a validation (parsing and the Python checks hold the GIL), so
work that needs no Python objects of its (hashing and the privacy scan: rawscan.py; token counting:
counting.py) runs in helper processes of their own. A helper runs one module's `serve()`, loaded by path so
that it imports only what that module needs, never the `shared` package. Requests cross through its stdin
from a sender thread (a blocking pipe write releases the GIL) and results are read back by a reader thread,
which resolves each request's future. A helper that fails (killed, out of memory) fails every future still
waiting and every later one: the caller computes that work itself.

This file holds only the standard library: helpers load it by path too.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from types import ModuleType
from typing import IO, NoReturn

_SIZE = struct.Struct("<Q")  # each frame, either way: its byte length, then its bytes

# The helper's boot: this file by path (as BOOTED), then the served module by path, then its serve(*args).
BOOTED = "_ftops_sidecar"
_BOOT = ("import importlib.util, sys\n"
         f"spec = importlib.util.spec_from_file_location({BOOTED!r}, sys.argv[1])\n"
         "mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)\n"
         "spec.loader.exec_module(mod)\n"
         "mod.load(sys.argv[3], sys.argv[2]).serve(*sys.argv[4:])\n")


class HelperFailed(RuntimeError):
    """The helper process stopped or its pipe broke: the work must be done in this process."""


class Sidecar:
    """One helper process running `serve()` of the module at `module_file` (with `args`, as strings)."""

    def __init__(self, module_file: str, name: str, args: Sequence[str] = ()) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", _BOOT, os.path.abspath(__file__), module_file, name, *args],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self.pid = self._proc.pid
        _widen(self._proc.stdin)
        self._todo: queue.SimpleQueue[tuple[bytes, ...] | None] = queue.SimpleQueue()
        self._waiting: deque[Future[bytes]] = deque()
        self._lock = threading.Lock()
        self.broken = False
        self._sender = threading.Thread(target=self._send_all, name=f"{name}-send", daemon=True)
        self._reader = threading.Thread(target=self._read_all, name=f"{name}-read", daemon=True)
        self._sender.start()
        self._reader.start()

    def submit(self, *parts: bytes) -> Future[bytes]:
        """A request made of `parts` (sent as one frame); its future holds the helper's answer, or HelperFailed."""
        future: Future[bytes] = Future()
        with self._lock:
            if self.broken:
                future.set_exception(HelperFailed("the helper process stopped"))
                return future
            self._waiting.append(future)
            self._todo.put(parts)
        return future

    def _send_all(self) -> None:
        pipe = self._proc.stdin
        assert pipe is not None
        try:
            while (parts := self._todo.get()) is not None:
                _write_frame(pipe, *parts)  # blocks (without the GIL) while the helper works on the requests before
        except (OSError, ValueError):
            self._fail()
        finally:
            try:
                pipe.close()  # the end of the helper's input: it answers what it has read, and exits
            except OSError:
                pass

    def _read_all(self) -> None:
        pipe = self._proc.stdout
        assert pipe is not None
        try:
            while (body := _read_frame(pipe)) is not None:
                with self._lock:
                    future = self._waiting.popleft() if self._waiting else None
                if future is None:  # an answer nobody asked for: the helper is not ours to trust
                    break
                future.set_result(body)
        except (OSError, ValueError):
            pass
        self._fail()

    def _fail(self) -> None:
        with self._lock:
            self.broken = True
            waiting, self._waiting = list(self._waiting), deque()
        for future in waiting:
            if not future.done():
                future.set_exception(HelperFailed(f"the helper process stopped (exit status {self._proc.poll()})"))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the helper and wait for it: requests not yet sent are dropped, and the helper is killed unless it
        answers what it has read within `timeout` seconds. Only the threads ever touch the pipes (closing a pipe another thread
        reads or writes would wait for that read or write)."""
        while True:  # not sent: dropped
            try:
                self._todo.get_nowait()
            except queue.Empty:
                break
        self._todo.put(None)
        self._sender.join(timeout=timeout)
        try:
            self._proc.wait(timeout=0 if self._sender.is_alive() else timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()  # its pipes break: the sender's write and the reader's read end
            self._proc.wait()
        self._sender.join(timeout=10)
        self._reader.join(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._fail()


def load(name: str, path: str) -> ModuleType:
    """The module at `path`, imported under `name` (in a helper: no package around it)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve(handle: Callable[[bytes], bytes]) -> NoReturn:
    """A helper's main loop: one answer per request, until stdin closes.
    It then leaves at once: every answer is flushed already, and tearing down the interpreter and a tokenizer took
    ~0.1 s that the validation waited for (Sidecar.close)."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        while (request := _read_frame(stdin)) is not None:
            answer = handle(request)
            del request
            _write_frame(stdout, answer)
    except BrokenPipeError:  # the validator stopped early and closed its end: nothing to answer
        pass
    os._exit(0)


def _read_frame(pipe: IO[bytes]) -> bytes | None:
    """The next frame's bytes, or None at the end of the stream (a frame cut short is its end too)."""
    head = pipe.read(_SIZE.size)
    if len(head) < _SIZE.size:
        return None
    size = _SIZE.unpack(head)[0]
    body = pipe.read(size)
    return body if len(body) == size else None


def _write_frame(pipe: IO[bytes], *parts: bytes) -> None:
    pipe.write(_SIZE.pack(sum(map(len, parts))))
    pipe.writelines(parts)
    pipe.flush()


def _widen(pipe: object) -> None:
    """A 1 MiB pipe (Linux's default cap for it), not 64 KiB: a block crosses in a few writes, each taking the GIL
    back from the main thread once, rather than ~32."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)  # type: ignore[attr-defined]
    except (OSError, ImportError, AttributeError, ValueError):
        pass  # another platform, or a lower cap: the default pipe works, only with more hand-overs
