"""The review page on the live view's server: operators judge REVIEW and FAIL parts, engineers export them.

Every request but the login needs a session cookie (HttpOnly, SameSite=Strict); every POST also needs the
session's CSRF token in ``X-CSRF-Token``. Judgments, logins and exports land in the audit trail.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import Counter
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from inspector.outputs.export import write_export
from inspector.outputs.http import EXECUTOR_KEY, POST_PREFIXES_KEY
from inspector.outputs.sessions import FAIL_LOCKED_OUT, Session, Sessions
from inspector.records.audit import AuditEntry, append
from inspector.records.judgments import JudgmentError, judge, judged, pending
from inspector.records.schema import parts

COOKIE = "inspector_review"
CSRF_HEADER = "X-CSRF-Token"
IMAGES = ("frame.png", "overlay.jpg", "mask_frame.png")
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".js": "text/javascript", ".html": "text/html"}
PAGE_FILES = ("review.html", "review.js")
NO_STORE = {"Cache-Control": "no-store"}
MAX_BODY_CHARS = 8192
EXPORT_NAME = re.compile(r"[^0-9A-Za-z_-]")


def _error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    return kind(text=json.dumps({"error": message}), content_type="application/json")


class ReviewPage:
    """The routes under ``/review``."""

    def __init__(
        self,
        sessions: Sessions,
        engine: Engine,
        archive_root: Path | None,
        export_dir: Path | None,
        queue_limit: int,
        login_failures: Counter,
    ) -> None:
        """Judge records of ``engine``'s database; images come from the archive under ``archive_root``."""
        self._sessions = sessions
        self._engine = engine
        self._archive = archive_root
        self._export_dir = export_dir
        self._queue_limit = queue_limit
        self._failures = login_failures

    def register(self, app: web.Application) -> None:
        """Add the routes to the live view's application (its server takes POST under ``/review/`` only)."""
        app[POST_PREFIXES_KEY] = ("/review/",)
        app.router.add_get("/review", self._page)
        app.router.add_get("/review/{name:review\\.js}", self._page)
        app.router.add_post("/review/login", self._login)
        app.router.add_post("/review/logout", self._logout)
        app.router.add_get("/review/api/session", self._session_doc)
        app.router.add_get("/review/api/queue", self._queue)
        app.router.add_get("/review/api/records/{id:\\d+}/{image}", self._image)
        app.router.add_post("/review/api/judge", self._judge)
        app.router.add_post("/review/api/export", self._export)

    # ------------------------------------------------------------------------------------------ helpers

    async def _blocking(self, request: web.Request, work: Callable[..., Any], *args: Any) -> Any:
        """Database and file work on the server's worker thread; a database that cannot answer is a 503."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(request.app[EXECUTOR_KEY], work, *args)
        except SQLAlchemyError as exc:
            raise _error(
                web.HTTPServiceUnavailable, f"the parts database cannot answer ({type(exc).__name__})"
            )

    def _session(self, request: web.Request, post: bool = False, role: str | None = None) -> Session:
        session = self._sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise _error(web.HTTPUnauthorized, "log in first (or again: the session ended)")
        if post and request.headers.get(CSRF_HEADER) != session.csrf:
            raise _error(web.HTTPForbidden, f"the {CSRF_HEADER} header is missing or wrong")
        if role is not None and session.role != role:
            raise _error(web.HTTPForbidden, f"{session.user} is an {session.role}: this needs an {role}")
        return session

    async def _body(self, request: web.Request) -> dict[str, Any]:
        text = await request.text()
        if len(text) > MAX_BODY_CHARS:
            raise _error(web.HTTPRequestEntityTooLarge, f"request body over {MAX_BODY_CHARS} characters")
        try:
            doc = json.loads(text or "{}")
        except json.JSONDecodeError:
            raise _error(web.HTTPBadRequest, "the body is not JSON") from None
        if not isinstance(doc, dict):
            raise _error(web.HTTPBadRequest, "the body must be a JSON object")
        return doc

    def _audit(self, entry: AuditEntry) -> None:
        with self._engine.begin() as conn:
            append(conn, [entry])

    # ------------------------------------------------------------------------------------------ routes

    async def _page(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "review.html")
        body = (resources.files("inspector.outputs") / "static" / name).read_bytes()
        content = CONTENT_TYPES[name[name.rfind(".") :]]
        return web.Response(body=body, content_type=content, charset="utf-8", headers=NO_STORE)

    async def _login(self, request: web.Request) -> web.Response:
        doc = await self._body(request)
        user, password = str(doc.get("user", ""))[:128], str(doc.get("password", ""))
        result = await self._blocking(request, self._sessions.login, user, password)
        address = request.remote or "unknown"
        if result.session is None:
            self._failures.labels(reason=result.failure).inc()
            await self._blocking(request, self._audit, AuditEntry(
                "login_failed", user, "review page", detail={"reason": result.failure, "address": address}))  # fmt: skip
            status = web.HTTPTooManyRequests if result.failure == FAIL_LOCKED_OUT else web.HTTPUnauthorized
            raise _error(
                status,
                "locked out for a while" if status is web.HTTPTooManyRequests else "wrong user or password",
            )
        session = result.session
        await self._blocking(request, self._audit, AuditEntry(
            "login", session.user, "review page", detail={"role": session.role, "address": address}))  # fmt: skip
        response = web.json_response({"user": session.user, "role": session.role, "csrf": session.csrf})
        response.set_cookie(COOKIE, result.token or "", httponly=True, samesite="Strict", path="/review")
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        session = self._session(request, post=True)
        self._sessions.logout(request.cookies.get(COOKIE))
        await self._blocking(request, self._audit, AuditEntry("logout", session.user, "review page"))
        response = web.json_response({"ok": True})
        response.del_cookie(COOKIE, path="/review")
        return response

    async def _session_doc(self, request: web.Request) -> web.Response:
        session = self._session(request)
        return web.json_response(
            {"user": session.user, "role": session.role, "csrf": session.csrf}, headers=NO_STORE
        )

    async def _queue(self, request: web.Request) -> web.Response:
        self._session(request)
        records = await self._blocking(request, self._pending)
        for doc in records:
            doc["images"] = {name: f"/review/api/records/{doc['id']}/{name}" for name in IMAGES}
        return web.json_response({"records": records}, headers=NO_STORE)

    def _pending(self) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            return pending(conn, self._queue_limit)

    async def _image(self, request: web.Request) -> web.Response:
        self._session(request)
        name = request.match_info["image"]
        if name not in IMAGES:
            raise _error(web.HTTPNotFound, f"no image {name!r}: one of {list(IMAGES)}")
        body = await self._blocking(request, self._image_bytes, int(request.match_info["id"]), name)
        if body is None:
            raise _error(web.HTTPNotFound, f"record {request.match_info['id']} has no archived {name}")
        return web.Response(body=body, content_type=CONTENT_TYPES[name[name.rfind(".") :]], headers=NO_STORE)

    def _image_bytes(self, record_id: int, name: str) -> bytes | None:
        with self._engine.connect() as conn:
            found = conn.execute(select(parts.c.archive_record).where(parts.c.id == record_id)).scalar()
        if not found or self._archive is None:
            return None
        path = (self._archive / str(found) / name).resolve()
        if not path.is_relative_to(self._archive.resolve()) or not path.is_file():
            return None
        return path.read_bytes()

    async def _judge(self, request: web.Request) -> web.Response:
        session = self._session(request, post=True)
        doc = await self._body(request)
        try:
            record_id = int(doc["id"])
        except (KeyError, TypeError, ValueError):
            raise _error(web.HTTPBadRequest, "id must be a record id") from None
        args = (record_id, str(doc.get("judgment", "")), session.user, str(doc.get("note", "")),
                doc.get("defect_type") or None)  # fmt: skip
        try:
            judged_now = await self._blocking(request, self._store, *args)
        except JudgmentError as exc:
            kind = (
                web.HTTPConflict
                if "already judged" in str(exc)
                else web.HTTPNotFound
                if "does not exist" in str(exc)
                else web.HTTPBadRequest
            )
            raise _error(kind, str(exc)) from None
        return web.json_response(
            {"ok": True, "id": record_id, "judgment": judged_now.judgment, "by": session.user}
        )

    def _store(self, record_id: int, judgment: str, user: str, note: str, defect_type: str | None) -> Any:
        with self._engine.begin() as conn:
            return judge(conn, record_id, judgment, user, note, defect_type)

    async def _export(self, request: web.Request) -> web.Response:
        session = self._session(request, post=True, role="engineer")
        if self._export_dir is None or self._archive is None:
            raise _error(
                web.HTTPConflict, "exports need review.export_dir (or $STATE_DIRECTORY) and the archive"
            )
        out = self._export_dir / EXPORT_NAME.sub("_", datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ"))
        written = await self._blocking(request, self._write, out, session.user)
        return web.json_response({"ok": True, "out": str(out), "images": written})

    def _write(self, out: Path, user: str) -> int:
        assert self._archive is not None
        with self._engine.connect() as conn:
            records = judged(conn)
        written, missing = write_export(records, self._archive, out)
        self._audit(
            AuditEntry("review_export", user, str(out), detail={"images": written, "missing": len(missing)})
        )
        return written
