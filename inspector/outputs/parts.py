"""The parts database as an output: each published verdict handed to the records writer, and ``/parts``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from inspector.config.parts import PartsConfig
from inspector.core.names import VERDICTS
from inspector.core.records import Outcome
from inspector.outputs.archive import ALWAYS_ARCHIVED, record_name
from inspector.outputs.http import EXECUTOR_KEY
from inspector.records.audit import AuditEntry
from inspector.records.queries import MAX_LIMIT, PartsFilter, find_records, parse_time
from inspector.records.schema import PartRecord
from inspector.records.writer import PartsWriter

CLOSE_TIMEOUT_S = 5.0
PAGE_DEFAULT = 100


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def record_of(item: tuple[bytes, bool] | AuditEntry) -> PartRecord | AuditEntry:
    """The record of a published header (JSON bytes), ``archived`` when the archive keeps every such verdict
    (an audit entry passes through).

    Raises:
        ValueError, KeyError, TypeError: not a verdict header.
    """
    if isinstance(item, AuditEntry):
        return item
    published, archived = item
    h: dict[str, Any] = json.loads(published)
    archive_record = None
    if archived:
        day, name = record_name(_when(h["captured_at"]).timestamp(), h["seq"], h["verdict"], h["boot_id"])
        archive_record = f"{h['camera']}/{day}/{name}"
    return PartRecord(
        boot_id=h["boot_id"], camera=h["camera"], seq=int(h["seq"]), verdict=h["verdict"],
        captured_at=_when(h["captured_at"]), published_at=_when(h["published_at"]), part_id=h.get("part_id"),
        product=h.get("product"), gallery=h.get("gallery"), score=h.get("score"), threshold=h.get("threshold"),
        defect_area_px=h.get("defect_area_px"), error=h.get("error"),
        end_to_end_ms=(h.get("latency_ms") or {}).get("end_to_end"), age_ms=h.get("age_ms"),
        archive_record=archive_record,
    )  # fmt: skip


class PartsSink:
    """A pipeline sink: queues the published header for the writer's thread (parsed there), never blocks."""

    name = "parts"

    def __init__(self, writer: PartsWriter, archive_on: bool) -> None:
        """Hand verdicts to ``writer``; ``archive_on``: FAIL, TIMEOUT and ERROR records name their archive."""
        self._writer = writer
        self._archive_on = archive_on

    def deliver(self, outcome: Outcome) -> None:
        """Queue the verdict as published (a verdict that was not published has no record)."""
        if outcome.published is not None:
            self._writer.submit((outcome.published, self._archive_on and outcome.verdict in ALWAYS_ARCHIVED))

    def close(self) -> None:
        """Write (or spool) what is queued, within ``CLOSE_TIMEOUT_S``."""
        self._writer.close(CLOSE_TIMEOUT_S)


class PartsRoutes:
    """``GET /parts/<part_id>`` and ``GET /parts?since=&until=&verdict=&camera=&product=&limit=&before_id=``
    on the results endpoint, read from the database on the server's worker threads."""

    def __init__(self, engine: Engine, config: PartsConfig) -> None:
        """Read through ``engine``; naive times in queries are in ``config.timezone``."""
        self._engine = engine
        self._zone = ZoneInfo(config.timezone)

    def register(self, app: web.Application) -> None:
        """Add the routes to an application."""
        app.router.add_get("/parts", self.listing)
        app.router.add_get("/parts/{part_id}", self.by_part)

    async def by_part(self, request: web.Request) -> web.Response:
        """Every record of one part id, newest first, with its result links."""
        found = PartsFilter(part_id=request.match_info["part_id"], limit=MAX_LIMIT)
        return await self._respond(request, found)

    async def listing(self, request: web.Request) -> web.Response:
        """A page of records, newest first; ``next`` names the following page."""
        return await self._respond(request, self._filter(request.query))

    def _filter(self, q: Mapping[str, str]) -> PartsFilter:
        try:
            since = parse_time(q["since"], self._zone) if "since" in q else None
            until = parse_time(q["until"], self._zone) if "until" in q else None
            limit = int(q.get("limit", PAGE_DEFAULT))
            before = int(q["before_id"]) if "before_id" in q else None
        except ValueError as exc:
            raise _bad_request(f"bad query: {exc}") from None
        verdict = q.get("verdict")
        if verdict is not None and verdict not in VERDICTS:
            raise _bad_request(f"verdict {verdict!r} is not one of {list(VERDICTS)}")
        if not 1 <= limit <= MAX_LIMIT:
            raise _bad_request(f"limit {limit} is not between 1 and {MAX_LIMIT}")
        return PartsFilter(camera=q.get("camera"), product=q.get("product"), verdict=verdict, since=since,
                           until=until, before_id=before, limit=limit)  # fmt: skip

    async def _respond(self, request: web.Request, f: PartsFilter) -> web.Response:
        loop = asyncio.get_running_loop()
        try:
            records = await loop.run_in_executor(request.app[EXECUTOR_KEY], self._read, f)
        except SQLAlchemyError as exc:
            message = (
                f"the parts database cannot be read now ({type(exc).__name__}); records wait in the spool"
            )
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": message}), content_type="application/json"
            ) from None
        for doc in records:
            link = f"/results/{doc['camera']}/{doc['seq']}?boot_id={doc['boot_id']}"
            doc["result_url"] = link if doc["archive_record"] else None
        body: dict[str, Any] = {"records": records}
        if f.part_id is None and len(records) == f.limit:
            body["next"] = {"before_id": records[-1]["id"]}
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def _read(self, f: PartsFilter) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            return find_records(conn, f)


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")
