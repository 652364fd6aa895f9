"""Starts the pinned Azurite (npm) on free loopback ports, in memory; used by the demo and the tests."""
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
    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._workdir = tempfile.mkdtemp(prefix="ftops-azurite-")

    @property
    def connection_string(self) -> str:
        p = self.ports
        return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{p['Blob']}/{DEV_ACCOUNT};"
                f"QueueEndpoint=http://127.0.0.1:{p['Queue']}/{DEV_ACCOUNT};"
                f"TableEndpoint=http://127.0.0.1:{p['Table']}/{DEV_ACCOUNT};")

    def start(self, timeout: float = 120.0) -> Self:
        """Wait for its three ports. Generous: on a loaded machine (make test's parallel workers start one
        each) node alone can take half a minute; a broken Azurite exits, which is seen at once."""
        binary = ROOT / "node_modules" / ".bin" / "azurite"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run `make setup` (installs the pinned Azurite from npm)")
        self._proc = subprocess.Popen(
            [str(binary), "--inMemoryPersistence", "--skipApiVersionCheck", "--disableProductStyleUrl",
             "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
             "--blobPort", "0", "--queuePort", "0", "--tablePort", "0"],
            cwd=self._workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        assert self._proc.stdout is not None
        while len(self.ports) < 3:
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError(f"Azurite exited early (code {self._proc.poll()})")
            if m := _LISTENING.search(line):
                self.ports[m.group(1)] = int(m.group(2))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("Azurite did not start in time")
        # keep draining its output so a full pipe never blocks it
        threading.Thread(target=self._proc.stdout.read, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:   # in memory: nothing to flush, and Azurite can take 10 s to close politely
                self._proc.wait(2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
