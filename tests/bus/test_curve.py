"""CURVE on real ZeroMQ sockets: key files, the ZAP authenticator, the publisher, tail and the proxy."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from inspector.bus.curve import (
    CurveAuthenticator,
    CurveClient,
    CurveServer,
    client_setup,
    generate_curve_keypair,
    load_curve_server,
    load_keypair,
    load_public_key,
)
from inspector.bus.proxy import BusProxy
from inspector.bus.publisher import Publisher
from inspector.bus.tail import tail
from inspector.bus.wire import Heartbeat, new_boot_id, rfc3339
from inspector.config.bus import BusConfig
from inspector.config.proxy import ProxyConfig
from inspector.core.keyfiles import KeyFileError
from tests.bus.test_proxy import outcome

Context = zmq.Context[zmq.Socket[bytes]]
POLL_MS = 20
WAIT_S = 60.0
MESSAGES = 20


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Secret files of server, client, stranger and impostor, by name (public beside: NAME.key)."""
    return {
        name: generate_curve_keypair(tmp_path / name)[0]
        for name in ("server", "client", "stranger", "impostor")
    }


def public(secret: Path) -> Path:
    return secret.with_suffix(".key")


@pytest.fixture
def context() -> Iterator[Context]:
    ctx: Context = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _server(keys: dict[str, Path]) -> CurveServer:
    server = load_curve_server(keys["server"], [public(keys["client"])])
    assert server is not None
    return server


def _clients(keys: dict[str, Path]) -> dict[str, CurveClient | None]:
    return {
        "allowed": client_setup(keys["client"], public(keys["server"])),
        "plaintext": None,
        "unknown key": client_setup(keys["stranger"], public(keys["server"])),
        "wrong server key": client_setup(keys["client"], public(keys["impostor"])),
    }


def _sub(context: Context, endpoint: str, client: CurveClient | None) -> zmq.Socket[bytes]:
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if client is not None:
        client.apply(sock)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


def _drain(sock: zmq.Socket[bytes]) -> list[list[bytes]]:
    got = []
    while sock.poll(0):
        got.append(sock.recv_multipart())
    return got


def test_the_publisher_sends_only_to_allowed_curve_clients(context: Context, keys: dict[str, Path]) -> None:
    server = _server(keys)
    auth = CurveAuthenticator(context, server)
    auth.start()
    publisher = Publisher(BusConfig(bind="tcp://127.0.0.1:*"), context, new_boot_id(), curve=server)
    try:
        endpoint = publisher.bind()
        subs = {kind: _sub(context, endpoint, client) for kind, client in _clients(keys).items()}
        received: dict[str, list[list[bytes]]] = {kind: [] for kind in subs}
        deadline = time.monotonic() + WAIT_S
        seq = 0
        while not received["allowed"] and time.monotonic() < deadline:  # until the allowed handshake is done
            publisher.publish(outcome("cam1", seq))
            seq += 1
            received["allowed"] += _drain(subs["allowed"]) if subs["allowed"].poll(POLL_MS) else []
        first = seq
        for i in range(MESSAGES):
            publisher.publish(outcome("cam1", first + i))
        while len(received["allowed"]) < MESSAGES + 1 and time.monotonic() < deadline:
            if subs["allowed"].poll(POLL_MS):
                received["allowed"] += _drain(subs["allowed"])
        seqs = [int(p[1].split(b'"seq":')[1].split(b",")[0]) for p in received["allowed"]]
        assert seqs[-MESSAGES:] == list(range(first, first + MESSAGES))  # every message after the handshake
        for kind in ("plaintext", "unknown key", "wrong server key"):
            assert _drain(subs[kind]) == [], kind
        assert auth.refused >= 1  # the unknown key reached ZAP and was refused
        for sock in subs.values():
            sock.close()
    finally:
        publisher.close()
        auth.stop()


