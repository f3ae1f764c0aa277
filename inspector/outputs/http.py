"""An aiohttp application served from a thread of its own, with its own event loop and render executor.

The server accepts its connections itself, so that it holds a bounded number of them (``max_connections``,
``max_connections_per_client``: over a cap, ``503`` and closed), closes one that sends no complete request
within ``header_timeout_s`` or stays idle past ``idle_timeout_s``, closes a kept-alive one after
``max_requests_per_connection``, refuses every method but GET and HEAD (``405``), and logs accept errors
(out of file descriptors) at most once a second with a count.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from aiohttp import web

from inspector.config.base import HttpListenerConfig
from inspector.core.errors import InspectorError
from inspector.ops.connections import REFUSAL_RESPONSE, AcceptErrors, ConnectionMetrics, ConnectionTable
from inspector.ops.logs import LogThrottle

START_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 1.0  # open requests (event streams) get this long to finish at stop
CLOSE_TIMEOUT_S = 10.0
RENDER_THREADS = 1  # encoding images for browsers must never take more than one core from the model
LISTEN_BACKLOG = 128
SWEEP_INTERVAL_S = 0.5  # how often connections past their header timeout are looked for
ACCEPT_RETRY_S = 0.1  # after a failed accept (no file descriptor left), wait this long before the next
LOOP_ERROR_LOG_INTERVAL_S = 1.0
METHODS = ("GET", "HEAD")
POST_PREFIXES_KEY: web.AppKey[tuple[str, ...]] = web.AppKey("post_prefixes", tuple)
"""Paths (prefixes) where an application also takes POST: the review page's forms under ``/review``."""
EXECUTOR_KEY: web.AppKey[ThreadPoolExecutor] = web.AppKey("executor", ThreadPoolExecutor)
CLOSING_KEY: web.AppKey[threading.Event] = web.AppKey("closing", threading.Event)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OutputError(InspectorError):
    """An output that cannot start (its HTTP port cannot be bound); the message names the section."""


