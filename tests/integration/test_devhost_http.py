"""The dev host's HTTP front: routes as the Functions host binds them (`/api/<route>`, route parameters,
methods), the function's response passed back as it is."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from local.devhost.http import HttpFront
from local.devhost.triggers import Trigger, route_pattern

pytestmark = pytest.mark.integration


def echo(req: func.HttpRequest) -> func.HttpResponse:
    body = {"route": dict(req.route_params), "method": req.method, "auth": req.headers.get("Authorization"),
            "body": req.get_body().decode(), "query": dict(req.params)}
    return func.HttpResponse(json.dumps(body), status_code=207, mimetype="application/json",
                             headers={"X-Seen": "yes"})


def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the function failed")


@pytest.fixture
def front() -> Iterator[HttpFront]:
    triggers = [Trigger("approve", "http", "req", echo, {"route": "runs/{run_id}/approve"},
                        route=route_pattern("runs/{run_id}/approve"), methods=("POST",)),
                Trigger("boom", "http", "req", boom, {"route": "boom"}, route=route_pattern("boom"), methods=("GET",))]
    server = HttpFront(triggers, port=0).start()
    yield server
    server.stop()


def call(front: HttpFront, method: str, path: str, body: bytes | None = None) -> tuple[int, Any, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{front.port}{path}", method=method, data=body,
                                     headers={"Authorization": "Bearer abc"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read()), answer.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def test_a_route_binds_its_parameters_and_the_functions_answer_goes_back(front: HttpFront) -> None:
    status, body, headers = call(front, "POST", "/api/runs/run-7/approve?x=1", b'{"environment": "prod"}')
    assert status == 207 and headers["X-Seen"] == "yes"
    assert body == {"route": {"run_id": "run-7"}, "method": "POST", "auth": "Bearer abc",
                    "body": '{"environment": "prod"}', "query": {"x": "1"}}


def test_wrong_method_unknown_route_and_a_failing_function(front: HttpFront) -> None:
    assert call(front, "GET", "/api/runs/run-7/approve")[0] == 405
    assert call(front, "POST", "/api/runs/run-7/approve/extra")[0] == 404
    assert call(front, "POST", "/runs/run-7/approve")[0] == 404          # outside the route prefix
    status, body, _ = call(front, "GET", "/api/boom")
    assert status == 500 and "dev host log" in body["error"]["message"]


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/api/runs/run-7/approve", 405), ("DELETE", "/api/runs/run-7/approve", 405),
    ("PROPFIND", "/api/runs/run-7/approve", 405), ("BREW", "/api/nothing-here", 404),
    ("OPTIONS", "/api/runs/run-7/approve", 405), ("POST", "/api/runs/run-7/approve/extra", 404),
    ("POST", "/elsewhere", 404),
])
def test_what_no_function_answers_is_in_the_apis_error_shape_whatever_the_verb(
        front: HttpFront, method: str, path: str, status: int) -> None:
    answer, body, headers = call(front, method, path)
    assert answer == status and body == {"error": {"status": status, "message": body["error"]["message"]}}
    assert headers["Content-Type"] == "application/json" and method in body["error"]["message"]
    if status == 405:
        assert headers["Allow"] == "POST"


def raw_exchange(front: HttpFront, request: bytes) -> tuple[str, str]:
    """(head, body) of the answer to bytes sent as they are: read to the end of the body or of the connection."""
    import socket
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as raw:
        raw.sendall(request)
        reply = b""
        while True:
            head, sep, body = reply.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if sep and length is not None and len(body) >= length:
                return head.decode(), body[:length].decode()
            chunk = raw.recv(65536)
            if not chunk:   # closed: an HTTP/0.9 answer is the body alone
                return (head.decode(), body.decode()) if sep and length is not None else ("", reply.decode())
            reply += chunk


def test_a_request_the_server_cannot_read_is_answered_in_the_apis_error_shape(front: HttpFront) -> None:
    head, body = raw_exchange(front, b"POST /api/runs/r/approve HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n")
    assert head.startswith("HTTP/1.1 400") and json.loads(body)["error"]["status"] == 400
    # not HTTP/1.x: the server answers as to HTTP/0.9, the body alone, still the API's shape
    _, body = raw_exchange(front, b"NOT A REQUEST LINE AT ALL\r\n\r\n")
    assert json.loads(body)["error"] == {"status": 400, "message": "Bad request version ('ALL')"}
