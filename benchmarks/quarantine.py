"""A rejected folder quarantined and announced, against Azurite with the app's real clients: 1,500 and
20,000 files (the issue's case), beside a baseline measured in the same run — the move as it was before
(each blob downloaded through the worker, uploaded, its size read back and deleted, eight at a time) on
2,000 files. Prints the seconds of the upload (the test's own set-up, 16 at a time), of the intake call
(validate, report, list once, copy on the storage side, delete in batches, announce) and files per second."""
from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from azure.core import MatchConditions

SHAPES = (1_500, 20_000)
BASELINE_FILES = 2_000
UPLOADERS = 16


def _upload(deps: Any, folder: str, count: int) -> float:
    datasets = deps.blobs.get_container_client(deps.settings.datasets_container)
    started = time.monotonic()
    with ThreadPoolExecutor(UPLOADERS) as pool:
        list(pool.map(lambda i: datasets.upload_blob(f"{folder}/notes-{i:05d}.txt", b"x", overwrite=True),
                      range(count)))
    return time.monotonic() - started


def _rejected_folder(deps: Any, count: int) -> tuple[float, float]:
    from shared.stages.intake import handle_blob_created
    folder = f"many{count}"
    uploaded = _upload(deps, folder, count)
    datasets = deps.blobs.get_container_client(deps.settings.datasets_container)
    datasets.upload_blob(f"{folder}/train.jsonl", b"not json\n", overwrite=True)
    datasets.upload_blob(f"{folder}/run.json", b"{}", overwrite=True)
    started = time.monotonic()
    run_id = handle_blob_created(f"{folder}/run.json", deps)
    took = time.monotonic() - started
    run = deps.registry.require_run(run_id)
    left = sum(1 for _ in datasets.list_blobs(name_starts_with=f"{folder}/"))
    assert run.state == "rejected" and not run.outbox and left == 0, (run.state, run.outbox, left)
    assert run.error and json.dumps(run.error)
    return uploaded, took


def _baseline(deps: Any, count: int) -> float:
    """The move before: download, upload, read the copy's size, delete; eight blobs at a time."""
    folder = "baseline"
    _upload(deps, folder, count)
    source = deps.blobs.get_container_client(deps.settings.datasets_container)
    target = deps.blobs.get_container_client(deps.settings.quarantine_container)

    def move(name: str) -> None:
        src = source.get_blob_client(name)
        props = src.get_blob_properties()
        dst = target.get_blob_client(f"baseline/{name}")
        dst.upload_blob(src.download_blob().chunks(), length=props.size, overwrite=True)
        assert dst.get_blob_properties().size == props.size
        src.delete_blob(etag=props.etag, match_condition=MatchConditions.IfNotModified)

    names = [b.name for b in source.list_blobs(name_starts_with=f"{folder}/")]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(move, names))
    return time.monotonic() - started


def main() -> None:
    from local.azurite import Azurite
    from local.emulator.server import EmulatorServer
    from local.settings import emulator_topology, isolated_deps
    parser = argparse.ArgumentParser(prog="python -m benchmarks quarantine")
    parser.add_argument("--files", type=int, nargs="*", default=list(SHAPES))
    args = parser.parse_args()
    with Azurite() as azurite:
        emulator = EmulatorServer(emulator_topology(), time_scale=1.0, seed=7)
        emulator.start()
        try:
            deps = isolated_deps(azurite, emulator)
            took = _baseline(deps, BASELINE_FILES)
            print(f"baseline move (download+upload+delete, 8 at once): {BASELINE_FILES:,} files in {took:.1f} s "
                  f"({BASELINE_FILES / took:,.0f} files/s)", flush=True)
            for count in args.files:
                deps = isolated_deps(azurite, emulator)
                uploaded, took = _rejected_folder(deps, count)
                print(f"rejected folder of {count:,} files: upload {uploaded:.1f} s; quarantined and announced in "
                      f"{took:.1f} s ({count / took:,.0f} files/s)", flush=True)
        finally:
            emulator.stop()
