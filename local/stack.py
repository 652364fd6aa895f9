"""The whole one-machine stack: Azurite, the hub/spoke emulator and the dev host, on free loopback ports.

`with LocalStack() as stack:` starts all three and always stops them (exceptions, Ctrl-C). The dev host
runs supervised, as the Functions runtime restarts a crashed host: if it exits, it is started again
(chaos uses that: the host exits once mid-run, the first restart drops `--exit-after`). With `data_dir`,
Azurite keeps its data on disk there, so `restart("azurite")` (or a killed Azurite that `revive` starts
again) loses no run; `restart(name)` kills one process (SIGKILL, as OOM or scale-in does) and starts it
again on the same ports: the faults of a real deployment, repeatable.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from local.azurite import Azurite
from local.emulator.control import ControlClient
from local.settings import DEMO_SPOKES, emulator_topology, local_env

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
CHAOS_FAULTS = {"rate_429": 0.08, "rate_500": 0.07}   # ≈ 15 % of emulator calls
MAX_QUICK_RESTARTS = 5                                # a host that keeps dying at start-up is broken, not chaotic


class StackError(RuntimeError):
    """A part of the stack did not start or keeps failing; the message says which and where its log is."""


class LocalStack:
    def __init__(self, *, chaos: bool = False, exit_after: int = 6, time_scale: float = 1.0,
                 tick_scale: float | None = None, spokes: Path = DEMO_SPOKES, log_dir: Path | None = None,
                 env_overrides: Mapping[str, str] | None = None, devhost_args: tuple[str, ...] = (),
                 data_dir: Path | None = None, webhooks: bool = True) -> None:
        self.chaos = chaos
        self.webhooks = webhooks   # register the app's webhook route with the emulator's hub (push first)
        self.exit_after = exit_after
        self.time_scale = time_scale
        self.tick_scale = tick_scale
        self.spokes = Path(spokes)
        self.env_overrides = dict(env_overrides or {})
        self.devhost_args = devhost_args
        self.data_dir = Path(data_dir) if data_dir else None   # Azurite's data, on disk (None: in memory)
        self._workdir = Path(tempfile.mkdtemp(prefix="ftops-stack-"))
        self._keep_logs = log_dir is not None      # otherwise the logs go with the temp folder at stop()
        self.log_dir = Path(log_dir) if log_dir else self._workdir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.azurite: Azurite | None = None
        self.emulator_url = ""
        self.emulator_ca = ""
        self.env: dict[str, str] = {}
        self.http_port = _free_port()      # the dev host serves the app's HTTP triggers here (kept over restarts)
        self.devhost_restarts = 0
        self.devhost_error: str | None = None
        self._emulator: subprocess.Popen[bytes] | None = None
        self._devhost: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._deps: Any = None

    # --- lifecycle ----------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalStack:
        self.azurite = Azurite(self.data_dir).start()
        self._start_emulator()
        self.env = local_env(storage_connection=self.azurite.connection_string, emulator_url=self.emulator_url,
                             ca_file=self.emulator_ca, spokes=self.spokes, **self.env_overrides)
        self.deps()                     # creates containers and tables before anything is dropped
        self._register_webhook(self.deps())   # before the chaos faults: set up as an operator would, once
        if self.chaos:
            # short locks: messages a crashed host held come back quickly
            self.env.setdefault("DEVHOST_LOCK_SECONDS", "15")
            self.set_faults(CHAOS_FAULTS)
        self._start_devhost(first=True)
        self._supervisor = threading.Thread(target=self._supervise, name="devhost-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def stop(self) -> None:
        """Stop everything started, in reverse order; safe to call twice and after a failed start."""
        self._stopping.set()
        _terminate(self._devhost, "dev host", timeout=6)   # it gives its invocations 3 s, then exits
        if self._supervisor is not None:
            self._supervisor.join(5)
        _terminate(self._devhost, "dev host", timeout=6)   # one the supervisor may have restarted meanwhile
        _terminate(self._emulator, "emulator")
        if self.azurite is not None:
            self.azurite.stop()
        self._devhost = self._emulator = None
        self.azurite = None
        shutil.rmtree(self._workdir / "run" if self._keep_logs else self._workdir, ignore_errors=True)

    # --- what callers use ---------------------------------------------------------------------------------
    def deps(self) -> Any:
        """The app's real dependencies, built from the same settings the dev host runs with."""
        if self._deps is None:
            from shared.app.bootstrap import build_deps
            from shared.run.config import Settings
            self._deps = build_deps(Settings.from_env(self.env))
        return self._deps

    @property
    def emulator_control(self) -> ControlClient:
        """The running emulator's control API (made on each use: a restarted emulator has another CA file)."""
        return ControlClient(self.emulator_url, self.emulator_ca)

    def emulator_state(self) -> dict[str, Any]:
        return self.emulator_control.state()

    def set_faults(self, faults: Mapping[str, Any]) -> dict[str, Any]:
        return self.emulator_control.faults(**faults)

    def emulator_requests(self, *, clear: bool = False) -> list[dict[str, Any]]:
        """The emulator's log of hub and spoke requests (method, path, status, time); `clear` empties it."""
        return self.emulator_control.call("DELETE" if clear else "GET", "requests")["requests"]  # type: ignore[no-any-return]

    def check_alive(self) -> None:
        """Raise if a part of the stack died for good (the demo polls this while it waits)."""
        if self.devhost_error:
            raise StackError(self.devhost_error)
        if self._emulator is not None and self._emulator.poll() is not None:
            raise StackError(f"the emulator exited (code {self._emulator.returncode}); "
                             f"log: {self.log_dir / 'emulator.log'}")

    PROCESSES = ("devhost", "emulator", "azurite")

    def pids(self) -> dict[str, int | None]:
        return {"devhost": self._devhost.pid if self._devhost else None,
                "emulator": self._emulator.pid if self._emulator else None,
                "azurite": self.azurite.pid if self.azurite else None}

    def restart(self, name: str) -> None:
        """Kill one process outright and have it running again: the dev host is restarted by its supervisor
        (what the Functions runtime does), the emulator on its same port; Azurite is stopped (it flushes its
        data to disk) and started again on its same ports."""
        if name not in self.PROCESSES:
            raise StackError(f"no process {name!r} in the stack; one of {', '.join(self.PROCESSES)}")
        if name == "azurite" and self.azurite is not None:
            # stopped, not killed: Azurite writes its metadata to disk every few seconds (LokiJS autosave), so a
            # SIGKILL would lose what storage had acknowledged, which Azure Storage never does
            self.azurite.restart()
            return
        pid = self.pids()[name]
        if pid is not None:
            _kill(pid)
        if name == "emulator" and self._emulator is not None:
            self._emulator.wait()
        if name != "devhost":
            self.revive()

    def revive(self) -> list[str]:
        """Start again what died of the emulator and Azurite (the dev host has its own supervisor)."""
        started = []
        if self.azurite is not None and not self.azurite.alive():
            self.azurite.restart()
            started.append("azurite")
        if self._emulator is not None and self._emulator.poll() is not None:
            self._emulator.wait()
            trusted = self.emulator_ca
            self._start_emulator(port=int(self.emulator_url.rsplit(":", 1)[1].split("/")[0]))
            # a new throw-away CA: written where every client was told to look, and the dev host (whose
            # clients hold the old one) restarted to load it
            shutil.copyfile(self.emulator_ca, trusted)
            self.emulator_ca = trusted
            # the new emulator knows no webhook endpoint: registered again, the restarted dev host gets the new secret
            from shared.app.bootstrap import build_deps
            from shared.run.config import Settings
            self._register_webhook(build_deps(Settings.from_env(self.env)))
            if self._devhost is not None:
                _kill(self._devhost.pid)
            started.append("emulator")
        for name in started:
            log.warning("%s was not running; started again on the same ports", name)
        return started

    @property
    def webhook_url(self) -> str:
        """The app's webhook route as the dev host serves it (functions/webhooks.py)."""
        return f"{self.api_url}/hub/webhooks"

    def _register_webhook(self, deps: Any) -> None:
        """The hub (the emulator) delivers fine-tuning job events to the dev host: registered as
        infra/scripts/register-webhook.sh does in Azure, its secret handed to the dev host's settings."""
        if not self.webhooks:
            self.env.pop("HUB_WEBHOOK_SECRET", None)
            return
        from shared.azure.webhook_endpoints import register
        registration = register(deps, self.webhook_url, new_secret=True)
        if registration.secret:
            self.env["HUB_WEBHOOK_SECRET"] = registration.secret

    @property
    def api_url(self) -> str:
        """The operator API as the dev host serves it (`func start` would say http://localhost:7071/api)."""
        return f"http://127.0.0.1:{self.http_port}/api"

    def wait_for_api(self, timeout: float = 30.0) -> None:
        """Block until the dev host answers HTTP (it imports the app first)."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                urllib.request.urlopen(f"{self.api_url}/", timeout=2)
                return
            except urllib.error.HTTPError:
                return          # it answered (404: no function there, so nothing is audited): it is up
            except OSError:
                if time.monotonic() > deadline:
                    raise StackError(f"the dev host did not serve HTTP in {timeout:.0f} s; log: {self.devhost_log}")
                time.sleep(0.2)

    @property
    def devhost_log(self) -> Path:
        return self.log_dir / "devhost.log"

    # --- emulator -----------------------------------------------------------------------------------------
    def _start_emulator(self, timeout: float = 30.0, *, port: int = 0) -> None:
        run = self._workdir / "run"
        run.mkdir(exist_ok=True)
        topology, ready = run / "topology.json", run / "emulator.ready.json"
        ready.unlink(missing_ok=True)
        topology.write_text(json.dumps(emulator_topology(self.spokes)), encoding="utf-8")
        with open(self.log_dir / "emulator.log", "ab") as out:
            self._emulator = subprocess.Popen(
                [sys.executable, "-m", "local.emulator", "--topology", str(topology), "--port", str(port),
                 "--ready-file", str(ready), "--time-scale", str(self.time_scale)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)   # Ctrl-C reaches us only; we stop it in order
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self._emulator.poll() is not None:
                raise StackError(f"the emulator exited at start (code {self._emulator.returncode}); "
                                 f"log: {self.log_dir / 'emulator.log'}")
            if time.monotonic() > deadline:
                raise StackError(f"the emulator did not start in {timeout:.0f} s; log: {self.log_dir / 'emulator.log'}")
            time.sleep(0.05)
        info = json.loads(ready.read_text(encoding="utf-8"))
        self.emulator_url, self.emulator_ca = info["base_url"], info["ca_file"]

    # --- dev host -----------------------------------------------------------------------------------------
    def _start_devhost(self, *, first: bool) -> None:
        args = [sys.executable, "-m", "local.devhost", "--parent-pid", str(os.getpid()),
                "--http-port", str(self.http_port), *self.devhost_args]
        if self.tick_scale:
            args += ["--tick-scale", str(self.tick_scale)]
        if self.chaos:
            args.append("--chaos")
            if first:                   # exits once: the restarted host runs on without --exit-after
                args += ["--exit-after", str(self.exit_after)]
        with open(self.devhost_log, "ab") as out:
            self._devhost = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **self.env}, stdout=out,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)

    def _supervise(self) -> None:
        quick_exits = 0
        while not self._stopping.is_set():
            proc = self._devhost
            if proc is None:
                return
            started = time.monotonic()
            while proc.poll() is None:
                if self._stopping.wait(0.2):
                    return
            if self._stopping.is_set():
                return
            quick_exits = quick_exits + 1 if time.monotonic() - started < 5 else 0
            if quick_exits >= MAX_QUICK_RESTARTS:
                self.devhost_error = (f"the dev host keeps exiting at start (code {proc.returncode}); "
                                      f"log: {self.devhost_log}")
                log.error("%s", self.devhost_error)
                return
            log.warning("dev host exited (code %s); restarting it", proc.returncode)
            self.devhost_restarts += 1
            if not self._stopping.is_set():
                self._start_devhost(first=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kill(pid: int) -> None:
    import signal
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _terminate(proc: subprocess.Popen[bytes] | None, name: str, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop in %.0f s; killing it", name, timeout)
        proc.kill()
        proc.wait(5)
