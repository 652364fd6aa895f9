"""The operator surfaces with 10,000 runs in the registry (Azurite): the first page of `GET runs`, of the
console's runs page and of `ftops status`, each timed (target <= 1 s). They page through the registry
(shared.store.registry.Registry.page_runs), so the time must not grow with the number of runs; reading every
run (`list_runs`, what they did before) is timed beside them for comparison.

The API and the console are called in-process as a verified Reader (the token check is the same for any
number of runs, and is left out)."""
from __future__ import annotations

import statistics
import time
from typing import Any

from shared.azure.access import Caller
from shared.operator import api
from shared.operator.console import ConsoleRequest, handle
from shared.operator.console.app import csrf_for
from shared.store.registry import RunRecord, _to_entity

RUNS = 10_000
READER = Caller(oid="oid-bench", tenant="t", name="Bench Reader", roles=frozenset({"Reader"}))


class _DirectApi:
    """The console's view of the operator API, answered in-process for a verified Reader."""

    def __init__(self, deps: Any, token: str) -> None:
        self.deps, self._token = deps, token

    def call(self, action: str, params: Any = None, body: Any = None) -> tuple[int, dict[str, Any]]:
        answer = api.ACTIONS[action](READER, dict(params or {}), b"", self.deps)
        return answer.status, answer.body

    def caller(self) -> Caller:
        return READER

    @property
    def form_token(self) -> str:
        return csrf_for(self._token)


def _runs(deps: Any, count: int) -> None:
    """`count` runs as the registry writes them (every field), 100 per entity group transaction."""
    from azure.data.tables import TableServiceClient
    table = TableServiceClient.from_connection_string(deps.settings.storage_connection).get_table_client(
        f"{deps.settings.table_prefix}runs")
    for start in range(0, count, 100):
        table.submit_transaction([("create", _to_entity(RunRecord(
            run_id=f"bench-{i:05d}-0123456789", source=f"datasets/bench-{i}/run.json", state="deployed:prod",
            environments=["dev", "test", "prod"], job_id=f"ftjob-{i}", job_status="succeeded",
            fine_tuned_model=f"gpt-4.1-mini-2025-04-14.ft-{i}", settings={"n_epochs": 3}), "run",
            f"bench-{i:05d}-0123456789")) for i in range(start, min(count, start + 100))])


def _seconds(fn: Any, repeat: int = 5) -> float:
    fn()   # first call: connections opened, not measured
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    from ftops_cli.status import collect
    from local.azurite import Azurite
    from local.emulator.server import EmulatorServer
    from local.settings import emulator_topology, isolated_deps

    with Azurite() as azurite, EmulatorServer(emulator_topology(), seed=11) as emulator:
        deps = isolated_deps(azurite, emulator)
        t0 = time.monotonic()
        _runs(deps, RUNS)
        print(f"operator surfaces with {RUNS:,} runs in Azurite (inserted in {time.monotonic() - t0:.1f} s); "
              "first page, median of 5 (target <= 1 s)")
        request = ConsoleRequest(method="GET", url="http://127.0.0.1:7071/api/console/", params={}, query={},
                                 headers={"Host": "127.0.0.1:7071", "Cookie": "ftops_console=bench.token.x"}, body=b"")
        rows = {
            "GET runs (100 per page)": lambda: api.list_runs(READER, {}, b"", deps),
            "console runs page (50 per page)": lambda: handle("runs", request, lambda: deps, _DirectApi),
            "ftops status (50 per page)": lambda: collect(deps),
            "for comparison: every run read (before)": lambda: deps.registry.list_runs(),
        }
        for label, fn in rows.items():
            print(f"  {label:<42} {_seconds(fn, 3 if 'every' in label else 5):6.3f} s", flush=True)


if __name__ == "__main__":
    main()