class HttpServer:
    """Serves one aiohttp application on ``address:port`` until :meth:`close`.

    Handlers run on the server's event loop; CPU work (image encoding) goes to ``app[EXECUTOR_KEY]``, a
    one-thread pool, so a crowd of browsers can slow the pictures down but not the inspection. Long-lived
    handlers (event streams) end when ``app[CLOSING_KEY]`` is set.
    """

    def __init__(
        self,
        section: str,
        app: web.Application,
        address: str,
        port: int,
        limits: HttpListenerConfig | None = None,
        connections: ConnectionMetrics | None = None,
    ) -> None:
        """Prepare the server of config section ``section`` (named in errors); :meth:`start` binds it.

        ``limits``: the section's connection limits (default: the defaults of ``HttpListenerConfig``);
        ``connections``: where open and refused connections are counted.
        """
        self.section = section
        self.app = app
        self.port = port
        self._address = address
        self._limits = limits if limits is not None else HttpListenerConfig()
        self._table = ConnectionTable(section, self._limits, connections)
        self._transports: dict[asyncio.BaseTransport, object] = {}
        self._executor = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix=f"{section}-render")
        app[EXECUTOR_KEY] = self._executor
        app[CLOSING_KEY] = threading.Event()
        app.middlewares.append(self._guard)
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._loop_error)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            keepalive_timeout=self._limits.idle_timeout_s,
        )
        self._listener: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._thread: threading.Thread | None = None
        self._accept_errors = AcceptErrors(section)
        self._loop_errors = LogThrottle(LOOP_ERROR_LOG_INTERVAL_S)
        self._log = structlog.stdlib.get_logger(__name__).bind(section=section)

    def start(self) -> int:
        """Bind and serve; returns the port bound.

        Raises:
            OutputError: the address cannot be bound (in use, not local...), naming the section's fields.
        """
        self._thread = threading.Thread(target=self._serve, name=f"{self.section}-http", daemon=True)
        self._thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._bind(), self._loop).result(START_TIMEOUT_S)
        except OSError as exc:
            self.close()
            raise OutputError(
                f"{self.section}: cannot listen on {self._address}:{self.port} "
                f"({self.section}.bind_address/port): {exc}"
            ) from exc
        self._log.info("http_listening", address=self._address, port=self.port)
        return self.port

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.close()

    async def _bind(self) -> int:
        await self._runner.setup()
        family = socket.getaddrinfo(self._address, self.port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.create_server(
            (self._address, self.port), family=family, backlog=LISTEN_BACKLOG, dualstack_ipv6=False
        )
        listener.setblocking(False)
        self._listener = listener
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._accept_loop(listener)), loop.create_task(self._sweep())]
        return int(listener.getsockname()[1])

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and the like: logged once a second, then try again
                self._accept_errors.failed(exc)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
            self._forget_closed()
            if self._table.admit(conn, client) is not None:
                _refuse(conn)
                continue
            try:
                transport, _ = await loop.connect_accepted_socket(self._runner_server(), conn)
            except OSError:
                self._table.release(conn)
                conn.close()
                continue
            self._table.rekey(conn, transport)  # requests see their transport
            self._transports[transport] = None

    def _runner_server(self) -> Callable[[], asyncio.Protocol]:
        server = self._runner.server
        assert server is not None  # set by setup()
        return server

    async def _sweep(self) -> None:
        """Close connections past their header timeout; forget closed ones."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self._forget_closed()
            for key in self._table.silent():
                if isinstance(key, asyncio.BaseTransport):
                    key.close()
                    self._forget(key)

    def _forget_closed(self) -> None:
        for transport in [t for t in self._transports if t.is_closing()]:
            self._forget(transport)

    def _forget(self, transport: asyncio.BaseTransport) -> None:
        self._transports.pop(transport, None)
        self._table.release(transport)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """GET and HEAD only (and POST under the paths an app names); the connection's request counted (header
        timeout over, keep-alive limit)."""
        posting = request.method == "POST" and request.path.startswith(request.app.get(POST_PREFIXES_KEY, ()))
        if request.method not in METHODS and not posting:
            raise web.HTTPMethodNotAllowed(request.method, METHODS)
        number = self._table.request_started(request.transport) if request.transport is not None else 0
        last = number >= self._limits.max_requests_per_connection
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if last:
                exc.force_close()
            raise
        if last:
            response.force_close()
        return response

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's own errors (a connection that broke mid-way...): logged at most once a second per kind."""
        message = str(context.get("message", "error"))
        held = self._loop_errors.allow(message)
        if held is not None:
            self._log.warning(
                "http_loop_error",
                message=message,
                error=repr(context.get("exception")),
                similar_lines_held_back=held,
            )

    async def _stop_listening(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for transport in list(self._transports):
            transport.close()
        await self._runner.cleanup()

    def close(self) -> None:
        """Stop serving (open streams end), free the port and the render thread. Idempotent."""
        self.app[CLOSING_KEY].set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            cleanup = asyncio.run_coroutine_threadsafe(self._stop_listening(), self._loop)
            try:
                cleanup.result(CLOSE_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - a stuck client must not stop the daemon's shutdown
                self._log.warning("http_close_failed", error=repr(exc))
            self._loop.call_soon_threadsafe(self._loop.stop)
            thread.join(CLOSE_TIMEOUT_S)
        elif thread is None and not self._loop.is_closed():
            self._loop.close()
        self._thread = None
        self._executor.shutdown(wait=False, cancel_futures=True)


def _refuse(conn: socket.socket) -> None:
    """Answer 503 without waiting (a full send buffer just loses the answer) and close."""
    try:
        conn.setblocking(False)
        conn.send(REFUSAL_RESPONSE)
    except OSError:
        pass
    finally:
        conn.close()
