"""Starts the pinned Azurite (npm) on free loopback ports; used by the demo and the tests.

In memory by default (tests); with `location`, its data lives on disk in that folder, so a stopped or
killed Azurite started again (`restart`, on the same ports) still has every run, blob and message."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
# Azurite's documented, public development account key: not a secret.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at http://127\.0\.0\.1:(\d+)")


class Azurite:
    def __init__(self, location: Path | None = None) -> None:
        self.ports: dict[str, int] = {}
        self.location = location
        self._proc: subprocess.Popen[str] | None = None
        self._workdir = tempfile.mkdtemp(prefix="ftops-azurite-")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def connection_string(self) -> str:
        p = self.ports
        return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{p['Blob']}/{DEV_ACCOUNT};"
                f"QueueEndpoint=http://127.0.0.1:{p['Queue']}/{DEV_ACCOUNT};"
                f"TableEndpoint=http://127.0.0.1:{p['Table']}/{DEV_ACCOUNT};")

    def start(self, timeout: float = 30.0) -> Self:
        binary = ROOT / "node_modules" / ".bin" / "azurite"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run `make setup` (installs the pinned Azurite from npm)")
        if self.location is not None:
            self.location.mkdir(parents=True, exist_ok=True)
        storage = ["--location", str(self.location)] if self.location is not None else ["--inMemoryPersistence"]
        ports = {k: str(self.ports.get(k, 0)) for k in ("Blob", "Queue", "Table")}   # the same ones on a restart
        self._proc = subprocess.Popen(
            [str(binary), *storage, "--skipApiVersionCheck", "--disableProductStyleUrl",
             "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
             "--blobPort", ports["Blob"], "--queuePort", ports["Queue"], "--tablePort", ports["Table"]],
            cwd=self._workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        assert self._proc.stdout is not None
        listening: set[str] = set()
        while len(listening) < 3:
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError(f"Azurite exited early (code {self._proc.poll()})")
            if m := _LISTENING.search(line):
                self.ports[m.group(1)] = int(m.group(2))
                listening.add(m.group(1))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("Azurite did not start in time")
        # keep draining its output so a full pipe never blocks it
        threading.Thread(target=self._proc.stdout.read, daemon=True).start()
        return self

    def stop(self) -> None:
        self._end()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def wait(self) -> None:
        """Until the process has exited (e.g. after a kill)."""
        if self._proc is not None:
            self._proc.wait()

    def restart(self) -> Self:
        """Stop it (if it still runs) and start it again on the same ports, with the same data on disk."""
        self._end()
        return self.start()

    def _end(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:   # in memory there is nothing to keep; on disk it flushes its metadata as it closes
                self._proc.wait(15 if self.location is not None else 2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
