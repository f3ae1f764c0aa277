"""The OPC UA server inside the real daemon (``[opcua] enabled``), read by a real asyncua client."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from inspector.bus.wire import VerdictHeader
from inspector.core.passwords import hash_password
from inspector.demo.data import write_demo_video
from tests.plc.opcua_client import call, camera, client, read, subscribe_records, wait_for
from tests.processes import DaemonProcess, Subscriber
from tests.support import SyntheticGallery, build_synthetic_gallery, free_port, wait_until
from tests.toml_config import NO_METRICS, Table, tcp, video_camera, write_daemon_config

CAMERA = "line"
CAMERA_FPS = 10.0
USER, PASSWORD = "plc", "line-7-password"
FAST_ITERATIONS = 1000
PUSHED = 12

Context = zmq.Context[zmq.Socket[bytes]]


@dataclass
class Plant:
    """A running daemon with one external-trigger camera, two products and its OPC UA server."""

    daemon: DaemonProcess
    bus: Subscriber
    push: zmq.Socket[bytes]
    opcua_port: int
    hashes: dict[str, str]

    def verdicts_for(self, part_ids: list[str]) -> list[VerdictHeader]:
        """The bus verdicts of these parts once all arrived, in arrival order."""
        wanted = set(part_ids)
        wait_until(
            lambda: wanted <= {v.part_id for v in self.bus.got.of(CAMERA)}, f"{len(wanted)} bus verdicts"
        )
        return [v for v in self.bus.got.of(CAMERA) if v.part_id in wanted]


def plant_config(
    folder: Path, video: Path, galleries: dict[str, Path], ports: dict[str, int], users: Path
) -> Path:
    opcua: Table = {"enabled": True, "port": ports["opcua"], "users_file": users, "results_per_camera": 64}
    return write_daemon_config(
        folder / "plant.toml",
        root={},
        products=[{"name": n, "gallery": g} for n, g in galleries.items()],
        cameras=[video_camera(CAMERA, video, CAMERA_FPS, trigger="external", product="a")],
        triggers={"bind": tcp(ports["triggers"])},
        bus={"bind": tcp(ports["bus"])},
        metrics=NO_METRICS,
        opcua=opcua,
    )


@pytest.fixture(scope="module")
def plant(synthetic_gallery: SyntheticGallery, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    folder = tmp_path_factory.mktemp("plant")
    other = build_synthetic_gallery(folder / "b", 8, seed=21)
    galleries = {"a": folder / "a.safetensors", "b": folder / "b.safetensors"}
    shutil.copyfile(synthetic_gallery.path, galleries["a"])
    shutil.copyfile(other.path, galleries["b"])
    video = folder / "line.avi"
    write_demo_video(video, 20, CAMERA_FPS, 4, 160, seed=5)
    users = folder / "users.toml"
    users.write_text(f'[users]\n{USER} = "{hash_password(PASSWORD, FAST_ITERATIONS)}"\n', encoding="utf-8")
    ports = {name: free_port() for name in ("triggers", "bus", "opcua")}
    bus = Subscriber(f"tcp://127.0.0.1:{ports['bus']}")
    daemon = DaemonProcess(plant_config(folder, video, galleries, ports, users))
    context: Context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{ports['triggers']}")
    try:
        daemon.wait_event("daemon_ready")
        listening = [e for e in daemon.events("output_listening") if e.get("section") == "opcua"]
        assert listening and listening[0]["port"] == ports["opcua"]
        hashes = {"a": synthetic_gallery.content_hash, "b": other.content_hash}
        yield Plant(daemon, bus, push, ports["opcua"], hashes)
        assert daemon.terminate() == 0
    finally:
        push.close(linger=0)
        context.term()
        bus.close()
        daemon.close()


async def results_for(records: Any, part_ids: list[str]) -> list[Any]:
    wanted = set(part_ids)

    async def arrived() -> bool:
        return wanted <= {r.PartId for r in records.results()}

    await wait_for(arrived, f"{len(wanted)} results on the subscription")
    return [r for r in records.results() if r.PartId in wanted]


def test_every_verdict_reaches_a_data_change_subscription_with_its_part_id(plant: Plant) -> None:
    parts = [f"Z-{i:03d}" for i in range(PUSHED)]

    async def scenario() -> list[Any]:
        async with client(plant.opcua_port, USER, PASSWORD) as c:
            cam = await camera(c, CAMERA)

            async def ready() -> bool:
                return bool(await read(c, cam, "Ready"))

            await wait_for(ready, "the camera ready")
            records = await subscribe_records(c, cam)
            for part in parts:
                plant.push.send(json.dumps({"camera": CAMERA, "part_id": part}).encode())
            return await results_for(records, parts)

    got = asyncio.run(scenario())
    bus = plant.verdicts_for(parts)
    assert [(r.PartId, r.Seq, r.Verdict) for r in got] == [(v.part_id, v.seq, v.verdict) for v in bus]
    assert [r.PartId for r in got] == parts, "results out of trigger order"
    assert all(
        r.Valid and r.AcceptPart == (r.Verdict == "PASS") and r.GalleryHash == plant.hashes["a"] for r in got
    )
    assert len({r.ResultId for r in got}) == PUSHED


def test_the_trigger_method_gives_exactly_one_result_with_that_part_id(plant: Plant) -> None:
    async def scenario() -> tuple[int, list[Any], int]:
        async with client(plant.opcua_port, USER, PASSWORD) as c:
            cam = await camera(c, CAMERA)
            records = await subscribe_records(c, cam)
            before = await read(c, cam, "Count")
            seq, error = await call(c, cam, "Trigger", "M-1", "")
            assert error == "" and seq >= 0
            await results_for(records, ["M-1"])
            # A later trigger's result arriving proves nothing more came for M-1 in between.
            await call(c, cam, "Trigger", "M-2", "")
            await results_for(records, ["M-2"])
            after = await read(c, cam, "Count")
            return seq, [r for r in records.results() if r.PartId == "M-1"], after - before

    seq, results, new = asyncio.run(scenario())
    assert len(results) == 1 and results[0].Seq == seq and new == 2
    (verdict,) = plant.verdicts_for(["M-1"])
    assert verdict.seq == seq and [v.part_id for v in plant.bus.got.of(CAMERA)].count("M-1") == 1


def test_select_product_changes_the_product_of_the_following_results(plant: Plant) -> None:
    async def scenario() -> tuple[list[Any], str]:
        async with client(plant.opcua_port, USER, PASSWORD) as c:
            cam = await camera(c, CAMERA)
            records = await subscribe_records(c, cam)
            assert await call(c, cam, "SelectProduct", "b") == [True, ""]
            await call(c, cam, "Trigger", "S-b", "")
            got = await results_for(records, ["S-b"])
            shown = await read(c, cam, "Product")
            refused = await call(c, cam, "SelectProduct", "nothing")
            assert refused[0] is False and "nothing" in refused[1]
            assert await call(c, cam, "SelectProduct", "a") == [True, ""]
            await call(c, cam, "Trigger", "S-a", "")
            got += await results_for(records, ["S-a"])
            return got, shown

    got, shown = asyncio.run(scenario())
    assert [(r.PartId, r.Product, r.GalleryHash) for r in got] == [
        ("S-b", "b", plant.hashes["b"]),
        ("S-a", "a", plant.hashes["a"]),
    ]
    assert shown == "b"


def test_anonymous_and_wrong_password_sessions_are_refused_by_the_daemon(plant: Plant) -> None:
    async def state(user: str | None, password: str | None) -> str:
        try:
            async with client(plant.opcua_port, user, password) as c:
                return str(await read(c, await camera(c, CAMERA), "State"))
        except Exception as exc:  # noqa: BLE001 - the refusal is the result
            return f"refused: {type(exc).__name__}"

    assert asyncio.run(state(None, None)).startswith("refused")
    assert asyncio.run(state(USER, "wrong-password")).startswith("refused")
    assert asyncio.run(state(USER, PASSWORD)) == "Ready"
