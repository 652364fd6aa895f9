"""One HTTPS server that plays the Azure OpenAI hub and every spoke (data plane + ARM) for local runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .control import ControlClient
from .state import Account, Topology

if TYPE_CHECKING:
    from .server import EmulatorServer

__all__ = ["Account", "ControlClient", "EmulatorServer", "Topology"]


def __getattr__(name: str) -> Any:
    """EmulatorServer on first use: it imports uvicorn and the app, which a process that only calls a running
    emulator (ControlClient) does without."""
    if name == "EmulatorServer":
        from .server import EmulatorServer

        return EmulatorServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
