"""Who sets up the Azure Monitor exporter in a worker: the Functions Python worker or function_app.py, never both.

host.json's `telemetryMode` is `OpenTelemetry`. With `PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true` (set by
infra/main.bicep) the Python worker (azure-functions-runtime, `handle_event.worker_init_request`) calls
`configure_azure_monitor()` itself before it indexes the app and tells the host so, which then stops forwarding
the worker's logs; a second call from function_app.py would add a second exporter and send every record twice.
Without that setting (a local `func start` with a connection string) function_app.py sets the exporter up.
"""
from __future__ import annotations

from collections.abc import Mapping

WORKER_TELEMETRY_SETTING = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
_TRUE_LIKE = frozenset({"1", "true", "t", "yes", "y"})   # the worker's own reading of a true setting


def worker_exports_telemetry(env: Mapping[str, str]) -> bool:
    return env.get(WORKER_TELEMETRY_SETTING, "").strip().lower() in _TRUE_LIKE


def app_configures_telemetry(env: Mapping[str, str]) -> bool:
    """True when function_app.py must call `configure_azure_monitor()`: a connection string, and no worker doing it."""
    return bool(env.get(CONNECTION_SETTING)) and not worker_exports_telemetry(env)
