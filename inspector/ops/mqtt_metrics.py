"""Metrics of the MQTT output: the broker connection, messages published, snapshots skipped, commands taken."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

MQTT_FAILURE_REFUSED = "refused"  # the broker answered CONNACK with an error (bad password, not authorised)
MQTT_FAILURE_TLS = "tls"  # the TLS handshake or the TLS session failed (certificate, CA, protocol)
MQTT_FAILURE_NETWORK = "network"  # no TCP connection, a timeout, or the connection closed before CONNACK
MQTT_FAILURE_REASONS = (MQTT_FAILURE_REFUSED, MQTT_FAILURE_TLS, MQTT_FAILURE_NETWORK)
MQTT_KINDS = ("verdict", "state", "availability", "snapshot", "answer")
SNAPSHOT_SKIP_RATE = "rate"  # within 1 / snapshot_max_fps of the camera's previous snapshot
SNAPSHOT_SKIP_BACKLOG = "backlog"  # enough snapshots already wait for the broker
SNAPSHOT_SKIP_ENCODE = "encode_failed"  # the overlay could not be encoded as a JPEG
SNAPSHOT_SKIP_REASONS = (SNAPSHOT_SKIP_RATE, SNAPSHOT_SKIP_BACKLOG, SNAPSHOT_SKIP_ENCODE)
COMMAND_OK = "ok"
COMMAND_ERROR = "error"  # answered with ok false (unknown camera, bad payload, ...)
COMMAND_IGNORED = "ignored"  # a retained message, or an unknown command: never acted on
COMMAND_RESULTS = (COMMAND_OK, COMMAND_ERROR, COMMAND_IGNORED)
COMMANDS = ("trigger", "product")


class MqttMetrics:
    """The MQTT output's series on the daemon's registry (created with ``OutputMetrics``)."""

    def __init__(self, r: CollectorRegistry) -> None:
        """Create and register every series on ``r``, labelled series at 0."""
        self.connected = Gauge(
            "inspector_mqtt_connected", "1 while the daemon is connected to the MQTT broker.", registry=r
        )
        self.connect_failures = Counter(
            "inspector_mqtt_connect_failures_total",
            "Attempts to connect to the MQTT broker that failed, by reason (refused, tls, network).",
            ["reason"],
            registry=r,
        )
        self.published = Counter(
            "inspector_mqtt_published_total",
            "Messages handed to the MQTT broker connection, by kind (verdict, state, availability, snapshot, "
            "answer).",
            ["kind"],
            registry=r,
        )
        self.snapshots_skipped = Counter(
            "inspector_mqtt_snapshots_skipped_total",
            "FAIL and REVIEW parts published without a snapshot, by reason (rate, backlog, encode_failed).",
            ["reason"],
            registry=r,
        )
        self.commands = Counter(
            "inspector_mqtt_commands_total",
            "Commands received over MQTT, by command and result (ok, error, ignored).",
            ["cmd", "result"],
            registry=r,
        )
        for reason in MQTT_FAILURE_REASONS:
            self.connect_failures.labels(reason=reason)
        for kind in MQTT_KINDS:
            self.published.labels(kind=kind)
        for reason in SNAPSHOT_SKIP_REASONS:
            self.snapshots_skipped.labels(reason=reason)
        for cmd in COMMANDS:
            for result in COMMAND_RESULTS:
                self.commands.labels(cmd=cmd, result=result)
