"""The live view: a web page of what every camera sees now, refreshed by server-sent events.

The sink side (:meth:`LiveView.deliver`, on the pipeline's thread) only keeps references to the latest
outcomes and counts verdicts; images are encoded when a browser asks for them, on the HTTP server's one
render thread, at most ``max_image_fps`` per camera. The page, its script and its style are served from the
package (``static/``): no build step, nothing from another site.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web

from inspector.bus.wire import Heartbeat
from inspector.config.liveview import LiveViewConfig
from inspector.core.inputs import quote
from inspector.core.records import Outcome
from inspector.outputs.evidence import has_frame, overlay_jpeg
from inspector.outputs.http import CLOSING_KEY, EXECUTOR_KEY

HOUR_COLUMNS = {
    "PASS": 1,
    "FAIL": 2,
    "REVIEW": 3,
}  # columns of a minute's counts: [minute, pass, fail, review]
RECENT_PER_CAMERA = 8  # outcomes kept so that the image of the seq a browser was told about can be drawn
FPS_WINDOW_S = 10.0
HOUR_S = 3600.0
MINUTE_S = 60.0
KEEPALIVE_S = 10.0  # an event at least this often, so proxies and browsers keep the stream open
STATIC_FILES = {"index.html": "text/html", "liveview.js": "text/javascript", "liveview.css": "text/css"}
NO_STORE = {"Cache-Control": "no-store"}


@dataclass
class CameraView:
    """What the page shows of one camera."""

    recent: deque[Outcome] = field(default_factory=lambda: deque(maxlen=RECENT_PER_CAMERA))
    times: deque[float] = field(default_factory=deque)  # verdicts of the last FPS_WINDOW_S
    minutes: deque[list[int]] = field(default_factory=deque)  # [minute, PASS, FAIL, REVIEW] of the last hour
    image: tuple[int, bytes] | None = None  # (seq, JPEG) last rendered
    rendered_at: float = -1e9


class LiveView:
    """The sink and the web application of the live view."""

    name = "liveview"

    def __init__(
        self,
        cameras: Sequence[str],
        config: LiveViewConfig,
        status: Callable[[], Heartbeat],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Show ``cameras``; ``status`` gives the daemon's current heartbeat (state, cameras up)."""
        self._config = config
        self._status = status
        self._clock = clock
        self._lock = threading.Lock()
        self._views = {camera: CameraView() for camera in cameras}
        self._version = 0
        self._clients = 0

    def deliver(self, outcome: Outcome) -> None:
        """Take a published outcome: keep it, count it."""
        view = self._views.get(outcome.camera)
        if view is None or outcome.published is None:
            return
        now = self._clock()
        minute = int(now // MINUTE_S)
        with self._lock:
            view.recent.append(outcome)
            view.times.append(now)
            if not view.minutes or view.minutes[-1][0] != minute:
                view.minutes.append([minute, 0, 0, 0])
            column = HOUR_COLUMNS.get(outcome.verdict)
            if column is not None:
                view.minutes[-1][column] += 1
            self._version += 1

    def close(self) -> None:
        """Nothing to flush (the HTTP server is closed by its owner)."""

    # ------------------------------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """What the page shows, as JSON-ready data."""
        heartbeat = self._status()
        now = self._clock()
        with self._lock:
            cameras = [self._camera_state(name, view, heartbeat, now) for name, view in self._views.items()]
        return {"state": heartbeat.state, "boot_id": heartbeat.boot_id, "cameras": cameras}

    def _camera_state(self, name: str, view: CameraView, heartbeat: Heartbeat, now: float) -> dict[str, Any]:
        while view.times and view.times[0] < now - FPS_WINDOW_S:
            view.times.popleft()
        while view.minutes and view.minutes[0][0] <= int((now - HOUR_S) // MINUTE_S):
            view.minutes.popleft()
        cam = heartbeat.cameras.get(name)
        doc: dict[str, Any] = {
            "name": name,
            "up": bool(cam and cam.up),
            "fps": len(view.times) / FPS_WINDOW_S,
            "pass_last_hour": sum(m[1] for m in view.minutes),
            "fail_last_hour": sum(m[2] for m in view.minutes),
            "review_last_hour": sum(m[3] for m in view.minutes),
            "verdict": None,
        }
        if view.recent:
            header = json.loads(view.recent[-1].published or "{}")
            keys = (
                "seq",
                "verdict",
                "score",
                "threshold",
                "part_id",
                "product",
                "gallery",
                "captured_at",
                "error",
            )
            doc.update({key: header.get(key) for key in keys})
            doc["defect_area_px"] = header.get("defect_area_px")
            # A verdict without a frame (an ERROR of a trigger or a file) has no picture: the page keeps the last.
            doc["image"] = (
                f"/cameras/{name}/image.jpg?seq={header.get('seq')}" if has_frame(view.recent[-1]) else None
            )
        return doc

    def _image(self, camera: str, seq: int | None) -> bytes | None:
        """The JPEG of ``seq`` (or the newest with a frame) on ``camera``; the last image again when asked too
        often; None when there is no such picture (nothing yet, or ``seq`` is a verdict without a frame)."""
        view = self._views[camera]
        now = self._clock()
        with self._lock:
            outcomes = [o for o in view.recent if has_frame(o) or o.seq == seq]
            cached = view.image
            too_soon = now - view.rendered_at < 1.0 / self._config.max_image_fps
        pictured = [o for o in outcomes if has_frame(o)]
        if not pictured or any(o.seq == seq and not has_frame(o) for o in outcomes):
            return None
        wanted = next((o for o in reversed(pictured) if o.seq == seq), pictured[-1])
        if cached is not None and (cached[0] == wanted.seq or too_soon):
            return cached[1]
        jpeg = overlay_jpeg(wanted, self._config.jpeg_quality, self._config.image_width_px)
        with self._lock:
            view.image, view.rendered_at = (wanted.seq, jpeg), now
        return jpeg

    # ------------------------------------------------------------------------------------------ web

    def application(self) -> web.Application:
        """The aiohttp application: the page, its files, ``/state``, ``/events`` and the images."""
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/state", self._state)
        app.router.add_get("/events", self._events)
        app.router.add_get("/cameras/{camera}/image.jpg", self._camera_image)
        return app

    async def _page(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["name"])

    @staticmethod
    def _file(name: str) -> web.Response:
        if name not in STATIC_FILES:
            raise web.HTTPNotFound(text=f"no file {quote(name)}")
        body = (resources.files("inspector.outputs") / "static" / name).read_bytes()
        return web.Response(body=body, content_type=STATIC_FILES[name], charset="utf-8", headers=NO_STORE)

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state(), headers=NO_STORE)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the state whenever it changed, at most ``max_image_fps`` times a second."""
        with self._lock:
            if self._clients >= self._config.max_clients:
                raise web.HTTPServiceUnavailable(
                    text=f"live view: {self._config.max_clients} clients already"
                )
            self._clients += 1
        try:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **NO_STORE})
            await response.prepare(request)
            try:
                await self._stream(request, response)
            except ConnectionResetError:
                pass  # the browser went away: nothing to tell anyone
            return response
        finally:
            with self._lock:
                self._clients -= 1

    async def _stream(self, request: web.Request, response: web.StreamResponse) -> None:
        closing = request.app[CLOSING_KEY]
        sent_version, sent_at = -1, -KEEPALIVE_S
        interval = 1.0 / self._config.max_image_fps
        while not closing.is_set():
            with self._lock:
                version = self._version
            now = self._clock()
            if version != sent_version or now - sent_at >= KEEPALIVE_S:
                await response.write(f"data: {json.dumps(self.state())}\n\n".encode())
                sent_version, sent_at = version, now
            await asyncio.sleep(interval)

    async def _camera_image(self, request: web.Request) -> web.Response:
        camera = request.match_info["camera"]
        if camera not in self._views:
            raise web.HTTPNotFound(text=f"no camera {quote(camera)}")
        seq_text = request.query.get("seq")
        if seq_text is not None and not (seq_text.isascii() and seq_text.isdigit()):
            raise web.HTTPBadRequest(text=f"seq {quote(seq_text)} is not a number")
        seq = int(seq_text) if seq_text is not None else None
        loop = asyncio.get_running_loop()
        jpeg = await loop.run_in_executor(request.app[EXECUTOR_KEY], self._image, camera, seq)
        if jpeg is None:
            raise web.HTTPNotFound(
                text=f"camera {camera} has no image for seq {seq} (none yet, or a verdict without a frame)"
            )
        return web.Response(body=jpeg, content_type="image/jpeg", headers=NO_STORE)
