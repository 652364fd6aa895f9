"""A rejected folder quarantined and announced: intake's whole call (validate, report, list once, copy each
file on the storage side, delete a page at a time in one Blob Batch, announce), beside a baseline measured
in the same run — the move as it was before (each blob downloaded through the worker, uploaded, its size
read back, then deleted, eight at a time).

Two storages:
- Azurite, the real emulator, at 1,500 files (the test's size). Azurite cannot serve 20,000: its delete
  costs time in proportion to the blobs it holds (LokiJS; measured here: ~7 ms a blob at 1,000 blobs,
  ~90 ms at 5,000, ~400 ms at 20,000), so the deletes alone of a 20,000-file folder take it hours,
  whatever the client does. The figure printed beside it is that per-delete cost at the folder's size.
- a stand-in blob service in memory that answers every request after a fixed latency (`--latency-ms`,
  default 20), at 1,500 and 20,000 files: what the number of requests and the concurrency of each way of
  moving cost. The registry and the queues stay on Azurite.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError

AZURITE_FILES = 1_500
STAND_IN_FILES = (1_500, 20_000)
UPLOADERS = 16


# --- a blob service in memory, with latency ---------------------------------------------------------------
class LatencyBlobs:
    """The slice of BlobServiceClient intake uses; every request waits `latency` seconds (concurrently)."""

    def __init__(self, latency: float) -> None:
        self.latency, self.requests = latency, 0
        self.data: dict[tuple[str, str], tuple[bytes, str]] = {}
        self._lock, self._etags = threading.Lock(), itertools.count(1)

    def request(self) -> None:
        with self._lock:
            self.requests += 1
        time.sleep(self.latency)

    def put(self, container: str, name: str, body: bytes) -> None:
        with self._lock:
            self.data[(container, name)] = (body, f'"0x{next(self._etags):016x}"')

    def get_container_client(self, container: str) -> _Container:
        return _Container(self, container)

    def get_blob_client(self, container: str, name: str) -> _Blob:
        return _Blob(self, container, name)


@dataclasses.dataclass
class _Container:
    service: LatencyBlobs
    name: str

    def get_blob_client(self, blob: str) -> _Blob:
        return _Blob(self.service, self.name, blob)

    def list_blobs(self, name_starts_with: str = "", **_: Any) -> list[Any]:
        found = sorted((n, b, e) for (c, n), (b, e) in list(self.service.data.items())
                       if c == self.name and n.startswith(name_starts_with))
        for _page in range(0, max(len(found), 1), 5000):   # List Blobs answers 5,000 a page
            self.service.request()
        return [SimpleNamespace(name=n, etag=e, size=len(b), last_modified=datetime.now(UTC)) for n, b, e in found]

    def upload_blob(self, name: str, body: Any, **kwargs: Any) -> None:
        self.get_blob_client(name).upload_blob(body, **kwargs)

    def delete_blobs(self, *blobs: dict[str, Any], raise_on_any_failure: bool = True) -> list[Any]:
        if len(blobs) > 256:   # Learn REST "Blob Batch": at most 256 subrequests
            raise HttpResponseError("ExceedsMaxBatchRequestCount: a batch holds at most 256 subrequests")
        self.service.request()   # one Blob Batch
        return [SimpleNamespace(status_code=self.get_blob_client(b["name"])._delete(b.get("etag"))) for b in blobs]


@dataclasses.dataclass
class _Blob:
    service: LatencyBlobs
    container: str
    name: str

    @property
    def url(self) -> str:
        return f"memory://{self.container}/{self.name}"

    def _current(self) -> tuple[bytes, str]:
        found = self.service.data.get((self.container, self.name))
        if found is None:
            raise ResourceNotFoundError(f"{self.container}/{self.name}")
        return found

    def get_blob_properties(self) -> Any:
        self.service.request()
        body, etag = self._current()
        return SimpleNamespace(size=len(body), etag=etag, copy=SimpleNamespace(status="success"))

    def download_blob(self, etag: str | None = None, match_condition: Any = None, **_: Any) -> Any:
        self.service.request()
        body, current = self._current()
        if etag is not None and etag != current:
            raise ResourceModifiedError("the blob changed")
        return SimpleNamespace(readall=lambda: body, chunks=lambda: iter([body]), size=len(body),
                               properties=SimpleNamespace(etag=current, size=len(body)))

    def upload_blob(self, body: Any, **_: Any) -> None:
        self.service.request()
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes | bytearray):
            body = b"".join(body)
        self.service.put(self.container, self.name, bytes(body))

    def start_copy_from_url(self, url: str, source_etag: str | None = None, **_: Any) -> dict[str, str]:
        self.service.request()
        container, name = url.removeprefix("memory://").split("/", 1)
        body, etag = _Blob(self.service, container, name)._current()
        if source_etag is not None and source_etag != etag:
            raise ResourceModifiedError("the source changed")
        self.service.put(self.container, self.name, body)
        return {"copy_status": "success"}

    def delete_blob(self, etag: str | None = None, **_: Any) -> None:
        self.service.request()
        if self._delete(etag) == 404:
            raise ResourceNotFoundError(self.name)

    def _delete(self, etag: str | None) -> int:
        with self.service._lock:
            found = self.service.data.get((self.container, self.name))
            if found is None:
                return 404
            if etag is not None and etag != found[1]:
                return 412
            del self.service.data[(self.container, self.name)]
            return 202


# --- the two ways of moving --------------------------------------------------------------------------------
def _folder(deps: Any, folder: str, count: int, put: Any) -> None:
    names = [f"{folder}/notes-{i:05d}.txt" for i in range(count)] + [f"{folder}/train.jsonl"]
    with ThreadPoolExecutor(UPLOADERS) as pool:
        list(pool.map(lambda n: put(n, b"not json\n" if n.endswith("train.jsonl") else b"x"), names))
    put(f"{folder}/run.json", b"{}")


def _intake(deps: Any, folder: str, count: int) -> float:
    from shared.stages.intake import handle_blob_created
    started = time.monotonic()
    run_id = handle_blob_created(f"{folder}/run.json", deps)
    took = time.monotonic() - started
    run = deps.registry.require_run(run_id)
    left = list(deps.blobs.get_container_client(deps.settings.datasets_container).list_blobs(name_starts_with=f"{folder}/"))
    assert run.state == "rejected" and not run.outbox and not left, (run.state, run.outbox, len(left))
    assert (run.error or {}).get("code") and count
    return took


def _baseline(deps: Any, folder: str) -> float:
    """The move before: read its properties, download, upload, read the copy's size, delete; 8 at a time."""
    source = deps.blobs.get_container_client(deps.settings.datasets_container)
    target = deps.blobs.get_container_client(deps.settings.quarantine_container)

    def move(name: str) -> None:
        src = source.get_blob_client(name)
        props = src.get_blob_properties()
        dst = target.get_blob_client(f"baseline/{name}")
        dst.upload_blob(src.download_blob().readall(), length=props.size, overwrite=True)
        assert dst.get_blob_properties().size == props.size
        src.delete_blob(etag=props.etag, match_condition=MatchConditions.IfNotModified)

    names = [b.name for b in source.list_blobs(name_starts_with=f"{folder}/")]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(move, names))
    return time.monotonic() - started


