"""A real OPC UA client (asyncua's) as a PLC uses the server: browse paths, result records, method calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asyncua.client.client import Client
from asyncua.common.node import Node

from inspector.plc.server import ENDPOINT_PATH, NAMESPACE_URI
from tests.support import WAIT_S

CLIENT_TIMEOUT_S = 30.0
PUBLISH_INTERVAL_MS = 20
RECORD_QUEUE = 1000  # data changes the server keeps per publish: every result, even in a burst
POLL_S = 0.05


def url(port: int) -> str:
    """The server's endpoint URL on this machine."""
    return f"opc.tcp://127.0.0.1:{port}{ENDPOINT_PATH}"


def client(port: int, user: str | None = None, password: str | None = None) -> Client:
    """A client for the server (not connected); with a user when given."""
    c = Client(url(port), timeout=CLIENT_TIMEOUT_S)
    if user is not None:
        c.set_user(user)
        c.set_password(password or "")
    return c


async def camera(c: Client, name: str) -> Node:
    """The object of one camera: Objects/Inspector/Cameras/<name>."""
    ns = await c.get_namespace_index(NAMESPACE_URI)
    return await c.nodes.objects.get_child([f"{ns}:Inspector", f"{ns}:Cameras", f"{ns}:{name}"])


async def child(c: Client, node: Node, *path: str) -> Node:
    """A node below ``node`` by browse names in the server's namespace."""
    ns = await c.get_namespace_index(NAMESPACE_URI)
    return await node.get_child([f"{ns}:{p}" for p in path])


async def read(c: Client, node: Node, *path: str) -> Any:
    """The value of a variable below ``node``."""
    return await (await child(c, node, *path)).read_value()


async def call(c: Client, node: Node, method: str, *args: Any) -> Any:
    """Call a method of a camera object; its outputs (a list when several)."""
    ns = await c.get_namespace_index(NAMESPACE_URI)
    return await node.call_method(f"{ns}:{method}", *args)


@dataclass
class Records:
    """Every value a data-change subscription delivered for a result structure (the first: its value then)."""

    values: list[Any] = field(default_factory=list)

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        """asyncua's callback."""
        self.values.append(val)

    def results(self) -> list[Any]:
        """The records of results (ResultId > 0), in order."""
        return [v for v in self.values if v.ResultId > 0]


async def subscribe_records(c: Client, node: Node, result: str = "LastResult") -> Records:
    """Subscribe to ``<camera>/<result>/Result`` with a queue large enough for every change."""
    await c.load_data_type_definitions()
    records = Records()
    sub = await c.create_subscription(PUBLISH_INTERVAL_MS, records)
    await sub.subscribe_data_change(await child(c, node, result, "Result"), queuesize=RECORD_QUEUE)
    return records


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll an async condition until true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(POLL_S)
