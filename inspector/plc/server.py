"""The OPC UA server: per camera its state, product, results with a handshake, events and methods (asyncua).

Runs its own asyncio loop on a thread of its own. Verdicts and heartbeats are fed from any thread through
bounded queues (a full one drops and counts); methods call the daemon's line commands (``Ops``) off the loop.
The address space is ``inspector.plc.space``; the protocol-level checks (channel trust, logins) are
``inspector.plc.stack``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import ua
from prometheus_client import CollectorRegistry

from inspector import __version__
from inspector.bus.wire import Heartbeat, VerdictHeader
from inspector.config.load import ConfigError
from inspector.config.opcua import OpcUaConfig
from inspector.core.names import SCORED_VERDICTS
from inspector.plc.certificates import certificate_problems
from inspector.plc.methods import Handler
from inspector.plc.nodes import result_values
from inspector.plc.pki import TrustList
from inspector.plc.results import Result, ResultBook
from inspector.plc.space import NAMESPACE_URI, Space, add_methods, build_space
from inspector.plc.stack import Guards, InspectorServer
from inspector.plc.users import AccessManager, LoginGuard

__all__ = ["ENDPOINT_PATH", "NAMESPACE_URI", "Ops", "PlcServer"]

SERVER_NAME = "inspector OPC UA server"
PRODUCT_URI = "urn:inspector"
MANUFACTURER = "inspector"
ENDPOINT_PATH = "/inspector/"
FEED_QUEUE_ITEMS = 1024  # verdicts and heartbeats waiting for the loop, at most
WATCH_INTERVAL_S = 0.2  # how often readiness is re-derived (silence budget included)
PRODUCT_POLL_INTERVAL_S = 0.5  # how often the active products are read from the daemon's status
FIRST_STATUS_TIMEOUT_S = 2.0  # start-up waits this long for the first status (the products), at most
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
ASYNCUA_LOG_LEVEL = logging.WARNING
S, B, I64 = ua.VariantType.String, ua.VariantType.Boolean, ua.VariantType.Int64
SCORED = SCORED_VERDICTS

Ops = Callable[[dict[str, Any]], dict[str, Any]]
"""One line-control request and its answer (the control socket, or the daemon's commands directly)."""


@dataclass
class FeedStats:
    """Items the loop could not take in time (the queue was full): counted, never blocking the feeder."""

    dropped_verdicts: int = 0
    dropped_heartbeats: int = 0


class PlcServer:
    """The OPC UA server of one daemon's cameras. :meth:`start` blocks until it listens; :meth:`stop` ends it."""

    def __init__(
        self,
        config: OpcUaConfig,
        cameras: list[str],
        ops: Ops,
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
    ):
        """Prepare the server (nothing listens yet); failed logins are counted on ``registry``."""
        self._config = config
        self.book = ResultBook(cameras, config.results_per_camera, config.silence_budget_s, clock)
        self._ops = ops
        self.logins = LoginGuard(
            config.login_failures_before_slowdown, config.login_slowdown_max_s, registry, clock
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._queue: asyncio.Queue[VerdictHeader | Heartbeat | None] | None = None
        self._stopping: asyncio.Event | None = None
        self._space = Space(0, None, None, {})  # type: ignore[arg-type]  # built on the loop
        self._known_products: set[str] = set()
        self._product_generation = 0
        self._status_seen = False
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
        self._space = await build_space(server, self.book.cameras)
        for name, cam in self._space.cameras.items():
            await add_methods(cam.nodes.object, self._space.idx, self._handlers(name))
        async with server:
            self.port = server.bserver.port if server.bserver is not None else self._config.port
            await self._first_products()
            self._started.set_result(self.port)
            self._log.info(
                "opcua_listening", address=self._config.bind_address, port=self.port,
                application_uri=self._config.application_uri,
            )  # fmt: skip
            await asyncio.gather(self._drain(), self._watch(), self._poll_products())

    async def _create_server(self) -> InspectorServer:
        cfg = self._config
        problems = certificate_problems(cfg)
        if problems:
            raise ConfigError("opcua", problems)
        trust = TrustList(cfg.pki_dir) if cfg.certificate is not None and cfg.pki_dir is not None else None
        access = await AccessManager.load(
            cfg.users_file, cfg.client_certificates, cfg.allow_anonymous, self.logins
        )
        server = InspectorServer(Guards(trust, access, self.logins))
        await server.init()
        server.set_endpoint(f"opc.tcp://{cfg.bind_address}:{cfg.port}{ENDPOINT_PATH}")
        server.set_server_name(SERVER_NAME)
        server.product_uri = PRODUCT_URI
        server.manufacturer_name = MANUFACTURER
        await server.set_application_uri(cfg.application_uri)
        await server.set_build_info(
            PRODUCT_URI, MANUFACTURER, SERVER_NAME, __version__, __version__, datetime.now(UTC)
        )
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

    def _handlers(self, camera: str) -> dict[str, Handler]:
        """Trigger, SelectProduct, Reload, AcknowledgeResult of one camera (arguments already checked)."""

        async def trigger(part_id: str, product: str) -> list[ua.Variant]:
            if product:
                refused = await self._unknown_product(camera, product)
                if refused:
                    return [ua.Variant(-1, I64), ua.Variant(refused, S)]
            doc = {
                "cmd": "trigger",
                "camera": camera,
                "part_id": part_id,
                **({"product": product} if product else {}),
            }
            answer = await self._call(doc)
            seq = answer.get("seq")
            ok = bool(answer.get("ok")) and isinstance(seq, int)
            if ok and not answer.get("fault") and answer.get("product"):
                await self._show_product(camera, str(answer["product"]))
            error = answer.get("error") or answer.get("fault") or ""
            return [ua.Variant(seq if ok else -1, I64), ua.Variant(str(error), S)]

        async def select_product(product: str) -> list[ua.Variant]:
            answer = await self._call({"cmd": "product", "camera": camera, "product": product})
            if answer.get("ok"):
                await self._show_product(camera, product)
            return [ua.Variant(bool(answer.get("ok")), B), ua.Variant(str(answer.get("error") or ""), S)]

        async def reload() -> list[ua.Variant]:
            answer = await self._call({"cmd": "reload"})
            return [ua.Variant(bool(answer.get("ok")), B), ua.Variant(str(answer.get("error") or ""), S)]

        async def acknowledge(result_id: int) -> list[ua.Variant]:
            found = self.book.acknowledge(camera, int(result_id))
            await self._show_pending(camera)  # OldestResult is the next one before the call returns
            return [ua.Variant(found, B)]

        return {
            "Trigger": trigger,
            "SelectProduct": select_product,
            "Reload": reload,
            "AcknowledgeResult": acknowledge,
        }

    async def _call(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A line command off the loop (it may wait for the daemon); an error becomes the answer's error."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, self._ops, doc)
        except Exception as exc:  # noqa: BLE001 - the PLC gets the reason as the method's error output
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    # ------------------------------------------------------------------------------------------ products
    # Product shows the camera's active product as the daemon's status says it (polled, so a changeover by the
    # control socket shows too), and a changeover by a method as soon as the daemon accepted it. A poll answer
    # that started before such a changeover is dropped (the generation moved on), so Product never steps back.

    async def _status_products(self) -> tuple[dict[str, str], set[str]] | None:
        """(camera -> active product, known products) from the daemon's status; None when it has none."""
        answer = await self._call({"cmd": "status"})
        cameras, products = answer.get("cameras"), answer.get("products")
        if not answer.get("ok") or not isinstance(cameras, dict) or not isinstance(products, dict):
            return None
        active = {
            n: str(c["product"]) for n, c in cameras.items() if isinstance(c, dict) and c.get("product")
        }
        return active, set(products)

    async def _refresh_products(self) -> bool:
        generation = self._product_generation
        status = await self._status_products()
        if status is None:
            return False
        active, self._known_products = status
        self._status_seen = True
        for camera, product in active.items():
            if camera in self._space.cameras:
                await self._show_product(camera, product, generation)
        return True

    async def _first_products(self) -> None:
        """Product before the first client connects (given up after FIRST_STATUS_TIMEOUT_S: the poll goes on)."""
        try:
            await asyncio.wait_for(self._refresh_products(), FIRST_STATUS_TIMEOUT_S)
        except TimeoutError:
            self._log.warning("opcua_no_status", timeout_s=FIRST_STATUS_TIMEOUT_S)

    async def _poll_products(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            await asyncio.sleep(PRODUCT_POLL_INTERVAL_S)
            await self._refresh_products()

    async def _unknown_product(self, camera: str, product: str) -> str:
        """Why the camera cannot take ``product`` ("" when it can, or when the daemon cannot tell)."""
        if product not in self._known_products:
            await self._refresh_products()
        if self._known_products and product not in self._known_products:
            known = ", ".join(sorted(self._known_products))
            return f"unknown product {product!r} for camera {camera} (known: {known}): nothing was triggered"
        return ""

    async def _show_product(self, camera: str, product: str, generation: int | None = None) -> None:
        """Write Product: a method's changeover (generation None) always, a polled value only if no changeover
        happened since it was read."""
        if generation is None:
            self._product_generation += 1
        elif generation != self._product_generation:
            return
        await self._space.cameras[camera].nodes.product.write_value(product)

    async def _drain(self) -> None:
        assert self._queue is not None and self._stopping is not None
        while not self._stopping.is_set():
            item = await self._queue.get()
            if item is None:
                continue
            if isinstance(item, Heartbeat):
                self.book.heartbeat(item)
                await self._space.daemon_state.write_value(item.state)
                await self._space.boot_id.write_value(item.boot_id)
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
                for camera in self._space.cameras:
                    await self._show_pending(camera)
                    await self._show_last(camera)
            was_silent = silent
            await self._show_states()
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def _show_states(self) -> None:
        for camera, space in self._space.cameras.items():
            ready, text = self.book.state(camera)
            book = self.book.snapshot(camera)
            await space.nodes.ready.write_value(ready)
            await space.nodes.state.write_value(text)
            await space.nodes.camera_state.write_value(book.camera_state)

    async def _show_result(self, camera: str, result: Result) -> None:
        space = self._space.cameras[camera]
        await space.nodes.write_counts(self.book.snapshot(camera))
        if not self._status_seen and result.verdict in SCORED and result.product:
            await self._show_product(camera, result.product, self._product_generation)  # no status to read
        await self._show_last(camera)
        await self._show_pending(camera)
        await space.raise_result(camera, result)

    async def _show_last(self, camera: str) -> None:
        book = self.book.snapshot(camera)
        if book.last is not None:
            await self._space.cameras[camera].nodes.last.write(result_values(book.last))

    async def _show_pending(self, camera: str) -> None:
        nodes, book = self._space.cameras[camera].nodes, self.book.snapshot(camera)
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
