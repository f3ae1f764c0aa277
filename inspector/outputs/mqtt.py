"""The MQTT output: each published verdict header on ``<prefix>/<camera>/verdict``, camera state and
availability retained, snapshots of FAIL and REVIEW parts, and opt-in commands; off the model's path.

The pipeline's :meth:`MqttSink.deliver` only queues the header (bounded: a full queue drops, counted). The
sink's thread publishes while the broker connection (``mqtt_client``) is up and has room in its window; while
the broker is down or slow the queue fills, and the daemon goes on inspecting and publishing on the bus.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from inspector.bus.wire import Heartbeat, rfc3339
from inspector.config.mqtt import MqttConfig
from inspector.core.records import Outcome
from inspector.ops.logs import LogThrottle, frame_logger
from inspector.ops.mqtt_metrics import SNAPSHOT_SKIP_BACKLOG, SNAPSHOT_SKIP_ENCODE, SNAPSHOT_SKIP_RATE
from inspector.ops.output_metrics import SINK_DROP_QUEUE_FULL, SINK_DROP_SHUTDOWN, OutputMetrics
from inspector.outputs.evidence import EvidenceError, overlay_jpeg
from inspector.outputs.mqtt_client import BrokerConnection
from inspector.outputs.mqtt_commands import Handler, MqttCommands
from inspector.outputs.mqtt_topics import Topics, camera_state, state_payload, stopped_state

SINK_NAME = "mqtt"
SNAPSHOT_VERDICTS = frozenset({"FAIL", "REVIEW"})
SNAPSHOTS_WAITING_MAX = (
    4  # outcomes (with their frames) queued for a snapshot at once: bounds the memory held
)
STATE_INTERVAL_S = 0.5  # how often camera state is compared with what was last published
WAIT_S = 0.1  # the sink thread's longest wait for a verdict, a connection or room in the window
DROP_LOG_INTERVAL_S = 10.0  # at most one log line per drop reason this often


@dataclass(frozen=True)
class _Item:
    """One verdict to publish: its header as the bus sent it, and the outcome when a snapshot is due."""

    camera: str
    seq: int
    header: bytes
    snapshot: Outcome | None


class MqttSink:
    """A pipeline sink publishing to an MQTT broker from its own thread (paho's network thread beside it)."""

    name = SINK_NAME

    def __init__(
        self,
        config: MqttConfig,
        cameras: Sequence[str],
        status: Callable[[], Heartbeat],
        active_product: Callable[[str], str | None],
        metrics: OutputMetrics,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Prepare the sink and its broker connection; nothing connects before :meth:`start`.

        Raises:
            MqttConfigError: the password file or a TLS file cannot be used (naming the field).
        """
        self._config = config
        self._cameras = list(cameras)
        self._status = status
        self._active_product = active_product
        self._metrics = metrics
        self._monotonic = monotonic
        self._wall = wall_clock
        self.topics = Topics(config.topic_prefix)
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=config.queue_size)
        self._held: _Item | None = None  # taken from the queue, not yet taken by the connection
        self._snapshot_lock = threading.Lock()
        self._snapshots_waiting = 0
        self._last_snapshot: dict[str, float] = {}
        self._min_snapshot_gap_s = 1.0 / config.snapshot_max_fps if config.snapshot_max_fps > 0 else None
        self._states: dict[str, dict[str, Any]] = {}  # what was last published per camera (retained)
        self._republish = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = structlog.stdlib.get_logger(__name__).bind(sink=SINK_NAME)
        self._throttle = LogThrottle(DROP_LOG_INTERVAL_S)
        self.commands = MqttCommands(self.topics, metrics.mqtt, self._send_answer)
        self.connection = BrokerConnection(
            config, metrics.mqtt, self.topics.availability,
            self.topics.commands if config.commands_enabled else None, self._republish.set, self.commands.receive,
        )  # fmt: skip
        metrics.init_sink(SINK_NAME)

    def attach_commands(self, handle: Handler) -> None:
        """Act on MQTT commands through the daemon's line commands (when ``commands_enabled``)."""
        self.commands.attach(handle)

    def start(self) -> None:
        """Connect (in the background) and start the sink's thread."""
        self.connection.start()
        self._thread = threading.Thread(target=self._run, name=f"sink-{SINK_NAME}", daemon=True)
        self._thread.start()
        self._log.info("mqtt_output", broker=f"{self._config.host}:{self._config.port}", prefix=self.topics.prefix,
                       tls=self._config.tls, commands=self._config.commands_enabled)  # fmt: skip

    @property
    def depth(self) -> int:
        """Verdicts waiting for the broker."""
        return self._queue.qsize()

    def deliver(self, outcome: Outcome) -> None:
        """Queue a published verdict (and its outcome when a snapshot is due); drop it, counted, when full."""
        if outcome.published is None:
            return
        if self._stopping.is_set():
            self._drop(outcome.camera, outcome.seq, SINK_DROP_SHUTDOWN)
            return
        snapshot = outcome if self._snapshot_due(outcome) else None
        item = _Item(outcome.camera, outcome.seq, outcome.published.encode("utf-8"), snapshot)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._release_snapshot(item)
            self._drop(outcome.camera, outcome.seq, SINK_DROP_QUEUE_FULL)

    def _snapshot_due(self, outcome: Outcome) -> bool:
        """A FAIL or REVIEW part, past the camera's snapshot gap, with room among the waiting snapshots."""
        gap = self._min_snapshot_gap_s
        if gap is None or outcome.verdict not in SNAPSHOT_VERDICTS:
            return False
        now = self._monotonic()
        last = self._last_snapshot.get(outcome.camera)
        if last is not None and now - last < gap:
            self._metrics.mqtt.snapshots_skipped.labels(reason=SNAPSHOT_SKIP_RATE).inc()
            return False
        with self._snapshot_lock:
            if self._snapshots_waiting >= SNAPSHOTS_WAITING_MAX:
                self._metrics.mqtt.snapshots_skipped.labels(reason=SNAPSHOT_SKIP_BACKLOG).inc()
                return False
            self._snapshots_waiting += 1
        self._last_snapshot[outcome.camera] = now
        return True

    def _release_snapshot(self, item: _Item) -> None:
        if item.snapshot is not None:
            with self._snapshot_lock:
                self._snapshots_waiting -= 1

    def update_gauges(self) -> None:
        """Export the queue's depth."""
        self._metrics.sink_queue_depth.labels(sink=SINK_NAME).set(self.depth)

    def close(self) -> None:
        """Send what is queued within ``flush_timeout_s`` (what is left is dropped, counted ``shutdown``), publish
        each camera's last state and ``offline``, and disconnect."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self._config.flush_timeout_s + WAIT_S * 10)
        left = [self._held] if self._held is not None else []
        self._held = None
        while True:
            try:
                left.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for item in left:
            self._release_snapshot(item)
            self._drop(item.camera, item.seq, SINK_DROP_SHUTDOWN)
        if self._thread is not None and self.connection.connected.is_set():
            for camera, state in self._states.items():
                self.connection.publish(self.topics.state(camera), state_payload(stopped_state(state),
                                        rfc3339(self._wall())), "state", retain=True)  # fmt: skip
        self.connection.stop(self._config.flush_timeout_s)
        self.update_gauges()

    # ------------------------------------------------------------------------------------------ thread

    def _run(self) -> None:
        deadline: float | None = None
        next_state = self._monotonic()
        while True:
            if self._stopping.is_set():
                deadline = deadline or self._monotonic() + self._config.flush_timeout_s
                idle = self._held is None and self._queue.empty() and self.connection.outstanding == 0
                if idle or self._monotonic() >= deadline:
                    return
            if self._republish.is_set() or self._monotonic() >= next_state:
                self._publish_states()
                next_state = self._monotonic() + STATE_INTERVAL_S
            self.connection.changed.clear()  # before the check: a change after it ends the wait at once
            if not self.connection.can_take():
                self.connection.changed.wait(WAIT_S)
                continue
            if self._held is None:
                try:
                    self._held = self._queue.get(timeout=WAIT_S)
                except queue.Empty:
                    continue
            if self._send(self._held):
                self._held = None

    def _send(self, item: _Item) -> bool:
        """Publish one verdict (then its snapshot); False when the connection did not take the verdict."""
        if not self.connection.publish(self.topics.verdict(item.camera), item.header, "verdict"):
            return False
        if item.snapshot is not None:
            self._release_snapshot(item)
            cfg = self._config
            try:
                jpeg = overlay_jpeg(item.snapshot, cfg.snapshot_jpeg_quality, cfg.snapshot_max_width_px)
            except (EvidenceError, ValueError) as exc:
                self._metrics.mqtt.snapshots_skipped.labels(reason=SNAPSHOT_SKIP_ENCODE).inc()
                frame_logger(self._log, item.camera, item.seq).warning("mqtt_snapshot_failed", error=str(exc))
            else:
                self.connection.publish(self.topics.snapshot(item.camera), jpeg, "snapshot", retain=True)
        return True

    def _publish_states(self) -> None:
        """Publish each camera's state that changed (all of them after a new connection), retained."""
        if not self.connection.connected.is_set():
            return
        every = self._republish.is_set()
        self._republish.clear()
        try:
            heartbeat = self._status()
            states = {c: camera_state(heartbeat, c, self._active_product(c)) for c in self._cameras}
        except Exception as exc:  # noqa: BLE001 - a status that cannot be read must not end the thread
            self._log.error("mqtt_state_failed", error=repr(exc))
            return
        for camera, state in states.items():
            if not every and self._states.get(camera) == state:
                continue
            payload = state_payload(state, heartbeat.published_at)
            if self.connection.publish(self.topics.state(camera), payload, "state", retain=True):
                self._states[camera] = state

    def _send_answer(self, topic: str, payload: bytes) -> None:
        self.connection.publish(topic, payload, "answer")

    def _drop(self, camera: str, seq: int, reason: str) -> None:
        self._metrics.sink_dropped.labels(sink=SINK_NAME, reason=reason).inc()
        held = self._throttle.allow(reason)
        if held is not None:
            frame_logger(self._log, camera, seq).warning(
                "sink_dropped", reason=reason, similar_lines_held_back=held
            )
