"""The line's commands to a running daemon: status, trigger, product, reload, pause and resume, as JSON in and out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inspector.bus.control import COMMANDS, error_answer
from inspector.capture.manager import CaptureManager
from inspector.core.errors import InspectorError
from inspector.core.inputs import camera_name_problem, product_name_problem, quote
from inspector.daemon.parts import PartSource, TriggerRejected
from inspector.daemon.products import ProductRegistry, ReloadResult
from inspector.daemon.status import DaemonStatus
from inspector.daemon.triggers import submit_parsed
from inspector.ops.metrics import InspectorMetrics

Reloader = Callable[[list[str] | None], list[ReloadResult]]
Answer = dict[str, Any]


class LineCommands:
    """Answers control requests (see ``inspector.bus.control``); :meth:`handle` never raises."""

    def __init__(
        self,
        status: DaemonStatus,
        parts: PartSource,
        products: ProductRegistry,
        capture: CaptureManager,
        reload: Reloader,
        metrics: InspectorMetrics | None = None,
    ) -> None:
        """Bind the commands to the running daemon's parts."""
        self._status = status
        self._parts = parts
        self._products = products
        self._capture = capture
        self._reload = reload
        self._metrics = metrics
        self._handlers: dict[str, Callable[[dict[str, Any]], Answer]] = {
            "status": lambda _doc: self.status(),
            "trigger": self._trigger,
            "product": self._product,
            "reload": self._reload_request,
            "pause": lambda doc: self._pause(doc, True),
            "resume": lambda doc: self._pause(doc, False),
        }

    def handle(self, doc: object) -> Answer:
        """The answer to one request: ``{"ok": true, ...}`` or ``{"ok": false, "error": why}``."""
        if not isinstance(doc, dict) or not isinstance(doc.get("cmd"), str):
            return error_answer(f"a request is a JSON object with a cmd, one of {', '.join(COMMANDS)}")
        handler = self._handlers.get(doc["cmd"])
        if handler is None:
            return error_answer(f"unknown cmd {quote(doc['cmd'])}: use one of {', '.join(COMMANDS)}")
        try:
            return handler(doc)
        except (InspectorError, ValueError, TypeError) as exc:
            return error_answer(str(exc))

    def status(self) -> Answer:
        """Cameras (state, fps, trigger mode, product, queue depth), products, uptime and boot id."""
        cameras = self._status.camera_report()
        for name, report in cameras.items():
            report["product"] = self._products.active(name)
            report["pending_triggers"] = self._parts.pending(name)
        products = {}
        for name in self._products.products:
            info = self._products.info(name)
            products[name] = {
                "gallery": str(info.gallery),
                "gallery_hash": info.gallery_hash,
                "image_count": info.image_count,
                "backbone": info.backbone,
                "feature_bytes": info.feature_bytes,
                "signed_by": info.signed_by,
            }
        return {"ok": True, **self._status.daemon_report(), "cameras": cameras, "products": products}

    def _trigger(self, doc: dict[str, Any]) -> Answer:
        fields = {k: v for k, v in doc.items() if k != "cmd"}
        try:
            ack = submit_parsed(self._parts, fields)
        except TriggerRejected as exc:
            return {**error_answer(str(exc)), "reason": exc.reason}
        return {"ok": True, "camera": ack.camera, "seq": ack.seq, "part_id": ack.part_id, "product": ack.product,
                "fault": ack.fault, "duplicate": ack.duplicate}  # fmt: skip

    def _product(self, doc: dict[str, Any]) -> Answer:
        camera, product = _camera(doc), _required(doc, "product", product_name_problem)
        previous = self._products.set_active(camera, product)
        self.publish_gallery(camera)
        return {"ok": True, "camera": camera, "product": product, "previous": previous}

    def _reload_request(self, doc: dict[str, Any]) -> Answer:
        wanted = doc.get("product")
        if wanted is not None and product_name_problem(wanted):
            raise ValueError(f"{product_name_problem(wanted)} (or omit it: reload every product)")
        results = self._reload([wanted] if wanted else None)
        for camera in self._products.cameras:
            self.publish_gallery(camera)
        failed = [r for r in results if not r.ok]
        rows = [
            {"product": r.product, "ok": r.ok, "gallery_hash": r.gallery_hash, "reason": r.reason}
            for r in results
        ]
        answer: Answer = {"ok": not failed, "results": rows}
        if failed:
            answer["error"] = "; ".join(
                f"product {r.product}: refused, the old gallery stays: {r.reason}" for r in failed
            )
        return answer

    def _pause(self, doc: dict[str, Any], pause: bool) -> Answer:
        camera = _camera(doc)
        (self._capture.pause if pause else self._capture.resume)(camera)
        return {"ok": True, "camera": camera, "state": "paused" if pause else "resumed"}

    def publish_gallery(self, camera: str) -> None:
        """Export the product and gallery a camera uses now (``inspector_gallery_info``)."""
        if self._metrics is None:
            return
        product = self._products.active(camera)
        info = self._products.info(product)
        self._metrics.set_gallery(camera, product, info.gallery_hash, info.backbone)


def _required(doc: dict[str, Any], key: str, problem: Callable[[object], str | None]) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string")
    why = problem(value)
    if why:
        raise ValueError(why)
    return value


def _camera(doc: dict[str, Any]) -> str:
    return _required(doc, "camera", camera_name_problem)
