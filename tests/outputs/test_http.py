"""Tests for inspector.outputs.http: an aiohttp application on its own thread, bind errors, port freed at close."""

from __future__ import annotations

import socket

import pytest
from aiohttp import web

from inspector.outputs.http import HttpServer, OutputError
from tests.support import http_get


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
