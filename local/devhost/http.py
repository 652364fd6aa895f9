"""The dev host's HTTP front: the app's HTTP triggers under the host's route prefix (`/api`), as `func
start` serves them on http://localhost:7071. Plain HTTP on loopback only; in Azure the platform terminates
TLS. Each request becomes an `azure.functions.HttpRequest` with its route parameters, and the function's
`HttpResponse` goes back as it is. What no function answers (a route nobody serves, a verb no route takes,
a body too large, a malformed request, a function that raised) is answered in the operator API's error shape,
`{"error": {"status", "message"}}`, whatever the verb."""
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
JSON = {"Content-Type": "application/json"}


def error_body(status: int, message: str) -> bytes:
    """The operator API's error shape (shared.operator.api), for what no function answered."""
    return json.dumps({"error": {"status": status, "message": message}}).encode()


class HttpFront:
    def __init__(self, triggers: Sequence[Trigger], *, port: int, prefix: str = "api", host: str = "127.0.0.1") -> None:
        self.triggers = [t for t in triggers if t.kind == "http"]
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                front.serve(self)

            def __getattr__(self, name: str) -> Any:
                if name.startswith("do_"):   # every verb, invented ones included, reaches the routes
                    return self.do_GET
                raise AttributeError(name)

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                """A request the server could not read (bad request line, headers): the API's shape, not HTML."""
                body = error_body(code, message or self.responses.get(code, ("error",))[0])
                self.send_response(code, message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                    self.wfile.write(body)

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
        shown = path[:120] + ("…" if len(path) > 120 else "")
        status, headers = 404, dict(JSON)
        body = error_body(404, f"no function serves {handler.command[:16]} {shown}")
        if path.startswith(self.prefix + "/"):
            route = path[len(self.prefix) + 1:].strip("/")
            matches = [(t, m) for t in self.triggers if (m := t.route.match(route) if t.route else None)]
            allowed = [(t, m) for t, m in matches if handler.command in t.methods]
            if matches and not allowed:
                verbs = sorted({v for t, _ in matches for v in t.methods})
                status, headers = 405, {**JSON, "Allow": ", ".join(verbs)}
                body = error_body(405, f"{handler.command[:16]} is not allowed on {shown}: {', '.join(verbs)}")
            elif allowed:
                status, body, headers = self._invoke(handler, *allowed[0], query=dict(parse_qsl(parts.query)))
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":   # a HEAD answer has the headers of a GET and no body
            handler.wfile.write(body)

    def _invoke(self, handler: BaseHTTPRequestHandler, t: Trigger, match: Any, *, query: dict[str, str]
                ) -> tuple[int, bytes, dict[str, str]]:
        try:
            length = int(handler.headers.get("Content-Length") or 0)
        except ValueError:
            return 400, error_body(400, "Content-Length is not a number"), dict(JSON)
        if length > MAX_BODY:
            return 413, error_body(413, f"request body over {MAX_BODY} bytes"), dict(JSON)
        data = handler.rfile.read(length) if length else b""
        request = func.HttpRequest(method=handler.command, url=f"http://{handler.headers.get('Host')}{handler.path}",
                                   headers=dict(handler.headers.items()), params=query,
                                   route_params=match.groupdict(), body=data)
        try:
            response = t.func(**{t.arg_name: request})
        except Exception:
            log.exception("function %s raised", t.function_name)
            return 500, error_body(500, "the function failed; see the dev host log"), dict(JSON)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        headers.setdefault("Content-Type", response.mimetype or "text/plain")
        return response.status_code, response.get_body() or b"", headers