def test_tail_connects_as_a_curve_client(context: Context, keys: dict[str, Path]) -> None:
    server = _server(keys)
    auth = CurveAuthenticator(context, server)
    auth.start()
    publisher = Publisher(BusConfig(bind="tcp://127.0.0.1:*"), context, new_boot_id(), curve=server)
    try:
        endpoint = publisher.bind()
        out = io.StringIO()  # read only after the tail thread has ended
        stop = threading.Event()
        result: list[int] = []
        client = _clients(keys)["allowed"]
        thread = threading.Thread(
            target=lambda: result.append(tail(endpoint, context, out, 3, ["verdict."], stop, curve=client)),
            daemon=True,
        )
        thread.start()
        deadline, seq = time.monotonic() + WAIT_S, 0
        while thread.is_alive() and time.monotonic() < deadline:
            publisher.publish(outcome("cam1", seq))
            seq += 1
            thread.join(POLL_MS / 1000)
        stop.set()
        thread.join(WAIT_S)
        assert result == [0] and sum("cam1 seq=" in line for line in out.getvalue().splitlines()) == 3
    finally:
        publisher.close()
        auth.stop()


def test_the_proxy_is_a_curve_client_of_the_daemons_and_a_curve_server_of_its_consumers(
    context: Context, keys: dict[str, Path], tmp_path: Path
) -> None:
    server = _server(keys)
    daemon_ctx: Context = zmq.Context()
    auth = CurveAuthenticator(daemon_ctx, server)
    auth.start()
    publisher = Publisher(BusConfig(bind="tcp://127.0.0.1:*"), daemon_ctx, new_boot_id(), curve=server)
    proxy_secret, proxy_public, _ = generate_curve_keypair(tmp_path / "proxy")
    consumer_secret, consumer_public, _ = generate_curve_keypair(tmp_path / "consumer")
    backend = load_curve_server(proxy_secret, [consumer_public])
    assert backend is not None
    proxy_auth = CurveAuthenticator(context, backend)
    proxy_auth.start()
    try:
        endpoint = publisher.bind()
        config = ProxyConfig(frontends=(endpoint,), backend="tcp://127.0.0.1:*")
        with BusProxy(config, context, _clients(keys)["allowed"], backend) as proxy:
            good = _sub(context, proxy.endpoint, client_setup(consumer_secret, proxy_public))
            plain = _sub(context, proxy.endpoint, None)
            deadline, seq = time.monotonic() + WAIT_S, 0
            while not good.poll(POLL_MS) and time.monotonic() < deadline:
                publisher.publish(outcome("cam1", seq))
                seq += 1
            assert good.recv_multipart()[0] == b"verdict.cam1"
            assert _drain(plain) == []
            good.close()
            plain.close()
    finally:
        publisher.close()
        auth.stop()
        proxy_auth.stop()
        daemon_ctx.destroy(linger=0)


def test_key_files_round_trip_and_bad_ones_are_refused_without_showing_a_key(keys: dict[str, Path]) -> None:
    pair = load_keypair(keys["server"])
    assert (
        load_public_key(public(keys["server"])) == pair.public
        and zmq.curve_public(pair.secret) == pair.public
    )
    public_only = public(keys["server"])
    with pytest.raises(KeyFileError, match="readable by group or others"):
        load_keypair(public_only)  # a public file given as the secret: refused, it is world-readable
    public_only.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a secret CURVE certificate"):
        load_keypair(public_only)
    keys["server"].chmod(0o644)
    with pytest.raises(KeyFileError) as info:
        load_keypair(keys["server"])
    assert "mode 0644" in str(info.value) and pair.secret.decode() not in str(info.value)
    with pytest.raises(KeyFileError, match="--curve-server-key is missing"):
        client_setup(keys["client"], None)
    assert client_setup(None, None) is None


def test_heartbeats_carry_over_curve_too(context: Context, keys: dict[str, Path]) -> None:
    server = _server(keys)
    auth = CurveAuthenticator(context, server)
    auth.start()
    boot = new_boot_id()
    publisher = Publisher(BusConfig(bind="tcp://127.0.0.1:*"), context, boot, curve=server)
    try:
        sub = _sub(context, publisher.bind(), _clients(keys)["allowed"])
        beat = Heartbeat(boot_id=boot, published_at=rfc3339(0.0), state="ready", uptime_s=1.0,
                         frames_published=0, worker_alive=True)  # fmt: skip
        deadline = time.monotonic() + WAIT_S
        while not sub.poll(POLL_MS) and time.monotonic() < deadline:
            publisher.publish_heartbeat(beat)
        assert sub.recv_multipart()[0] == b"heartbeat"
        sub.close()
    finally:
        publisher.close()
        auth.stop()
