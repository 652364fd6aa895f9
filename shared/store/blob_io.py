"""Blobs as streams, for uploading them to the hub without holding them in memory."""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from typing import Any


def upload_parts(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Re-cut a blob's download chunks into upload parts of `size` bytes (the last one shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


class BlobReader(io.RawIOBase):
    """A blob as a read-only stream over its download chunks. Seeking is limited to what an HTTP client
    needs: to the end to learn the length, and back to the start to send again (a new download)."""

    def __init__(self, blob: Any, size: int) -> None:
        super().__init__()
        self._blob, self._size = blob, size
        self._chunks: Iterator[bytes] | None = None
        self._buffer = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self._size + offset if whence == os.SEEK_END else self._pos + offset
        if target == self._pos:
            return self._pos
        if target == 0:
            self._chunks, self._buffer, self._pos = None, b"", 0
        elif target == self._size:
            self._chunks, self._buffer, self._pos = iter(()), b"", self._size
        else:
            raise io.UnsupportedOperation("BlobReader seeks only to the start or the end")
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if self._pos >= self._size:
            return b""
        if self._chunks is None:
            self._chunks = iter(self._blob.download_blob().chunks())
        want = self._size - self._pos if size is None or size < 0 else size
        while len(self._buffer) < want:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        out, self._buffer = self._buffer[:want], self._buffer[want:]
        self._pos += len(out)
        return out

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def hash_blob(blob: Any) -> tuple[str, str]:
    """sha256 of a blob's content, streamed, and the ETag of the version read."""
    digest = hashlib.sha256()
    download = blob.download_blob()
    for chunk in download.chunks():
        digest.update(chunk)
    return digest.hexdigest(), str(download.properties.etag)
