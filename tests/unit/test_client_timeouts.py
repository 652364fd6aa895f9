"""Every SDK client the app builds waits a bounded time: a hung hub or storage account fails the call (which
is retried) instead of holding a worker, or the poll tick, for as long as it hangs (the SDKs' defaults:
openai 600 s per try, azure-core 300 s per read)."""
from __future__ import annotations

from typing import Any

from fakes import settings_for_tests

from shared.app.bootstrap import CONNECT_TIMEOUT_S, Deps, storage_clients


def _connection(client: Any) -> Any:
    pipeline = client._client._client._pipeline if hasattr(client._client, "_client") else client._pipeline
    return pipeline._transport.connection_config


def test_storage_hub_chat_and_arm_clients_all_wait_a_bounded_time() -> None:
    settings = settings_for_tests()
    blobs, tables = storage_clients(settings, lambda **_: None)
    for client in (blobs, tables):
        config = _connection(client)
        assert config.timeout == CONNECT_TIMEOUT_S and config.read_timeout <= 120
    deps = Deps(settings=settings, blobs=blobs, registry=None, publisher=None,  # type: ignore[arg-type]
                credential=lambda **_: object())
    for client in (deps.hub_client(), deps.openai_client()):
        assert client.timeout.connect == CONNECT_TIMEOUT_S and client.timeout.read <= 300
    arm = deps.arm_client("00000000-0000-0000-0000-000000000000")
    config = arm._client._pipeline._transport.connection_config
    assert config.timeout == CONNECT_TIMEOUT_S and config.read_timeout <= 120