def _azurite_delete_ms(deps: Any, folder: str) -> float:
    """What one Delete Blob costs Azurite now (10 in a row, of blobs made for it)."""
    datasets = deps.blobs.get_container_client(deps.settings.datasets_container)
    for i in range(10):
        datasets.upload_blob(f"{folder}/probe-{i}", b"x", overwrite=True)
    started = time.monotonic()
    for i in range(10):
        datasets.get_blob_client(f"{folder}/probe-{i}").delete_blob()
    return (time.monotonic() - started) / 10 * 1000


def _line(what: str, count: int, took: float, baseline: float, requests: str = "") -> str:
    return (f"{what}: {count:,} files quarantined and announced in {took:.1f} s ({count / took:,.0f} files/s); "
            f"the move before: {baseline:.1f} s ({baseline / took:.1f}x){requests}")


def main() -> None:
    from local.azurite import Azurite
    from local.emulator.server import EmulatorServer
    from local.settings import emulator_topology, isolated_deps
    parser = argparse.ArgumentParser(prog="python -m benchmarks quarantine")
    parser.add_argument("--files", type=int, nargs="*", default=list(STAND_IN_FILES), help="stand-in shapes")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the stand-in's time per request")
    parser.add_argument("--azurite-files", type=int, default=AZURITE_FILES)
    args = parser.parse_args()
    with Azurite() as azurite:
        emulator = EmulatorServer(emulator_topology(), time_scale=1.0, seed=7)
        emulator.start()
        try:
            deps = isolated_deps(azurite, emulator)
            datasets = deps.blobs.get_container_client(deps.settings.datasets_container)

            def put(name: str, body: bytes) -> None:
                datasets.upload_blob(name, body, overwrite=True)
            _folder(deps, "old", args.azurite_files, put)
            baseline = _baseline(deps, "old")
            _folder(deps, "new", args.azurite_files, put)
            took = _intake(deps, "new", args.azurite_files)
            print(_line("Azurite", args.azurite_files, took, baseline) +
                  f"; Azurite's own Delete Blob at this size: {_azurite_delete_ms(deps, 'probe'):.0f} ms", flush=True)
            for count in args.files:
                base = isolated_deps(azurite, emulator)
                times = {}
                for way in ("old", "new"):
                    blobs = LatencyBlobs(args.latency_ms / 1000)
                    deps = dataclasses.replace(base, blobs=blobs)
                    _folder(deps, way, count, lambda n, b, s=blobs, d=deps: s.put(d.settings.datasets_container, n, b))
                    blobs.requests = 0
                    times[way] = (_baseline(deps, way) if way == "old" else _intake(deps, way, count), blobs.requests)
                (took, made), (baseline, before) = times["new"], times["old"]
                print(_line(f"stand-in storage, {args.latency_ms:.0f} ms a request", count, took, baseline,
                            f"; {made:,} storage requests (before: {before:,})"), flush=True)
        finally:
            emulator.stop()

