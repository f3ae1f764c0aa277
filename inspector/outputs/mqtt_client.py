"""The MQTT output's broker connection: paho-mqtt 2 on its own network thread, login and TLS, the last will,
reconnects with backoff, and each failed attempt logged once with its reason (never a traceback)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from inspector.config.mqtt import MqttConfig
from inspector.core.errors import InspectorError
from inspector.core.keyfiles import KeyFileError, key_path, read_key_file
from inspector.ops.mqtt_metrics import (
    MQTT_FAILURE_NETWORK,
    MQTT_FAILURE_REFUSED,
    MQTT_FAILURE_TLS,
    MqttMetrics,
)

RECONNECT_MIN_S = 1  # the first wait after a failed attempt; doubles up to reconnect_max_s
IN_FLIGHT_WINDOW = 64  # messages handed to paho and not yet acknowledged (QoS 1/2) or written (QoS 0)
WINDOW_LOW_WATER = IN_FLIGHT_WINDOW // 2  # acknowledgements wake the sink once this few are left in flight
COMMAND_QOS = 2  # commands are subscribed exactly once: a trigger sent at QoS 2 never inspects a part twice
STOP_JOIN_S = 10.0  # the network thread's bound to finish after disconnect
CALLBACK_FAILED = "Caught exception in"  # how paho's log names an exception it caught in a callback
AVAILABILITY_ONLINE = b"online"
AVAILABILITY_OFFLINE = b"offline"

MessageHandler = Callable[[str, bytes, bool], None]  # (topic, payload, retained)


class MqttConfigError(InspectorError):
    """An ``[mqtt]`` file that cannot be used (password, CA, certificate or key); the message names the field."""


def read_password(config: MqttConfig) -> str | None:
    """The password in ``password_file`` (None without one).

    Raises:
        MqttConfigError: missing, unreadable, readable by others, or empty (naming ``mqtt.password_file``).
    """
    if config.password_file is None:
        return None
    try:
        text = read_key_file(config.password_file, secret=True).decode("utf-8").strip()
    except (KeyFileError, UnicodeDecodeError) as exc:
        raise MqttConfigError(f"mqtt.password_file: {exc}") from None
    if not text:
        raise MqttConfigError(f"mqtt.password_file: {config.password_file} is empty")
    return text


class _ClosingSSLSocket(ssl.SSLSocket):
    """A TLS socket that closes itself when its handshake fails (paho 2 would leave it open until collected)."""

    def do_handshake(self, block: bool = False) -> None:
        """The handshake; on failure the socket is closed before the error goes on."""
        try:
            super().do_handshake(block)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise  # a non-blocking handshake in progress, not a failure
        except BaseException:
            self.close()
            raise


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """The TLS context of ``[mqtt]`` (None without ``tls``): the broker's certificate and host name verified
    against ``tls_ca_file`` (or the system's CAs), TLS 1.2 at least, the client certificate when set.

    Raises:
        MqttConfigError: a file that cannot be loaded (naming its field).
    """
    if not config.tls:
        return None
    try:
        context = ssl.create_default_context(
            cafile=str(key_path(config.tls_ca_file)) if config.tls_ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise MqttConfigError(f"mqtt.tls_ca_file: cannot load {config.tls_ca_file}: {_reason(exc)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = _ClosingSSLSocket
    if config.tls_certificate is not None and config.tls_private_key is not None:
        try:
            read_key_file(config.tls_private_key, secret=True)
        except KeyFileError as exc:
            raise MqttConfigError(f"mqtt.tls_private_key: {exc}") from None
        try:
            context.load_cert_chain(key_path(config.tls_certificate), key_path(config.tls_private_key))
        except (OSError, ssl.SSLError) as exc:
            raise MqttConfigError(
                f"mqtt.tls_certificate: cannot load {config.tls_certificate} with its key "
                f"{config.tls_private_key}: {_reason(exc)}"
            ) from None
    return context


def connection_problems(config: MqttConfig) -> list[str]:
    """What stops the MQTT output from starting (``check-config`` and ``run``); empty when off or fine."""
    if not config.enabled:
        return []
    problems = []
    for check in (read_password, tls_context):
        try:
            check(config)
        except MqttConfigError as exc:
            problems.append(str(exc))
    return problems


def _reason(exc: BaseException) -> str:
    """An exception as one line: its text, else its type."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def failure_kind(exc: BaseException | str) -> str:
    """``tls`` for an SSL error (or a paho error line naming SSL), else ``network``."""
    if isinstance(exc, ssl.SSLError) or (isinstance(exc, str) and "SSL" in exc):
        return MQTT_FAILURE_TLS
    return MQTT_FAILURE_NETWORK


class _Client(mqtt.Client):
    """paho's client, telling why a connection attempt raised (paho's own loop only retries)."""

    def __init__(self, started: Callable[[], None], failed: Callable[[OSError], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._inspector_started = started
        self._inspector_failed = failed

    def reconnect(self) -> MQTTErrorCode:
        """Connect (TCP, TLS, CONNECT); an ``OSError`` is reported, then raised to paho's loop as before."""
        self._inspector_started()
        try:
            return super().reconnect()
        except OSError as exc:
            self._inspector_failed(exc)
            raise


class BrokerConnection:
    """One connection to the broker, kept up by paho's network thread with backoff between attempts.

    On each connection it publishes ``online`` (retained) on the availability topic, which has ``offline`` as its
    last will, and subscribes to the command topics when asked. :meth:`publish` is safe from any thread.
    """

    def __init__(
        self,
        config: MqttConfig,
        metrics: MqttMetrics,
        availability_topic: str,
        command_topic: str | None,
        on_connected: Callable[[], None],
        on_message: MessageHandler,
    ) -> None:
        """Prepare the client (nothing connects before :meth:`start`).

        Raises:
            MqttConfigError: the password file or a TLS file cannot be used (naming the field).
        """
        self._config = config
        self._metrics = metrics
        self._availability = availability_topic
        self._command_topic = command_topic
        self._on_connected = on_connected
        self._on_message = on_message
        self.connected = threading.Event()
        self.changed = threading.Event()  # connected, disconnected or acknowledged: the sink looks again
        self.subscribed = threading.Event()  # the broker granted the command subscription on this connection
        self._lock = threading.Lock()
        self._pending: dict[int, int] = {}  # mid -> QoS of messages not yet acknowledged (or written)
        self._early: set[int] = set()  # acknowledged before publish() returned their mid
        self._attempt_reported = False
        self._last_error = ""
        self._stopping = False
        self._log = structlog.stdlib.get_logger(__name__).bind(broker=f"{config.host}:{config.port}")
        self._client = self._make_client(read_password(config), tls_context(config))

    def _make_client(self, password: str | None, tls: ssl.SSLContext | None) -> _Client:
        cfg = self._config
        client = _Client(
            self._attempt_started, self._attempt_failed, callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.resolved_client_id(), clean_session=True, protocol=mqtt.MQTTv311,
        )  # fmt: skip
        if cfg.username is not None:
            client.username_pw_set(cfg.username, password)
        if tls is not None:
            client.tls_set_context(tls)
        client.will_set(self._availability, AVAILABILITY_OFFLINE, cfg.qos, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, cfg.reconnect_max_s)
        client.connect_timeout = cfg.connect_timeout_s
        client.max_inflight_messages_set(IN_FLIGHT_WINDOW)
        client.suppress_exceptions = (
            True  # a callback's bug is logged by paho's on_log, never ends its thread
        )
        client.on_connect = self._connect_answered
        client.on_disconnect = self._disconnected
        client.on_publish = self._acknowledged
        client.on_message = self._message
        client.on_subscribe = self._subscribe_answered
        client.on_log = self._paho_log
        return client

    def start(self) -> None:
        """Start paho's network thread; it connects, and reconnects after every loss, until :meth:`stop`."""
        cfg = self._config
        self._client.connect_async(cfg.host, cfg.port, cfg.keepalive_s)
        self._client.loop_start()

    @property
    def outstanding(self) -> int:
        """Messages handed over and not yet acknowledged by the broker (QoS 0: not yet written)."""
        with self._lock:
            return len(self._pending)

    def can_take(self) -> bool:
        """Connected, with room in the in-flight window."""
        return self.connected.is_set() and self.outstanding < IN_FLIGHT_WINDOW

    def publish(self, topic: str, payload: bytes, kind: str, retain: bool = False) -> bool:
        """Hand one message to paho; False when it was not taken (QoS 0 while disconnected): keep it.

        A QoS 1 or 2 message taken while the connection drops stays with paho and is sent again on the next
        connection.
        """
        return self._send(topic, payload, kind, retain) is not None

    def _send(self, topic: str, payload: bytes, kind: str, retain: bool) -> mqtt.MQTTMessageInfo | None:
        info = self._client.publish(topic, payload, self._config.qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self._config.qos == 0:
            return None
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
            else:
                self._pending[info.mid] = self._config.qos
        self._metrics.published.labels(kind=kind).inc()
        return info

    def stop(self, timeout_s: float) -> None:
        """Publish ``offline`` (retained) when connected, disconnect cleanly (the broker drops the last will),
        and end the network thread within ``STOP_JOIN_S``."""
        self._stopping = True
        if self.connected.is_set():
            info = self._send(self._availability, AVAILABILITY_OFFLINE, "availability", retain=True)
            try:
                if info is not None:
                    info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as exc:
                self._log.warning("mqtt_offline_not_sent", error=_reason(exc))
        self._client.disconnect()
        stopper = threading.Thread(target=self._client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(STOP_JOIN_S)
        self.connected.clear()
        self._metrics.connected.set(0)

    # ----------------------------------------------------------------------------------- paho's thread

    def _attempt_started(self) -> None:
        self._attempt_reported = False
        self._last_error = ""

    def _attempt_failed(self, exc: OSError) -> None:
        self._report_failure(failure_kind(exc), _reason(exc))

    def _report_failure(self, kind: str, reason: str) -> None:
        """One log line and one count per failed attempt."""
        if self._attempt_reported or self._stopping:
            return
        self._attempt_reported = True
        self._metrics.connect_failures.labels(reason=kind).inc()
        self._log.warning(
            "mqtt_connect_failed", kind=kind, reason=reason, retry_max_s=self._config.reconnect_max_s
        )

    def _connect_answered(
        self, _client: mqtt.Client, _userdata: Any, _flags: mqtt.ConnectFlags, code: ReasonCode, _props: Any
    ) -> None:
        if code.is_failure:
            self._report_failure(MQTT_FAILURE_REFUSED, f"the broker refused the connection: {code}")
            return
        self._attempt_reported = True
        self.connected.set()
        self._metrics.connected.set(1)
        self._log.info("mqtt_connected", client_id=self._config.resolved_client_id(), tls=self._config.tls)
        self._send(self._availability, AVAILABILITY_ONLINE, "availability", retain=True)
        if self._command_topic is not None:
            self._client.subscribe(self._command_topic, COMMAND_QOS)
        self._on_connected()
        self.changed.set()

    def _disconnected(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        code: ReasonCode,
        _props: Any,
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        self._metrics.connected.set(0)
        with self._lock:  # QoS 0 messages not yet written are lost with the connection (at most once)
            self._pending = {mid: qos for mid, qos in self._pending.items() if qos > 0}
        self.changed.set()
        if self._stopping:
            return
        if was_connected:
            reason = self._last_error or str(code)
            self._log.warning("mqtt_disconnected", reason=reason, retry_max_s=self._config.reconnect_max_s)
        else:
            reason = self._last_error or "the connection closed before the broker answered"
            self._report_failure(failure_kind(reason), reason)

    def _acknowledged(
        self, _client: mqtt.Client, _userdata: Any, mid: int, _code: ReasonCode, _props: Any
    ) -> None:
        with self._lock:
            if self._pending.pop(mid, None) is None:
                self._early.add(mid)
            low = len(self._pending) <= WINDOW_LOW_WATER
        if low:  # the sink refills the window in bursts, not one wake-up per acknowledgement
            self.changed.set()

    def _subscribe_answered(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, codes: list[ReasonCode], _props: Any
    ) -> None:
        refused = [str(code) for code in codes if code.is_failure]
        if refused:
            self._log.error("mqtt_subscribe_refused", topic=self._command_topic, reason=", ".join(refused))
        else:
            self.subscribed.set()

    def _message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._on_message(message.topic, bytes(message.payload), bool(message.retain))
        except Exception as exc:  # noqa: BLE001 - a bad command never ends the network thread
            self._log.error("mqtt_message_failed", topic=message.topic, error=repr(exc))

    def _paho_log(self, _client: mqtt.Client, _userdata: Any, level: int, text: str) -> None:
        if level != mqtt.MQTT_LOG_ERR:
            return
        line = " ".join(text.split())
        if line.startswith(CALLBACK_FAILED):  # a bug of ours that paho caught: say so
            self._log.error("mqtt_callback_failed", error=line)
        else:
            self._last_error = line
