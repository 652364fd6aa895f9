"""Run the emulator over HTTPS (throw-away trustme CA) in a background thread."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import trustme
import uvicorn

from .app import build_app
from .control import ControlClient
from .core import Emulator
from .state import Topology
from .webhooks import Dispatcher


class EmulatorServer:
    """The hub and every spoke on one HTTPS port. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        topology: Topology | dict[str, Any],
        *,
        time_scale: float = 1.0,
        seed: int = 0,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.emulator = Emulator(Topology.coerce(topology), time_scale=time_scale, seed=seed)
        self.host, self.port = host, port
        self._dir: Path | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self.ca_file = ""
        self._control: ControlClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dispatcher: Dispatcher | None = None

    @property
    def control(self) -> ControlClient:
        if self._control is None:
            raise RuntimeError("the emulator is not started")
        return self._control

    def endpoint(self, account: str) -> str:
        """The data-plane endpoint of an account (what `azure_endpoint` takes)."""
        return f"{self.base_url}/{account}"

    def start(self) -> Self:
        self._dir = Path(tempfile.mkdtemp(prefix="ftops-emulator-"))
        ca = trustme.CA(organization_name="ftops local emulator CA")
        ca_path, cert_path = self._dir / "ca.pem", self._dir / "server.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        # the server's key and chain in one PEM: uvicorn loads it with keyfile=None
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(cert_path))

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(build_app(self.emulator), ssl_certfile=str(cert_path), log_level="warning",
                                lifespan="off", access_log=False, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, args=(sock,), name="ftops-emulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.01)
        self.base_url, self.ca_file = f"https://{self.host}:{self.port}", str(ca_path)
        self._control = ControlClient(self.base_url, self.ca_file)
        self._dispatcher = Dispatcher(self.emulator).start()
        return self

    def _run(self, sock: socket.socket) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._server.serve(sockets=[sock]))  # type: ignore[union-attr]
        finally:
            self._loop.close()

    def _abort_connections(self) -> None:
        # SDK clients keep idle TLS connections open; closing them politely waits for a close_notify that
        # never comes, so a stop would hang for the graceful timeout. Abort them instead.
        for connection in list(self._server.server_state.connections) if self._server else []:
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()

    def stop(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.stop()
            self._dispatcher = None
        if self._server is not None:
            self._server.should_exit = self._server.force_exit = True
            if self._loop is not None and not self._loop.is_closed():
                try:
                    self._loop.call_soon_threadsafe(self._abort_connections)
                except RuntimeError:  # the loop closed meanwhile
                    pass
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._server = self._thread = self._dir = self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
