"""Tests for inspector.ops.connections: the caps of one listener, the header timeout, throttled accept errors."""

from __future__ import annotations

import errno
import io
import json
import logging
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from inspector.config.base import HttpLimitsConfig
from inspector.ops.connections import AcceptErrors, ConnectionMetrics, ConnectionTable
from inspector.ops.logs import HANDLER_MARK, configure_logging


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, HANDLER_MARK, False)]:
        root.removeHandler(handler)


def test_a_listener_admits_up_to_its_caps_per_client_and_in_all_and_frees_a_place_on_release() -> None:
    registry = CollectorRegistry()
    limits = HttpLimitsConfig(max_connections=3, max_connections_per_client=2)
    table = ConnectionTable("results", limits, ConnectionMetrics(registry))
    assert [table.admit(k, "10.0.0.1") for k in ("a", "b", "c")] == [None, None, "max_connections_per_client"]
    assert table.admit("d", "10.0.0.2") is None
    assert table.admit("e", "10.0.0.3") == "max_connections"
    table.release("a")
    table.release("a")  # twice: ignored
    assert table.admit("f", "10.0.0.1") is None and len(table) == 3
    assert registry.get_sample_value("inspector_http_connections", {"listener": "results"}) == 3
    refused = {
        reason: registry.get_sample_value(
            "inspector_http_connections_refused_total", {"listener": "results", "reason": reason}
        )
        for reason in ("max_connections", "max_connections_per_client", "header_timeout")
    }
    assert refused == {"max_connections": 1, "max_connections_per_client": 1, "header_timeout": 0}


def test_a_connection_without_a_request_is_silent_after_the_header_timeout_and_a_request_ends_it() -> None:
    clock = Clock()
    table = ConnectionTable("liveview", HttpLimitsConfig(header_timeout_s=5.0), clock=clock)
    table.admit("quiet", "c")
    table.admit("busy", "c")
    table.rekey("busy", "busy-transport")
    assert table.request_started("busy-transport") == 1 and table.request_started("unknown") == 0
    clock.now += 4.9
    assert table.silent() == []
    clock.now += 0.2
    assert table.silent() == ["quiet"]


def test_accept_errors_are_logged_at_most_once_a_second_with_the_count_held_back() -> None:
    clock = Clock()
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    errors = AcceptErrors("results", clock)
    for _ in range(500):
        errors.failed(OSError(errno.EMFILE, "Too many open files"))
    clock.now += 1.0
    errors.failed(OSError(errno.EMFILE, "Too many open files"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["similar_lines_held_back"] for line in lines] == [0, 499]
    assert lines[0]["event"] == "http_accept_failed" and lines[0]["listener"] == "results"
