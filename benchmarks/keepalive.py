"""Keep-alive tick for 200 deployments over 40 spokes (five each, the default quota) with 200 ms added
latency per call, against the emulator over HTTPS with the app's real clients. Serial would be ~40 s;
the target is ≤ 5 s. The registry is an in-memory stand-in so the figure is the tick's own cost."""
from __future__ import annotations

import copy
import functools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.app.bootstrap import Deps, _credential
from shared.run.config import HubSettings, Settings
from shared.run.topology import load_topology
from shared.store.registry import ConcurrencyError, DeploymentRecord, Registry, RunRecord

HUB = {"name": "bench-hub", "subscription": "bench-sub-hub", "resource_group": "rg-hub", "region": "eastus",
       "tenant": "tenant-bench", "role": "hub"}
REGIONS = ("eastus", "swedencentral", "westeurope", "northcentralus")


class MemoryRegistry:
    """The slice of shared.store.registry.Registry keep-alive uses, with the same ETag rule."""

    def __init__(self) -> None:
        self.slots: dict[str, DeploymentRecord] = {}
        self.audits: list[tuple[str, str]] = []
        self._n = 0

    def list_deployments(self, *, run_id: str | None = None, state: str | None = None) -> list[DeploymentRecord]:
        return [copy.copy(r) for r in self.slots.values()
                if (run_id is None or r.run_id == run_id) and (state is None or r.state == state)]

    def get_deployment(self, environment: str, account: str, deployment: str) -> DeploymentRecord | None:
        found = self.slots.get(f"{environment}|{account}|{deployment}")
        return copy.copy(found) if found else None

    def save_deployment(self, record: DeploymentRecord) -> DeploymentRecord:
        current = self.slots.get(record.slot)
        if (current.etag if current else None) != record.etag:
            raise ConcurrencyError(record.slot)
        self._n += 1
        record.etag = str(self._n)
        self.slots[record.slot] = copy.copy(record)
        return record

    update_deployment = Registry.update_deployment   # the real retry loop, over this stand-in's get and save

    def get_run(self, run_id: str) -> RunRecord:
        """Every slot belongs to one run that reached its end: the tick plans retirement, retires nothing."""
        return RunRecord(run_id=run_id, source="bench", state="deployed:bench", environments=["bench"])

    def audit(self, run_id: str, action: str, **_: Any) -> None:
        self.audits.append((run_id, action))


class NullPublisher:
    def send(self, queue: str, event: Any, *, delay_seconds: float = 0) -> None:
        pass


def fleet(spokes: int) -> list[dict[str, str]]:
    return [{"name": f"bench-spoke-{i:02d}", "subscription": f"bench-sub-{i % 4}", "resource_group": "rg-bench",
             "region": REGIONS[i % len(REGIONS)], "tenant": "tenant-bench", "role": "spoke"} for i in range(spokes)]


def build(server: Any, accounts: list[dict[str, str]], *, concurrency: int = 16) -> Deps:
    """Deps against `server` for a topology of one environment holding `accounts`."""
    topology = {"environments": [{"name": "bench", "requires_approval": False, "targets": [
        {"subscription": a["subscription"], "resource_group": a["resource_group"], "account": a["name"],
         "region": a["region"], "tenant": a["tenant"], "sku": "GlobalStandard", "capacity": 1} for a in accounts]}]}
    hub_id = (f"/subscriptions/{HUB['subscription']}/resourceGroups/{HUB['resource_group']}"
              f"/providers/Microsoft.CognitiveServices/accounts/{HUB['name']}")
    settings = Settings(storage_connection="unused", blob_service_uri=None, queue_service_uri=None,
                        table_service_uri=None, transport="local", servicebus_namespace=None,
                        hub=HubSettings(endpoint=server.endpoint(HUB["name"]), resource_id=hub_id,
                                        tenant=HUB["tenant"]),
                        arm_endpoint=server.base_url, credential="local-dev", ca_bundle=server.ca_file,
                        spokes_config=json.dumps(topology), keepalive_concurrency=concurrency)
    return Deps(settings=settings, blobs=None, registry=MemoryRegistry(),  # type: ignore[arg-type]
                publisher=NullPublisher(), credential=functools.partial(_credential, "local-dev"),
                topology=load_topology(settings))


def populate(deps: Deps, per_spoke: int, model: str = "gpt-4.1-mini") -> int:
    """`per_spoke` deployments on every spoke through ARM, and their slots in the registry."""
    env = deps.require_topology().environments[0]
    jobs = [(t, f"bench-{j}") for t in env.targets for j in range(per_spoke)]

    def one(job: tuple[Any, str]) -> None:
        target, name = job
        deps.spokes.deploy(target, name, model, tags={"run_id": "bench"})
        deps.registry.save_deployment(DeploymentRecord(
            environment=env.name, account=target.account, deployment=name, region=target.region,
            subscription=target.subscription, resource_group=target.resource_group, run_id="bench", model=model))

    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(one, jobs))
    return len(jobs)


def main(spokes: int = 40, per_spoke: int = 5, latency_ms: float = 200.0, concurrency: int = 16) -> float:
    from local.emulator.server import EmulatorServer
    from shared.stages.keepalive import keepalive_tick
    accounts = fleet(spokes)
    with EmulatorServer({"accounts": [HUB, *accounts]}, seed=1) as server:
        deps = build(server, accounts, concurrency=concurrency)
        total = populate(deps, per_spoke)
        keepalive_tick(deps)   # warm: endpoints looked up, TLS connections open (a timer process stays warm)
        server.control.faults(latency_ms=latency_ms)
        started = time.perf_counter()
        summary = keepalive_tick(deps)
        elapsed = time.perf_counter() - started
    serial = total * latency_ms / 1000
    print(f"keep-alive tick: {summary.ok}/{total} deployments over {spokes} spokes, +{latency_ms:.0f} ms per call, "
          f"concurrency {concurrency}: {elapsed:.2f} s (serial ≥ {serial:.0f} s; target ≤ 5 s)")
    return elapsed


if __name__ == "__main__":
    main()
