"""The OPC UA server with a real asyncua client: results, the handshake, readiness, methods and who may log in."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.crypto import cert_gen
from asyncua.ua.uaerrors import BadUserAccessDenied, UaError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from inspector.bus.wire import CameraStatus, Heartbeat, VerdictHeader, rfc3339
from inspector.config.opcua import OpcUaConfig
from inspector.core.names import LATENCY_STAGES
from inspector.core.passwords import hash_password
from inspector.plc.pki import read_certificate, trust
from inspector.plc.server import PlcServer
from tests.plc.opcua_client import call, camera, child, client, read, subscribe_records, wait_for

CAMERA = "cam"
BOOT = "b" * 32
FAST_ITERATIONS = 1000  # password hashing cost in tests (the product's default is 600 000)
BURST = 40


STATUS = {"ok": True, "cameras": {CAMERA: {"product": "a"}}, "products": {"a": {}, "b": {}}}


@dataclass
class Ops:
    """Line commands as the server calls them: recorded (status polls apart), answered from a script."""

    answers: dict[str, dict[str, Any]] = field(default_factory=lambda: {"status": STATUS})
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, doc: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if doc["cmd"] != "status":
                self.calls.append(doc)
        return self.answers.get(doc["cmd"], {"ok": True})


def heartbeat(state: str = "ready", camera_state: str = "up", worker_alive: bool = True) -> Heartbeat:
    return Heartbeat.model_validate({
        "boot_id": BOOT, "published_at": rfc3339(0.0), "state": state, "uptime_s": 1.0,
        "cameras": {CAMERA: CameraStatus.model_validate({"state": camera_state, "up": camera_state == "up", "frames": 1})},
        "frames_published": 0, "worker_alive": worker_alive,
    })  # fmt: skip


def verdict(seq: int, part_id: str, verdict: str = "PASS", **fields: Any) -> VerdictHeader:
    scored = verdict in ("PASS", "REVIEW", "FAIL")
    doc = {
        "boot_id": BOOT, "camera": CAMERA, "seq": seq, "part_id": part_id, "captured_at": rfc3339(1000.0 + seq),
        "published_at": rfc3339(1000.5 + seq), "age_ms": 500.0, "verdict": verdict,
        "score": 1.5 if scored else None, "threshold": 2.0 if scored else None,
        "pixel_threshold": 1.0 if scored else None,
        "defect_area_px": (0 if verdict == "PASS" else 12) if scored else None,
        "defect_count": (0 if verdict == "PASS" else 1) if scored else None,
        "product": "a", "gallery": "f" * 64, "error": None if scored else "no frame",
        "latency_ms": dict.fromkeys(LATENCY_STAGES if scored else ("queue", "encode", "end_to_end"), 1.0),
    }  # fmt: skip
    return VerdictHeader.model_validate(doc | fields)


def start(ops: Ops | None = None, **settings: Any) -> PlcServer:
    config = OpcUaConfig.model_validate({"port": 0, "allow_anonymous": True, **settings})
    server = PlcServer(config, [CAMERA], ops or Ops())
    server.start()
    return server


@pytest.fixture
def served() -> Iterator[PlcServer]:
    server = start(results_per_camera=3)
    yield server
    server.stop()


def test_every_result_reaches_a_data_change_subscription_in_order_with_its_part_id(served: PlcServer) -> None:
    async def scenario() -> list[Any]:
        async with client(served.port) as c:
            cam = await camera(c, CAMERA)
            records = await subscribe_records(c, cam)
            served.feed_heartbeat(heartbeat())
            for seq in range(BURST):
                served.feed_verdict(verdict(seq, f"P-{seq}", "FAIL" if seq % 5 == 0 else "PASS"))

            async def all_in() -> bool:
                return len(records.results()) == BURST

            await wait_for(all_in, f"{BURST} results on the subscription")
            assert await read(c, cam, "Count") == BURST and await read(c, cam, "FailCount") == BURST // 5
            return records.results()

    got = asyncio.run(scenario())
    assert [r.PartId for r in got] == [f"P-{s}" for s in range(BURST)]
    assert [r.ResultId for r in got] == list(range(1, BURST + 1))
    assert [r.AcceptPart for r in got] == [s % 5 != 0 for s in range(BURST)]
    assert all(r.Seq == int(r.PartId[2:]) and r.Product == "a" and r.Valid for r in got)


def test_results_stay_pending_until_acknowledged_and_an_overflow_is_counted(served: PlcServer) -> None:
    async def scenario() -> None:
        async with client(served.port) as c:
            cam = await camera(c, CAMERA)
            served.feed_heartbeat(heartbeat())
            for seq in range(5):
                served.feed_verdict(verdict(seq, f"P-{seq}"))

            async def five() -> bool:
                return bool(await read(c, cam, "Count") == 5)

            await wait_for(five, "five results")
            assert await read(c, cam, "PendingResults") == 3 and await read(c, cam, "OverwriteCount") == 2
            assert await read(c, cam, "OldestResult", "PartId") == "P-2"
            assert await read(c, cam, "OldestResult", "ResultId") == 3
            assert await call(c, cam, "AcknowledgeResult", ua.Variant(3, ua.VariantType.UInt64)) is True
            assert await call(c, cam, "AcknowledgeResult", ua.Variant(3, ua.VariantType.UInt64)) is False

            async def advanced() -> bool:
                return bool(await read(c, cam, "OldestResult", "ResultId") == 4)

            await wait_for(advanced, "OldestResult to move to the next pending result")
            assert await read(c, cam, "OldestResult", "PartId") == "P-3"
            assert await read(c, cam, "PendingResults") == 2
            assert await read(c, cam, "LastResult", "PartId") == "P-4"

    asyncio.run(scenario())


def test_a_silent_daemon_makes_the_camera_not_ready_and_a_held_pass_invalid() -> None:
    server = start(silence_budget_s=0.5)
    try:

        async def scenario() -> None:
            async with client(server.port) as c:
                cam = await camera(c, CAMERA)
                server.feed_heartbeat(heartbeat())
                server.feed_verdict(verdict(0, "P-0"))

                async def ready_with_pass() -> bool:
                    return bool(await read(c, cam, "Ready")) and bool(
                        await read(c, cam, "LastResult", "AcceptPart")
                    )

                await wait_for(ready_with_pass, "Ready and an accepted PASS")
                # No heartbeat any more: within the budget (and the watch interval) nothing may be accepted.

                async def not_ready() -> bool:
                    return not await read(c, cam, "Ready")

                await wait_for(not_ready, "Ready to fall after the silence budget")
                assert str(await read(c, cam, "State")).startswith("NotReady")
                assert await read(c, cam, "LastResult", "Valid") is False
                assert await read(c, cam, "LastResult", "AcceptPart") is False
                assert await read(c, cam, "OldestResult", "AcceptPart") is False
                record = await read(c, cam, "LastResult", "Result")
                assert record.Verdict == "PASS" and record.AcceptPart is False
                server.feed_heartbeat(heartbeat())

                async def ready() -> bool:
                    return bool(await read(c, cam, "Ready"))

                await wait_for(ready, "Ready again with heartbeats")
                assert await read(c, cam, "LastResult", "AcceptPart") is False, (
                    "a stale PASS came back to life"
                )

        asyncio.run(scenario())
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("beat", "reason"),
    [
        (heartbeat(state="starting"), "daemon starting"),
        (heartbeat(camera_state="down"), "camera down"),
        (heartbeat(worker_alive=False), "worker"),
    ],
)
def test_the_camera_is_not_ready_unless_the_daemon_its_worker_and_the_camera_are(
    served: PlcServer, beat: Heartbeat, reason: str
) -> None:
    async def scenario() -> None:
        async with client(served.port) as c:
            cam = await camera(c, CAMERA)
            served.feed_heartbeat(beat)

            async def explained() -> bool:
                return reason in str(await read(c, cam, "State"))

            await wait_for(explained, f"State to say {reason!r}")
            assert await read(c, cam, "Ready") is False

    asyncio.run(scenario())


def test_methods_send_the_line_commands_and_return_their_answers() -> None:
    ops = Ops(
        answers={"trigger": {"ok": True, "seq": 17}, "product": {"ok": False, "error": "unknown product 'z'"}}
    )
    server = start(ops)
    try:

        async def scenario() -> None:
            async with client(server.port) as c:
                cam = await camera(c, CAMERA)
                assert await call(c, cam, "Trigger", "P-9", "b") == [17, ""]
                assert await call(c, cam, "SelectProduct", "z") == [False, "unknown product 'z'"]
                assert await call(c, cam, "Reload") == [True, ""]
                ops.answers["trigger"] = {"ok": False, "error": "camera cam is paused"}
                assert await call(c, cam, "Trigger", "P-10", "") == [-1, "camera cam is paused"]

        asyncio.run(scenario())
    finally:
        server.stop()
    assert ops.calls == [
        {"cmd": "trigger", "camera": CAMERA, "part_id": "P-9", "product": "b"},
        {"cmd": "product", "camera": CAMERA, "product": "z"},
        {"cmd": "reload"},
        {"cmd": "trigger", "camera": CAMERA, "part_id": "P-10"},
    ]


def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.toml"
    path.write_text(
        f'[users]\nplc = "{hash_password("right-password", FAST_ITERATIONS)}"\n', encoding="utf-8"
    )
    return path


def test_anonymous_and_wrong_passwords_are_refused_and_the_right_one_reads(tmp_path: Path) -> None:
    server = start(allow_anonymous=False, users_file=users_file(tmp_path))
    try:

        async def connect(user: str | None, password: str | None) -> str:
            try:
                async with client(server.port, user, password) as c:
                    return str(await read(c, await camera(c, CAMERA), "State"))
            except (BadUserAccessDenied, UaError) as exc:
                return f"refused: {type(exc).__name__}"

        assert asyncio.run(connect(None, None)).startswith("refused")
        assert asyncio.run(connect("plc", "wrong-password")).startswith("refused")
        assert asyncio.run(connect("nobody", "right-password")).startswith("refused")
        assert asyncio.run(connect("plc", "right-password")).startswith("NotReady")
    finally:
        server.stop()


def write_certificate(folder: Path, name: str, uri: str, use: Any) -> tuple[Path, Path]:
    key = cert_gen.generate_private_key()
    names = [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]
    cert = cert_gen.generate_self_signed_app_certificate(
        key, uri, {"commonName": name}, names, extended=[use]
    )
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


def test_basic256sha256_sessions_need_a_trusted_channel_certificate_and_a_password_or_identity(
    tmp_path: Path,
) -> None:
    server_cert, server_key = write_certificate(
        tmp_path, "server", "urn:inspector:server", ExtendedKeyUsageOID.SERVER_AUTH
    )
    trusted = write_certificate(tmp_path, "trusted", "urn:plc:trusted", ExtendedKeyUsageOID.CLIENT_AUTH)
    stranger = write_certificate(tmp_path, "stranger", "urn:plc:stranger", ExtendedKeyUsageOID.CLIENT_AUTH)
    pki = tmp_path / "pki"
    trust(trusted[0], pki)
    server = start(
        allow_anonymous=False, users_file=users_file(tmp_path), certificate=server_cert, private_key=server_key,
        client_certificates=[trusted[0]], application_uri="urn:inspector:server", pki_dir=pki,
    )  # fmt: skip
    try:

        async def connect(mode: str, identity: tuple[Path, Path], user: str | None = None) -> str:
            c = client(server.port, user, "right-password" if user else None)
            cert, key = identity
            if mode != "None":
                await c.set_security_string(f"Basic256Sha256,{mode},{cert},{key}")
            if user is None and mode != "None":
                await c.load_client_certificate(str(cert))
                await c.load_private_key(key)
            try:
                async with c:
                    return str(await read(c, await camera(c, CAMERA), "State"))
            except (TimeoutError, BadUserAccessDenied, UaError, OSError) as exc:
                return f"refused: {type(exc).__name__}"

        assert asyncio.run(connect("SignAndEncrypt", trusted, user="plc")).startswith("NotReady")
        assert asyncio.run(connect("Sign", trusted, user="plc")).startswith("NotReady")
        assert asyncio.run(connect("SignAndEncrypt", trusted)).startswith("NotReady")
        assert asyncio.run(connect("SignAndEncrypt", stranger, user="plc")).startswith("refused")
        assert asyncio.run(connect("Sign", stranger, user="plc")).startswith("refused")
        assert asyncio.run(connect("None", stranger, user="plc")).startswith("refused"), (
            "a clear-text endpoint"
        )
        rejected = list((pki / "rejected").iterdir())
        assert len(rejected) == 1 and rejected[0].read_bytes() == read_certificate(stranger[0]).public_bytes(
            Encoding.DER
        )
    finally:
        server.stop()


def test_an_error_result_is_not_accepted_and_says_why_and_other_cameras_are_ignored(
    served: PlcServer,
) -> None:
    async def scenario() -> None:
        async with client(served.port) as c:
            cam = await camera(c, CAMERA)
            other = verdict(0, "X-1").model_copy(update={"camera": "elsewhere"})
            served.feed_verdict(other)
            error = verdict(1, "E-1", "ERROR").model_copy(
                update={"score": None, "threshold": None, "error": "no frame"}
            )
            served.feed_verdict(error)

            async def one() -> bool:
                return bool(await read(c, cam, "Count") == 1)

            await wait_for(one, "the ERROR result")
            assert await read(c, cam, "ErrorCount") == 1
            assert await read(c, cam, "LastResult", "Error") == "no frame"
            assert math.isnan(await read(c, cam, "LastResult", "Score"))
            assert await read(c, cam, "LastResult", "AcceptPart") is False

    asyncio.run(scenario())
    assert served.book.snapshot(CAMERA).last is not None


def test_the_node_tree_has_the_documented_variables(served: PlcServer) -> None:
    async def scenario() -> set[str]:
        async with client(served.port) as c:
            cam = await camera(c, CAMERA)
            names = {str((await n.read_browse_name()).Name) for n in await cam.get_children()}
            last = await child(c, cam, "LastResult")
            names |= {
                "LastResult/" + str((await n.read_browse_name()).Name) for n in await last.get_children()
            }
            return names

    names = asyncio.run(scenario())
    documented = Path(__file__).resolve().parents[2] / "docs" / "plc.md"
    text = documented.read_text(encoding="utf-8")
    for name in names:
        assert f"`{name.split('/')[-1]}`" in text, f"{name} is not in docs/plc.md"


def test_the_defect_count_and_the_largest_region_s_area_reach_the_result_and_its_structure(
    served: PlcServer,
) -> None:
    defects = [
        {"area_px": 120, "peak": 3.5, "box": [4, 5, 20, 16]},
        {"area_px": 9, "peak": 2.1, "box": [1, 1, 4, 4]},
    ]

    async def scenario() -> tuple[Any, ...]:
        async with client(served.port) as c:
            cam = await camera(c, CAMERA)
            records = await subscribe_records(c, cam)
            served.feed_heartbeat(heartbeat())
            served.feed_verdict(verdict(0, "P-0", "FAIL", defect_count=3, defects=defects))
            served.feed_verdict(verdict(1, "P-1", "PASS", defect_count=0))

            async def both() -> bool:
                return len(records.results()) == 2

            await wait_for(both, "two results")
            fail, ok = records.results()
            count = await read(c, cam, "OldestResult", "DefectCount")
            largest = await read(c, cam, "OldestResult", "LargestDefectAreaPx")
            return fail, ok, count, largest, await read(c, cam, "LastResult", "LargestDefectAreaPx")

    fail, ok, count, largest, last = asyncio.run(scenario())
    assert (fail.DefectCount, fail.LargestDefectAreaPx, count, largest) == (3, 120, 3, 120)
    assert (ok.DefectCount, ok.LargestDefectAreaPx, last) == (0, 0, 0)
