"""The dev host's HTTP front: the app's HTTP triggers under the host's route prefix (`/api`), as `func
start` serves them on http://localhost:7071. Plain HTTP on loopback only; in Azure the platform terminates
TLS. Each request becomes an `azure.functions.HttpRequest` with its route parameters, and the function's
`HttpResponse` goes back as it is."""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from local.devhost.triggers import Trigger

log = logging.getLogger("local.devhost")
MAX_BODY = 1024 * 1024   # the host refuses larger bodies long before this matters for the operator API


class HttpFront:
    def __init__(self, triggers: Sequence[Trigger], *, port: int, prefix: str = "api", host: str = "127.0.0.1") -> None:
        self.triggers = [t for t in triggers if t.kind == "http"]
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                front.serve(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http %s", format % args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self) -> HttpFront:
        self._thread = threading.Thread(target=self.server.serve_forever, name="devhost-http", daemon=True)
        self._thread.start()
        for t in self.triggers:
            log.info("serving %s: %s %s%s/%s", t.function_name, ",".join(t.methods), self.url, "",
                     t.binding.get("route"))
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        path = parts.path
        status, body, headers = 404, b'{"error": "no function serves this route"}', {"Content-Type": "application/json"}
        if path.startswith(self.prefix + "/"):
            route = path[len(self.prefix) + 1:].strip("/")
            matches = [(t, m) for t in self.triggers if (m := t.route.match(route) if t.route else None)]
            allowed = [(t, m) for t, m in matches if handler.command in t.methods]
            if matches and not allowed:
                status, body = 405, b'{"error": "method not allowed"}'
            elif allowed:
                status, body, headers = self._invoke(handler, *allowed[0], query=dict(parse_qsl(parts.query)))
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _invoke(self, handler: BaseHTTPRequestHandler, t: Trigger, match: Any, *, query: dict[str, str]
                ) -> tuple[int, bytes, dict[str, str]]:
        length = int(handler.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return 413, b'{"error": "request body too large"}', {"Content-Type": "application/json"}
        data = handler.rfile.read(length) if length else b""
        request = func.HttpRequest(method=handler.command, url=f"http://{handler.headers.get('Host')}{handler.path}",
                                   headers=dict(handler.headers.items()), params=query,
                                   route_params=match.groupdict(), body=data)
        try:
            response = t.func(**{t.arg_name: request})
        except Exception:
            log.exception("function %s raised", t.function_name)
            return 500, json.dumps({"error": "the function failed; see the dev host log"}).encode(), {
                "Content-Type": "application/json"}
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        headers.setdefault("Content-Type", response.mimetype or "text/plain")
        return response.status_code, response.get_body() or b"", headers
