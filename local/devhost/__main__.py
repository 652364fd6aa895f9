"""`python -m local.devhost [--app function_app:app] [--chaos] [--exit-after N] [--tick-scale X]`.

Settings come from the environment, as the Functions host reads local.settings.json `Values`;
DEVHOST_LOCK_SECONDS, DEVHOST_MAX_DELIVERY_COUNT, DEVHOST_QUEUE_CONCURRENCY, DEVHOST_TICK_SCALE tune it.
SIGTERM/SIGINT stop it after the invocations in flight; a chaos exit returns 75 so a supervisor restarts it.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from local.devhost.host import CHAOS_EXIT_CODE, DevHost, HostOptions, exit_now, invocation, with_options
from local.devhost.triggers import load_app

ROOT = Path(__file__).resolve().parents[2]


class _InvocationFilter(logging.Filter):
    """Every log line names the function and message it belongs to, the app's own lines included."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.invocation = invocation.get()
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_InvocationFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s [%(invocation)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("azure", "httpx", "httpx2", "openai", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.devhost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--chaos", action="store_true", help="deliver everything twice; exit once (--exit-after)")
    parser.add_argument("--exit-after", type=int, help="exit after N blob/queue deliveries (chaos)")
    parser.add_argument("--exit-mode", choices=("crash", "drain"), default="crash")
    parser.add_argument("--tick-scale", type=float, help="run timer schedules X times faster")
    parser.add_argument("--lock-seconds", type=int)
    parser.add_argument("--http-port", type=int, help="serve the HTTP triggers on this loopback port (0: any)")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone (the supervisor)")
    parser.add_argument("--log-level", default=os.environ.get("DEVHOST_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)

    configure_logging(args.log_level)
    log = logging.getLogger("local.devhost")
    sys.path.insert(0, os.getcwd())   # the app module is found where the host starts, as `func start` does
    options = with_options(HostOptions.from_env(os.environ, ROOT / "host.json"), chaos=args.chaos or None,
                           exit_after=args.exit_after, exit_mode=args.exit_mode, tick_scale=args.tick_scale,
                           lock_seconds=args.lock_seconds, http_port=args.http_port)
    host = DevHost(load_app(args.app), os.environ, options)
    if options.exit_mode == "crash":
        host.on_exit_request = exit_now
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: host.request_stop())
    if args.parent_pid:
        threading.Thread(target=_watch_parent, args=(args.parent_pid, host), daemon=True).start()
    log.info("dev host serving %d functions (chaos=%s, exit_after=%s)", len(host.triggers), options.chaos,
             options.exit_after)
    host.start()
    host.wait()
    log.info("dev host stopping")
    host.stop(timeout=3)
    code = CHAOS_EXIT_CODE if host.exit_requested else 0
    logging.shutdown()
    os._exit(code)   # don't let an invocation stuck in SDK retries hold the process open at exit


def _watch_parent(pid: int, host: DevHost) -> None:
    # started in its own session, the host would outlive a supervisor that was killed: don't
    while not host.wait(1.0):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            logging.getLogger("local.devhost").warning("supervisor %d is gone; stopping", pid)
            host.request_stop()
            return
        except PermissionError:
            pass


if __name__ == "__main__":
    raise SystemExit(main())
