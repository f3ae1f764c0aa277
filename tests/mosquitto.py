"""A real mosquitto broker for the tests (``mosquitto -c CONF`` on a free loopback port, stopped by PID), a test
CA made with ``openssl``, and an MQTT subscriber that records what it receives (paho-mqtt 2)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import free_port, wait_until

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.05
CA_DAYS = "30"
SECRET_MODE = 0o600


def missing_reason() -> str | None:
    """Why a broker cannot be started here (None when it can)."""
    for tool in ("mosquitto", "mosquitto_passwd", "openssl"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (apt-get install mosquitto mosquitto-clients; tools/bootstrap.sh --test does)"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA, a broker certificate for 127.0.0.1 and localhost, and a client certificate, all made by openssl."""

    folder: Path

    @property
    def ca(self) -> Path:
        """The CA certificate (PEM)."""
        return self.folder / "ca.crt"

    def cert(self, name: str) -> Path:
        """A certificate the CA signed (``server`` or ``client``)."""
        return self.folder / f"{name}.crt"

    def key(self, name: str) -> Path:
        """Its private key (mode 0600)."""
        return self.folder / f"{name}.key"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=STOP_TIMEOUT_S)


def make_ca(folder: Path, name: str = "ca") -> CertificateAuthority:
    """A fresh CA in ``folder`` that signed ``server`` (SAN 127.0.0.1, localhost) and ``client`` certificates."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days",
             CA_DAYS, "-subj", f"/CN=inspector test {name}", cwd=folder)  # fmt: skip
    extensions = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "client": "extendedKeyUsage=clientAuth",
    }
    for who, extension in extensions.items():
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj",
                 f"/CN={who}", cwd=folder)  # fmt: skip
        (folder / f"{who}.ext").write_text(extension + "\n")
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{who}.crt", "-days", CA_DAYS, "-extfile", f"{who}.ext", cwd=folder)  # fmt: skip
        (folder / f"{who}.key").chmod(SECRET_MODE)
    return CertificateAuthority(folder)


@dataclass
class Broker:
    """One mosquitto process: a plain listener on ``port`` (and a TLS one on ``tls_port`` with ``ca``).

    ``users`` (name -> password) switch anonymous clients off; ``acl`` is the text of an ACL file.
    """

    folder: Path
    users: dict[str, str] = field(default_factory=dict)
    acl: str | None = None
    ca: CertificateAuthority | None = None
    require_certificate: bool = False
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> Path:
        """The broker's configuration file (and its password and ACL files)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = ["user root", "persistence false", "log_dest file " + str(self.folder / "mosquitto.log"),
                 "log_type all", "per_listener_settings false"]  # fmt: skip
        if self.users:
            passwords = self.folder / "passwords"
            passwords.write_text("")
            passwords.chmod(SECRET_MODE)
            for name, password in self.users.items():
                subprocess.run([_binary("mosquitto_passwd"), "-b", str(passwords), name, password], check=True,
                               capture_output=True, timeout=STOP_TIMEOUT_S)  # fmt: skip
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            acl = self.folder / "acl"
            acl.write_text(self.acl)
            acl.chmod(SECRET_MODE)
            lines.append(f"acl_file {acl}")
        lines.append(f"listener {self.port} 127.0.0.1")
        if self.ca is not None:
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {self.ca.ca}",
                      f"certfile {self.ca.cert('server')}", f"keyfile {self.ca.key('server')}",
                      f"require_certificate {'true' if self.require_certificate else 'false'}"]  # fmt: skip
        path = self.folder / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        """``mosquitto -c CONF``; returns once its listeners accept connections."""
        config = self.write_config()
        self.proc = subprocess.Popen([_binary("mosquitto"), "-c", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        ports = [self.port] + ([self.tls_port] if self.ca is not None else [])
        wait_until(lambda: all(_accepts(p) for p in ports) or self.proc is None or self.proc.poll() is not None,
                   "mosquitto listening", START_TIMEOUT_S)  # fmt: skip
        assert self.proc.poll() is None, f"mosquitto exited: {self.log()[-2000:]}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the broker by its PID (SIGKILL: as if it crashed) and wait until it is gone."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT_S)
        self.proc = None

    def log(self) -> str:
        """What the broker logged."""
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def running_broker(broker: Broker) -> Iterator[Broker]:
    """A started broker for a fixture; stopped by PID at the end."""
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass(frozen=True)
class Message:
    """One message a recorder received."""

    topic: str
    payload: bytes
    retained: bool
    at: float  # time.time() on arrival


class Recorder:
    """An MQTT subscriber on its own paho thread: (re)subscribes to ``topics`` at every connection and records
    every message in arrival order."""

    def __init__(
        self, port: int, topics: list[str], username: str | None = None, password: str | None = None
    ) -> None:
        """Connect to the broker on 127.0.0.1:``port`` (reconnecting by itself) and subscribe."""
        self.messages: list[Message] = []
        self.connections = 0
        self._topics = topics
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._connected
        self.client.on_message = self._message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _connected(self, client: mqtt.Client, _u: object, _f: object, code: object, _p: object) -> None:
        for topic in self._topics:
            client.subscribe(topic, qos=1)
        with self._lock:
            self.connections += 1

    def _message(self, _client: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(
                Message(message.topic, bytes(message.payload), bool(message.retain), time.time())
            )

    def on(self, topic: str) -> list[Message]:
        """The messages of one topic, in arrival order."""
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> Message | None:
        """The latest message of one topic."""
        got = self.on(topic)
        return got[-1] if got else None

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait until the broker has it."""
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(STOP_TIMEOUT_S)

    def close(self) -> None:
        """Disconnect and stop its thread."""
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str, username: str | None = None, password: str | None = None) -> Message:
    """The retained message of ``topic`` as a fresh subscriber receives it (waits until one arrives)."""
    recorder = Recorder(port, [topic], username, password)
    try:
        wait_until(lambda: recorder.on(topic), f"the retained message of {topic}", START_TIMEOUT_S)
        return recorder.on(topic)[0]
    finally:
        recorder.close()
