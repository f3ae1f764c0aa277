"""Tests for inspector.outputs.http: an aiohttp application on its own thread, bind errors, port freed at close."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from inspector.config.liveview import LiveViewConfig
from inspector.ops.connections import ConnectionMetrics
from inspector.outputs.http import HttpServer, OutputError
from tests.support import HTTP_TIMEOUT_S, http_get


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def application() -> web.Application:
    app = web.Application()
    app.router.add_get("/", hello)
    return app


def test_server_serves_until_closed_and_frees_its_port() -> None:
    server = HttpServer("liveview", application(), "127.0.0.1", 0)
    port = server.start()
    assert http_get(f"http://127.0.0.1:{port}/")[:2] == (200, b"hello")
    server.close()
    server.close()  # idempotent
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_a_port_in_use_is_an_error_naming_the_section_and_its_fields() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        server = HttpServer("results", application(), "127.0.0.1", port)
        with pytest.raises(
            OutputError, match=rf"results: cannot listen on 127.0.0.1:{port} \(results.bind_address/port\)"
        ):
            server.start()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT_S)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_connections_over_the_caps_get_503_and_silent_ones_are_closed_after_the_header_timeout() -> None:
    limits = LiveViewConfig(max_connections=6, max_connections_per_client=4, header_timeout_s=0.5)
    registry = CollectorRegistry()
    server = HttpServer("liveview", application(), "127.0.0.1", 0, limits, ConnectionMetrics(registry))
    port = server.start()
    try:
        held = [_connect(port) for _ in range(4)]
        with _connect(port) as extra:
            assert _read_all(extra).startswith(b"HTTP/1.1 503")  # a fifth from the same address
        for sock in held:
            with sock:
                assert _read_all(sock) == b""  # closed by the server, no request ever sent
        assert http_get(f"http://127.0.0.1:{port}/")[:2] == (200, b"hello")
        refused = registry.get_sample_value(
            "inspector_http_connections_refused_total", {"listener": "liveview", "reason": "header_timeout"}
        )
        assert refused is not None and refused >= 4
    finally:
        server.close()


def test_only_get_and_head_are_served_and_a_kept_alive_connection_ends_after_its_request_limit() -> None:
    server = HttpServer(
        "results", application(), "127.0.0.1", 0, LiveViewConfig(max_requests_per_connection=2)
    )
    port = server.start()
    try:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/", method=method)
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S)
            with info.value:
                assert info.value.code == 405 and info.value.headers["Allow"] == "GET,HEAD", method
        with _connect(port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
            answers = _read_all(sock)
        assert answers.count(b"HTTP/1.1 200") == 2 and b"Connection: close" in answers
    finally:
        server.close()
