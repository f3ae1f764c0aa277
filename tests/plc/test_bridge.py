"""``inspector opcua --config`` beside the real daemon: fed by its bus, commanding through its control socket."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inspector.demo.data import write_demo_video
from inspector.plc.results import NOT_READY_SILENT
from tests.plc.opcua_client import call, camera, client, read, subscribe_records, wait_for
from tests.processes import DaemonProcess
from tests.support import SyntheticGallery, free_port
from tests.toml_config import NO_METRICS, Table, tcp, video_camera, write_daemon_config

CAMERA = "line"
CAMERA_FPS = 10.0
HEARTBEAT_S = 0.5
SILENCE_BUDGET_S = 3.0


@dataclass
class Bridged:
    """A daemon with one external-trigger camera and its control socket, and the OPC UA bridge beside it."""

    daemon: DaemonProcess
    bridge: DaemonProcess
    port: int


def bridged_config(folder: Path, video: Path, gallery: Path, ports: dict[str, int]) -> Path:
    opcua: Table = {"port": ports["opcua"], "allow_anonymous": True, "silence_budget_s": SILENCE_BUDGET_S}
    return write_daemon_config(
        folder / "bridged.toml",
        root={},
        products=[{"name": "a", "gallery": gallery}],
        cameras=[video_camera(CAMERA, video, CAMERA_FPS, trigger="external", product="a")],
        bus={"bind": tcp(ports["bus"]), "heartbeat_interval_s": HEARTBEAT_S},
        control={"enabled": True, "bind": tcp(ports["control"])},
        metrics=NO_METRICS,
        opcua=opcua,
    )


@pytest.fixture(scope="module")
def bridged(
    synthetic_gallery: SyntheticGallery, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bridged]:
    folder = tmp_path_factory.mktemp("bridged")
    video = folder / "line.avi"
    write_demo_video(video, 20, CAMERA_FPS, 4, 160, seed=7)
    ports = {name: free_port() for name in ("bus", "control", "opcua")}
    config = bridged_config(folder, video, synthetic_gallery.path, ports)
    daemon = DaemonProcess(config)
    bridge = DaemonProcess(config, command=("opcua",))
    try:
        daemon.wait_event("daemon_ready")
        assert bridge.wait_event("opcua_bridge_ready")["port"] == ports["opcua"]
        yield Bridged(daemon, bridge, ports["opcua"])
        os.kill(daemon.proc.pid, signal.SIGCONT)
        assert bridge.terminate() == 0
        assert daemon.terminate() == 0
    finally:
        bridge.close()
        daemon.close()


async def ready_is(c: Any, cam: Any, wanted: bool) -> None:
    async def reached() -> bool:
        return bool(await read(c, cam, "Ready")) is wanted

    await wait_for(reached, f"Ready {wanted}")


def test_a_trigger_through_the_bridge_gives_one_result_with_its_part_id(bridged: Bridged) -> None:
    async def scenario() -> tuple[int, list[Any]]:
        async with client(bridged.port) as c:
            cam = await camera(c, CAMERA)
            await ready_is(c, cam, True)
            records = await subscribe_records(c, cam)
            seq, error = await call(c, cam, "Trigger", "BR-1", "")
            assert error == "" and seq >= 0

            async def arrived() -> bool:
                return any(r.PartId == "BR-1" for r in records.results())

            await wait_for(arrived, "the result of BR-1")
            return seq, [r for r in records.results() if r.PartId == "BR-1"]

    seq, results = asyncio.run(scenario())
    assert [(r.Seq, r.Valid, r.Product) for r in results] == [(seq, True, "a")]


def test_a_silent_daemon_makes_the_camera_not_ready_and_its_results_invalid(bridged: Bridged) -> None:
    async def scenario() -> tuple[float, str, bool, bool]:
        async with client(bridged.port) as c:
            cam = await camera(c, CAMERA)
            await ready_is(c, cam, True)
            seq, error = await call(c, cam, "Trigger", "BR-2", "")
            assert seq >= 0, error

            async def result_in() -> bool:
                return bool(await read(c, cam, "LastResult", "PartId") == "BR-2")

            await wait_for(result_in, "the result of BR-2")
            os.kill(bridged.daemon.proc.pid, signal.SIGSTOP)  # the bus goes silent; the process lives on
            stopped = time.monotonic()
            await ready_is(c, cam, False)
            after_s = time.monotonic() - stopped
            state = str(await read(c, cam, "State"))
            valid = bool(await read(c, cam, "LastResult", "Valid"))
            accept = bool(await read(c, cam, "LastResult", "AcceptPart"))
            os.kill(bridged.daemon.proc.pid, signal.SIGCONT)
            await ready_is(c, cam, True)
            return after_s, state, valid, accept

    after_s, state, valid, accept = asyncio.run(scenario())
    print(f"not ready {after_s:.2f} s after the daemon stopped (budget {SILENCE_BUDGET_S} s)")
    assert state == NOT_READY_SILENT
    assert not valid and not accept, "a result held through the silence is still acceptable"


def test_the_bridge_commands_a_curve_daemon_only_with_an_allowed_key(tmp_path: Path) -> None:
    """control_ops over CURVE: the allowed key gets the daemon's answer, a plaintext bridge an error answer."""
    import json
    import threading

    import zmq

    from inspector.bus.curve import (
        CurveAuthenticator,
        apply_server,
        client_setup,
        generate_curve_keypair,
        load_curve_server,
    )
    from inspector.plc.bridge import control_ops

    server_secret, server_public, _ = generate_curve_keypair(tmp_path / "server")
    bridge_secret, bridge_public, _ = generate_curve_keypair(tmp_path / "bridge")
    server = load_curve_server(server_secret, [bridge_public])
    assert server is not None
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    auth = CurveAuthenticator(ctx, server)
    auth.start()
    rep = ctx.socket(zmq.REP)
    apply_server(rep, server)
    rep.bind("tcp://127.0.0.1:*")
    endpoint = rep.getsockopt_string(zmq.LAST_ENDPOINT)
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            if rep.poll(50):
                rep.send(json.dumps({"ok": True, "echo": json.loads(rep.recv())}).encode())

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        allowed = control_ops(ctx, endpoint, 30.0, client_setup(bridge_secret, server_public))
        assert allowed({"cmd": "status"}) == {"ok": True, "echo": {"cmd": "status"}}
        plain = control_ops(ctx, endpoint, 2.0)
        refused = plain({"cmd": "status"})
        assert refused["ok"] is False and "no answer" in refused["error"]
    finally:
        stop.set()
        thread.join()
        rep.close(linger=0)
        auth.stop()
        ctx.destroy(linger=0)
