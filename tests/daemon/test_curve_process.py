"""CURVE against the real daemon process: on the bus, the trigger socket and the control socket only an
allowed client key gets through; plaintext clients, unknown keys and clients expecting another server key
receive nothing and send nothing. The gallery is signed, and status names the key that signed it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq

from inspector.bus.control import ControlError, request
from inspector.bus.curve import CurveClient, generate_curve_keypair, load_keypair, load_public_key
from inspector.demo.data import write_demo_video
from inspector.model.gallery import read_gallery_hash
from inspector.model.signing import generate_keypair, sign_gallery
from tests.processes import DaemonProcess, Subscriber
from tests.support import SyntheticGallery, free_port, run_cli, wait_until
from tests.toml_config import Table, tcp, video_camera, write_daemon_config

CAMERA = "line"
CAMERA_FPS = 10.0
ALLOWED_TRIGGERS = 12
REFUSED_TRIGGERS = 5
REQUEST_TIMEOUT_S = 60.0
REFUSED_ANSWER_WAIT_S = 5.0  # how long a refused control client waits for the answer it must never get
STRANGERS = ("plaintext", "unknown key", "wrong server key")

Context = zmq.Context[zmq.Socket[bytes]]
Setup = Callable[[zmq.Socket[bytes]], None] | None


@dataclass
class Keys:
    """Every key file of the test and the client set-ups they give."""

    server_secret: Path
    server_public: Path
    client_secret: Path
    client_public: Path
    signer_fingerprint: str
    setups: dict[str, Setup]  # "allowed" and each of STRANGERS


def _keys(folder: Path) -> Keys:
    server_secret, server_public, _ = generate_curve_keypair(folder / "server")
    client_secret, client_public, _ = generate_curve_keypair(folder / "plc")
    stranger_secret, _, _ = generate_curve_keypair(folder / "stranger")
    _, impostor_public, _ = generate_curve_keypair(folder / "impostor")
    allowed = CurveClient(load_keypair(client_secret), load_public_key(server_public))
    setups: dict[str, Setup] = {
        "allowed": allowed.apply,
        "plaintext": None,
        "unknown key": CurveClient(load_keypair(stranger_secret), load_public_key(server_public)).apply,
        "wrong server key": CurveClient(load_keypair(client_secret), load_public_key(impostor_public)).apply,
    }
    return Keys(server_secret, server_public, client_secret, client_public, "", setups)


def _config(
    folder: Path, video: Path, gallery: Path, keys: Keys, signer: Path, ports: dict[str, int]
) -> Path:
    camera = video_camera(CAMERA, video, CAMERA_FPS, trigger="external", trigger_timeout_ms=2000, product="a")
    security: Table = {
        "gallery_signers": [str(signer)],
        "curve_server_secret_key": keys.server_secret,
        "curve_allowed_clients": [str(keys.client_public)],
    }
    return write_daemon_config(
        folder / "curve.toml",
        root={},
        products=[{"name": "a", "gallery": gallery}],
        cameras=[camera],
        triggers={"bind": tcp(ports["triggers"])},
        control={"enabled": True, "bind": tcp(ports["control"])},
        bus={"bind": tcp(ports["bus"]), "heartbeat_interval_s": 0.5},
        metrics={"port": ports["metrics"]},
        security=security,
    )


@dataclass
class CurveLine:
    """The running daemon, a subscriber per client kind, its endpoints and keys."""

    daemon: DaemonProcess
    subscribers: dict[str, Subscriber]
    endpoints: dict[str, str]
    keys: Keys


@pytest.fixture(scope="module")
def curve_line(
    synthetic_gallery: SyntheticGallery, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CurveLine]:
    folder = tmp_path_factory.mktemp("curve")
    keys = _keys(folder)
    gallery = folder / "a.safetensors"
    shutil.copyfile(synthetic_gallery.path, gallery)
    signer_secret, signer_public, keys.signer_fingerprint = generate_keypair(folder / "signer")
    sign_gallery(gallery, read_gallery_hash(gallery), signer_secret)
    video = folder / "line.avi"
    write_demo_video(video, 20, CAMERA_FPS, 4, 160, seed=5)
    ports = {name: free_port() for name in ("triggers", "control", "bus", "metrics")}
    endpoints = {name: f"tcp://127.0.0.1:{port}" for name, port in ports.items()}
    config = _config(folder, video, gallery, keys, signer_public, ports)
    subscribers = {kind: Subscriber(endpoints["bus"], setup) for kind, setup in keys.setups.items()}
    daemon = DaemonProcess(config)
    try:
        daemon.wait_event("daemon_ready")
        yield CurveLine(daemon, subscribers, endpoints, keys)
        assert daemon.terminate() == 0
    finally:
        for sub in subscribers.values():
            sub.close()
        daemon.close()


def _pusher(context: Context, endpoint: str, setup: Setup) -> zmq.Socket[bytes]:
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.setsockopt(zmq.SNDTIMEO, 0)  # a refused client's messages may not even leave: never block on them
    if setup is not None:
        setup(push)
    push.connect(endpoint)
    return push


def test_only_the_allowed_key_triggers_and_receives_every_verdict(curve_line: CurveLine) -> None:
    context: Context = zmq.Context()
    try:
        pushers = {
            kind: _pusher(context, curve_line.endpoints["triggers"], s)
            for kind, s in curve_line.keys.setups.items()
        }
        for kind in STRANGERS:
            for i in range(REFUSED_TRIGGERS):
                try:
                    pushers[kind].send(json.dumps({"camera": CAMERA, "part_id": f"{kind}-{i}"}).encode())
                except zmq.Again:
                    pass  # no handshake, no peer: the message cannot even be queued
        parts = [f"A-{i:03d}" for i in range(ALLOWED_TRIGGERS)]
        for part in parts:
            pushers["allowed"].send(json.dumps({"camera": CAMERA, "part_id": part}).encode())
        allowed = curve_line.subscribers["allowed"].got
        wait_until(
            lambda: {v.part_id for v in allowed.of(CAMERA)} >= set(parts), "the allowed triggers' verdicts"
        )
        wait_until(lambda: len(allowed.heartbeats) >= 2, "heartbeats over CURVE")
        verdicts = allowed.of(CAMERA)
        assert [v.part_id for v in verdicts] == parts  # nothing from the strangers' triggers
        assert [v.seq for v in verdicts] == list(range(len(parts)))  # every verdict, none missing
        for kind in STRANGERS:
            got = curve_line.subscribers[kind].got
            assert got.count() == 0 and got.heartbeats == [], kind
    finally:
        context.destroy(linger=0)


def test_only_the_allowed_key_gets_a_control_answer_and_status_names_the_signer(
    curve_line: CurveLine,
) -> None:
    context: Context = zmq.Context()
    endpoint = curve_line.endpoints["control"]
    try:
        for kind in STRANGERS:
            setup = curve_line.keys.setups[kind]
            curve = _client(setup)
            with pytest.raises(ControlError, match="no answer"):
                request(context, endpoint, {"cmd": "pause", "camera": CAMERA}, REFUSED_ANSWER_WAIT_S, curve)
        status = request(
            context,
            endpoint,
            {"cmd": "status"},
            REQUEST_TIMEOUT_S,
            _client(curve_line.keys.setups["allowed"]),
        )
        assert (
            status["ok"] is True and status["cameras"][CAMERA]["state"] != "paused"
        )  # no stranger paused it
        assert status["products"]["a"]["signed_by"] == curve_line.keys.signer_fingerprint
    finally:
        context.destroy(linger=0)
    validated = curve_line.daemon.event("gallery_validated")
    assert validated is not None and validated["signed_by"] == curve_line.keys.signer_fingerprint


def _client(setup: Setup) -> CurveClient | None:
    """The CurveClient behind a set-up (request takes the client itself)."""
    owner = getattr(setup, "__self__", None)
    return owner if isinstance(owner, CurveClient) else None


def test_ctl_and_tail_take_client_keys_and_no_secret_reaches_logs_or_status(curve_line: CurveLine) -> None:
    keys = curve_line.keys
    options = ["--curve-client-key", str(keys.client_secret), "--curve-server-key", str(keys.server_public)]
    proc = run_cli("ctl", "--connect", curve_line.endpoints["control"], *options, "status")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["products"]["a"]["signed_by"] == keys.signer_fingerprint
    plain = run_cli("ctl", "--connect", curve_line.endpoints["control"], "--timeout-s", "3", "status")
    assert plain.returncode == 1 and "no answer" in plain.stderr
    half = run_cli("ctl", "--connect", curve_line.endpoints["control"], options[0], options[1], "status")
    assert half.returncode == 1 and "--curve-server-key is missing" in half.stderr
    secrets = [
        load_keypair(keys.server_secret).secret.decode(),
        load_keypair(keys.client_secret).secret.decode(),
    ]
    for text in ["".join(curve_line.daemon.raw), proc.stdout, proc.stderr]:
        assert not any(secret in text for secret in secrets)
    refused = curve_line.daemon.events("curve_client_refused")
    assert refused and all("client_key" in e for e in refused)
