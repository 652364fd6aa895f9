"""`python -m local.emulator --topology FILE [--port 0] [--ready-file PATH] [--time-scale X] [--seed N]`.

When listening it writes `{"base_url", "ca_file"}` to the ready file (write + atomic rename), so a parent
process can find it; SIGTERM or SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path

from .server import EmulatorServer
from .state import Topology


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.emulator", description=__doc__)
    parser.add_argument("--topology", required=True, help="JSON file: {\"accounts\": [...]}")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ready-file", help="where to write {base_url, ca_file} once listening")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = EmulatorServer(Topology.coerce(args.topology), time_scale=args.time_scale, seed=args.seed,
                            port=args.port, host=args.host)
    with server:
        ready = {"base_url": server.base_url, "ca_file": server.ca_file, "pid": os.getpid()}
        if args.ready_file:
            target = Path(args.ready_file)
            partial = target.with_name(target.name + ".tmp")
            partial.write_text(json.dumps(ready), encoding="utf-8")
            os.replace(partial, target)
        print(json.dumps(ready), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
