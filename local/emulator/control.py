"""A client of the emulator's control API (/_emulator/*): the standard library only, so that a process that only
drives a running emulator (the demo's LocalStack, a test, a tool) does not import the server (uvicorn, the app)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any


class ControlClient:
    """Thin client for /_emulator/*; stdlib only so any test or tool can use it."""

    def __init__(self, base_url: str, ca_file: str) -> None:
        self.base_url = base_url
        self._ssl = ssl.create_default_context(cafile=ca_file)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}/_emulator/{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self._ssl, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"emulator control {method} {path}: {exc.code} {exc.read().decode()}") from exc

    def state(self) -> dict[str, Any]:
        return self.call("GET", "state")  # type: ignore[no-any-return]

    def faults(self, **faults: Any) -> dict[str, Any]:
        return self.call("POST", "faults", faults)  # type: ignore[no-any-return]

    def config(self, **durations: Any) -> dict[str, Any]:
        return self.call("POST", "config", durations)  # type: ignore[no-any-return]

    def advance(self, seconds: float) -> float:
        return float(self.call("POST", "advance", {"seconds": seconds})["now"])

    def add_account(self, **account: Any) -> dict[str, Any]:
        return self.call("POST", "accounts", account)  # type: ignore[no-any-return]

    def vanish(self, account: str, deployment: str) -> None:
        self.call("POST", "vanish", {"account": account, "deployment": deployment})

    def reset(self) -> None:
        self.call("POST", "reset", {})

    def requests(self) -> list[dict[str, Any]]:
        return self.call("GET", "requests")["requests"]  # type: ignore[no-any-return]

    def request_stats(self) -> dict[str, Any]:
        """`{in_flight, max_in_flight, max_in_flight_by_account}` since the last clear_requests()."""
        answer = self.call("GET", "requests")
        return {k: v for k, v in answer.items() if k != "requests"}

    def clear_requests(self) -> None:
        """Forget the logged requests and restart the in-flight maxima."""
        self.call("DELETE", "requests")
