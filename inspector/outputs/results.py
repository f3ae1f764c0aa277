"""``GET /results/<camera>/<seq>`` (and ``/latest``): a recent verdict's header, evidence and images over HTTP.

Recent verdicts come from the in-memory ring, older ones from the defect archive (when it holds them). The
JSON names the images by URL; ``/results/<camera>/<seq>/<image>`` serves each one (``overlay.jpg``: the
frame with the heatmap; ``mask.png``: the binary mask in the model crop's pixels; ``mask_frame.png``: the
same mask in the camera frame's pixels; ``frame.png``: the frame as captured).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from inspector.core.inputs import quote
from inspector.core.records import Outcome
from inspector.outputs.archive import ArchivedRecord, DefectArchive
from inspector.outputs.evidence import (
    EVIDENCE_FILE,
    HEADER_FILE,
    IMAGE_NAMES,
    ImageName,
    content_type,
    evidence_of,
    images_of,
    published_header,
    render,
)
from inspector.outputs.http import EXECUTOR_KEY
from inspector.outputs.ring import ResultsRing

BOOT_ID = re.compile(r"^[0-9a-f]{32}$")
LATEST = "latest"
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class Found:
    """A verdict found in memory (``outcome``) or in the archive (``record``)."""

    outcome: Outcome | None = None
    record: ArchivedRecord | None = None


class ResultsApp:
    """The routes of the results endpoint over the ring and (optionally) the archive."""

    def __init__(
        self,
        cameras: Sequence[str],
        boot_id: str,
        ring: ResultsRing,
        archive: DefectArchive | None,
        jpeg_quality: int,
    ) -> None:
        """Serve the verdicts of ``cameras`` of the daemon run ``boot_id``."""
        self._cameras = frozenset(cameras)
        self._boot_id = boot_id
        self._ring = ring
        self._archive = archive
        self._jpeg_quality = jpeg_quality

    def application(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_get("/results/{camera}/{seq}", self.result)
        app.router.add_get("/results/{camera}/{seq}/{image}", self.image)
        return app

    def _lookup(self, request: web.Request) -> Found:
        camera, seq_text = request.match_info["camera"], request.match_info["seq"]
        if camera not in self._cameras:
            raise _not_found(
                f"camera {quote(camera)} is not one of this daemon's cameras: {sorted(self._cameras)}"
            )
        boot_id = request.query.get("boot_id", self._boot_id)
        if not BOOT_ID.match(boot_id):
            raise _bad_request(f"boot_id {quote(boot_id)} is not 32 hex digits")
        if seq_text == LATEST:
            return self._latest(camera, boot_id)
        if not (seq_text.isascii() and seq_text.isdigit()):
            raise _bad_request(f"seq {quote(seq_text)} is not a number or {LATEST!r}")
        seq = int(seq_text)
        outcome = self._ring.find(camera, seq) if boot_id == self._boot_id else None
        record = self._archive.find(camera, seq, boot_id) if self._archive and outcome is None else None
        if outcome is None and record is None:
            raise _not_found(f"camera {camera} seq {seq} (boot {boot_id}) is neither recent nor archived")
        return Found(outcome, record)

    def _latest(self, camera: str, boot_id: str) -> Found:
        """The newest verdict of a camera in the daemon run ``boot_id`` (an earlier run: the archive only)."""
        outcome = self._ring.latest(camera) if boot_id == self._boot_id else None
        record = self._archive.latest(camera, boot_id) if self._archive and outcome is None else None
        if outcome is None and record is None:
            raise _not_found(
                f"camera {camera} has no verdict yet in boot {boot_id} (neither in memory nor archived)"
            )
        return Found(outcome, record)

    async def result(self, request: web.Request) -> web.Response:
        """The header, evidence and image URLs of one verdict."""
        found = self._lookup(request)
        loop = asyncio.get_running_loop()
        doc = await loop.run_in_executor(request.app[EXECUTOR_KEY], self._document, found)
        return web.json_response(doc, headers=NO_STORE)

    def _document(self, found: Found) -> dict[str, Any]:
        if found.outcome is not None:
            header = published_header(found.outcome)
            evidence = evidence_of(found.outcome, header).model_dump(mode="json")
            header_doc = json.loads(header.model_dump_json())
            source = "memory"
        else:
            assert found.record is not None
            header_doc = json.loads(DefectArchive.read(found.record, HEADER_FILE))
            evidence = json.loads(DefectArchive.read(found.record, EVIDENCE_FILE))
            source = "archive"
        base = f"/results/{header_doc['camera']}/{header_doc['seq']}"
        query = f"?boot_id={header_doc['boot_id']}"
        return {
            "source": source,
            "header": header_doc,
            "evidence": evidence,
            "images": {name: f"{base}/{name}{query}" for name in evidence["images"]},
        }

    async def image(self, request: web.Request) -> web.Response:
        """One image of one verdict."""
        name = request.match_info["image"]
        if name not in IMAGE_NAMES:
            raise _not_found(f"no image {name!r}: one of {list(IMAGE_NAMES)}")
        found = self._lookup(request)
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(request.app[EXECUTOR_KEY], self._image_bytes, found, name)
        except FileNotFoundError:
            raise _not_found(f"{name} is not in this record (removed, or the verdict has none)") from None
        return web.Response(body=body, content_type=content_type(name), headers=NO_STORE)

    def _image_bytes(self, found: Found, name: ImageName) -> bytes:
        if found.outcome is not None:
            if name not in images_of(found.outcome):
                raise FileNotFoundError(name)
            return render(found.outcome, name, self._jpeg_quality)
        assert found.record is not None
        return DefectArchive.read(found.record, name)


def _not_found(message: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=json.dumps({"error": message}), content_type="application/json")


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")
