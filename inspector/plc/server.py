"""The OPC UA server: per camera its state, product, results with a handshake, events and methods (asyncua).

Runs its own asyncio loop on a thread of its own. Verdicts and heartbeats are fed from any thread through
bounded queues (a full one drops and counts); methods call the daemon's line commands (``Ops``) off the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import structlog
from asyncua import ua
from asyncua.common.methods import uamethod
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds

from inspector.bus.wire import Heartbeat, VerdictHeader
from inspector.config.opcua import OpcUaConfig
from inspector.plc.nodes import CameraNodes, build_camera, create_record_type, fill_event, result_values
from inspector.plc.results import Result, ResultBook
from inspector.plc.users import AccessManager

NAMESPACE_URI = "urn:inspector:vision"
SERVER_NAME = "inspector OPC UA server"
ENDPOINT_PATH = "/inspector/"
FEED_QUEUE_ITEMS = 1024  # verdicts and heartbeats waiting for the loop, at most
WATCH_INTERVAL_S = 0.2  # how often readiness is re-derived (silence budget included)
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
ASYNCUA_LOG_LEVEL = logging.WARNING

Ops = Callable[[dict[str, Any]], dict[str, Any]]
"""One line-control request and its answer (the control socket, or the daemon's commands directly)."""


def argument(name: str, vtype: ua.VariantType) -> ua.Argument:
    """A named scalar method argument (PLC client blocks show the names)."""
    arg = ua.Argument()
    arg.Name = name
    arg.DataType = ua.NodeId(ua.Int32(vtype.value))
    arg.ValueRank = -1
    return arg


@dataclass
class FeedStats:
    """Items the loop could not take in time (the queue was full): counted, never blocking the feeder."""

    dropped_verdicts: int = 0
    dropped_heartbeats: int = 0


class PlcServer:
    """The OPC UA server of one daemon's cameras. :meth:`start` blocks until it listens; :meth:`stop` ends it."""

    def __init__(
        self, config: OpcUaConfig, cameras: list[str], ops: Ops, clock: Callable[[], float] = time.monotonic
    ):
        """Prepare the server (nothing listens yet)."""
        self._config = config
        self.book = ResultBook(cameras, config.results_per_camera, config.silence_budget_s, clock)
        self._ops = ops
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._queue: asyncio.Queue[VerdictHeader | Heartbeat | None] | None = None
        self._stopping: asyncio.Event | None = None
        self._cameras: dict[str, CameraNodes] = {}
        self._started: Future[int] = Future()
        self.stats = FeedStats()
        self.port = 0
        self._log = structlog.stdlib.get_logger(__name__)
        logging.getLogger("asyncua").setLevel(ASYNCUA_LOG_LEVEL)

    def start(self) -> int:
        """Run the server on its thread; returns the port it listens on.

        Raises:
            Exception: whatever prevented it from listening (address in use, unreadable key file, ...).
        """
        self._thread = threading.Thread(target=self._run, name="opcua", daemon=True)
        self._thread.start()
        self.port = self._started.result(START_TIMEOUT_S)
        return self.port

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it in the caller
            if not self._started.done():
                self._started.set_exception(exc)
            else:
                self._log.error("opcua_server_failed", error=repr(exc))

    def feed_verdict(self, header: VerdictHeader) -> None:
        """Hand a published verdict to the server (from any thread; never blocks)."""
        self._feed(header)

    def feed_heartbeat(self, heartbeat: Heartbeat) -> None:
        """Hand a heartbeat to the server (from any thread; never blocks)."""
        self._feed(heartbeat)

    def _feed(self, item: VerdictHeader | Heartbeat) -> None:
        loop, queue = self._loop, self._queue
        if loop is None or queue is None:
            return
        try:
            loop.call_soon_threadsafe(self._put, queue, item)
        except RuntimeError:  # the loop has closed: the server is stopping
            return

    def _put(
        self, queue: asyncio.Queue[VerdictHeader | Heartbeat | None], item: VerdictHeader | Heartbeat | None
    ) -> None:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            if isinstance(item, VerdictHeader):
                self.stats.dropped_verdicts += 1
                self._log.error(
                    "opcua_verdict_dropped", camera=item.camera, seq=item.seq, reason="queue_full"
                )
            else:
                self.stats.dropped_heartbeats += 1

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(FEED_QUEUE_ITEMS)
        self._stopping = asyncio.Event()
        server = await self._create_server()
        idx = await server.register_namespace(NAMESPACE_URI)
        root = await server.nodes.objects.add_object(idx, "Inspector")
        self._daemon_state = await root.add_variable(idx, "DaemonState", "starting")
        self._boot_id = await root.add_variable(idx, "BootId", "")
        cameras = await root.add_folder(idx, "Cameras")
        event_type = await server.create_custom_event_type(idx, "ResultReadyEventType", ObjectIds.BaseEventType, [
            ("Camera", ua.VariantType.String), ("PartId", ua.VariantType.String), ("Verdict", ua.VariantType.String),
            ("ResultId", ua.VariantType.UInt64), ("Seq", ua.VariantType.Int64), ("Product", ua.VariantType.String),
            ("AcceptPart", ua.VariantType.Boolean),
        ])  # fmt: skip
        record_type = await create_record_type(server, idx)
        for name in self.book.cameras:
            nodes = await build_camera(cameras, idx, name, record_type)
            await self._add_methods(nodes.object, idx, name)
            nodes.events = await server.get_event_generator(event_type, nodes.object.nodeid)
            self._cameras[name] = nodes
        async with server:
            self.port = server.bserver.port if server.bserver is not None else self._config.port
            self._started.set_result(self.port)
            self._log.info("opcua_listening", address=self._config.bind_address, port=self.port)
            await asyncio.gather(self._drain(), self._watch())

    async def _create_server(self) -> Server:
        cfg = self._config
        access = await AccessManager.load(cfg.users_file, cfg.client_certificates, cfg.allow_anonymous)
        server = Server(user_manager=access)  # type: ignore[arg-type]
        await server.init()
        server.set_endpoint(f"opc.tcp://{cfg.bind_address}:{cfg.port}{ENDPOINT_PATH}")
        server.set_server_name(SERVER_NAME)
        tokens: list[type] = [ua.UserNameIdentityToken, ua.X509IdentityToken]
        if cfg.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        policies = [ua.SecurityPolicyType.NoSecurity]
        if cfg.certificate is not None and cfg.private_key is not None:
            await server.load_certificate(str(cfg.certificate))
            await server.load_private_key(str(cfg.private_key))
            policies = [
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                *([ua.SecurityPolicyType.NoSecurity] if cfg.allow_unencrypted else []),
            ]
        server.set_security_policy(policies)
        return server

    async def _add_methods(self, obj: Node, idx: int, camera: str) -> None:
        """Trigger, SelectProduct, Reload, AcknowledgeResult on a camera object; errors as an output text."""

        @uamethod
        async def trigger(parent: Any, part_id: str, product: str) -> tuple[Any, ...]:
            doc = {
                "cmd": "trigger",
                "camera": camera,
                "part_id": part_id,
                **({"product": product} if product else {}),
            }
            answer = await self._call(doc)
            seq = answer.get("seq")
            number = int(seq) if answer.get("ok") and seq is not None else -1
            return ua.Variant(number, ua.VariantType.Int64), answer.get("error") or answer.get("fault") or ""

        @uamethod
        async def select_product(parent: Any, product: str) -> tuple[Any, ...]:
            answer = await self._call({"cmd": "product", "camera": camera, "product": product})
            return bool(answer.get("ok")), answer.get("error") or ""

        @uamethod
        async def reload(parent: Any) -> tuple[Any, ...]:
            answer = await self._call({"cmd": "reload"})
            return bool(answer.get("ok")), answer.get("error") or ""

        @uamethod
        async def acknowledge(parent: Any, result_id: int) -> bool:
            found = self.book.acknowledge(camera, int(result_id))
            await self._show_pending(camera)  # OldestResult is the next one before the call returns
            return found

        s, b, i64 = ua.VariantType.String, ua.VariantType.Boolean, ua.VariantType.Int64
        part, product, ok, error = (
            argument("PartId", s),
            argument("Product", s),
            argument("Ok", b),
            argument("Error", s),
        )
        await obj.add_method(idx, "Trigger", trigger, [part, product], [argument("Seq", i64), error])
        await obj.add_method(idx, "SelectProduct", select_product, [product], [ok, error])
        await obj.add_method(idx, "Reload", reload, [], [ok, error])
        result_id = argument("ResultId", ua.VariantType.UInt64)
        await obj.add_method(
            idx, "AcknowledgeResult", acknowledge, [result_id], [argument("Acknowledged", b)]
        )

    async def _call(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A line command off the loop (it may wait for the daemon); an error becomes the answer's error."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, self._ops, doc)
        except Exception as exc:  # noqa: BLE001 - the PLC gets the reason as the method's error output
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    async def _drain(self) -> None:
        assert self._queue is not None and self._stopping is not None
        while not self._stopping.is_set():
            item = await self._queue.get()
            if item is None:
                continue
            if isinstance(item, Heartbeat):
                self.book.heartbeat(item)
                await self._daemon_state.write_value(item.state)
                await self._boot_id.write_value(item.boot_id)
                await self._show_states()
            else:
                result = self.book.add(item)
                if result is not None:
                    await self._show_result(item.camera, result)

    async def _watch(self) -> None:
        """Re-derive readiness (the silence budget) and invalidate held results on a silence."""
        was_silent = False
        assert self._stopping is not None
        while not self._stopping.is_set():
            silent = self.book.check_silence()
            if silent and not was_silent:
                for camera in self._cameras:
                    await self._show_pending(camera)
                    await self._show_last(camera)
            was_silent = silent
            await self._show_states()
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def _show_states(self) -> None:
        for camera, nodes in self._cameras.items():
            ready, text = self.book.state(camera)
            book = self.book.snapshot(camera)
            await nodes.ready.write_value(ready)
            await nodes.state.write_value(text)
            await nodes.camera_state.write_value(book.camera_state)

    async def _show_result(self, camera: str, result: Result) -> None:
        nodes = self._cameras[camera]
        book = self.book.snapshot(camera)
        await nodes.write_counts(book)
        if result.product:
            await nodes.product.write_value(result.product)
        await self._show_last(camera)
        await self._show_pending(camera)
        if nodes.events is not None:
            fill_event(nodes.events.event, camera, result)
            await nodes.events.trigger()

    async def _show_last(self, camera: str) -> None:
        book = self.book.snapshot(camera)
        if book.last is not None:
            await self._cameras[camera].last.write(result_values(book.last))

    async def _show_pending(self, camera: str) -> None:
        nodes, book = self._cameras[camera], self.book.snapshot(camera)
        await nodes.pending.write_value(ua.Variant(len(book.pending), ua.VariantType.UInt32))
        await nodes.oldest.write(result_values(book.pending[0] if book.pending else None))

    def stop(self) -> None:
        """Stop serving (sessions closed, port released)."""
        loop, stopping, queue = self._loop, self._stopping, self._queue
        if loop is not None and stopping is not None and queue is not None:
            try:
                loop.call_soon_threadsafe(stopping.set)
                loop.call_soon_threadsafe(self._put, queue, None)  # wakes the drain
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
