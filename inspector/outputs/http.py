"""An aiohttp application served from a thread of its own, with its own event loop and render executor."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import structlog
from aiohttp import web

from inspector.core.errors import InspectorError

START_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 1.0  # open requests (event streams) get this long to finish at stop
CLOSE_TIMEOUT_S = 10.0
RENDER_THREADS = 1  # encoding images for browsers must never take more than one core from the model
EXECUTOR_KEY: web.AppKey[ThreadPoolExecutor] = web.AppKey("executor", ThreadPoolExecutor)
CLOSING_KEY: web.AppKey[threading.Event] = web.AppKey("closing", threading.Event)


class OutputError(InspectorError):
    """An output that cannot start (its HTTP port cannot be bound); the message names the section."""


class HttpServer:
    """Serves one aiohttp application on ``address:port`` until :meth:`close`.

    Handlers run on the server's event loop; CPU work (image encoding) goes to ``app[EXECUTOR_KEY]``, a
    one-thread pool, so a crowd of browsers can slow the pictures down but not the inspection. Long-lived
    handlers (event streams) end when ``app[CLOSING_KEY]`` is set.
    """

    def __init__(self, section: str, app: web.Application, address: str, port: int) -> None:
        """Prepare the server of config section ``section`` (named in errors); :meth:`start` binds it."""
        self.section = section
        self.app = app
        self.port = port
        self._address = address
        self._executor = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix=f"{section}-render")
        app[EXECUTOR_KEY] = self._executor
        app[CLOSING_KEY] = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        self._thread: threading.Thread | None = None
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
        site = web.TCPSite(self._runner, self._address, self.port)
        await site.start()
        sockets = self._runner.addresses
        return int(sockets[0][1]) if sockets else self.port

    def close(self) -> None:
        """Stop serving (open streams end), free the port and the render thread. Idempotent."""
        self.app[CLOSING_KEY].set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
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
