"""One HTTPS server that plays the Azure OpenAI hub and every spoke (data plane + ARM) for local runs."""

from __future__ import annotations

from .server import ControlClient, EmulatorServer
from .state import Account, Topology

__all__ = ["Account", "ControlClient", "EmulatorServer", "Topology"]
