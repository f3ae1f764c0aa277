"""GenICam cameras (GigE Vision, USB3 Vision) through Aravis: connect, configure, stream, software triggers.

Runs inside the camera's process. Aravis is loaded (``inspector.capture.aravis``) only when a ``kind =
"genicam"`` camera opens, so the daemon runs without it when none is configured. Each ``[cameras.genicam]``
field is written to the camera; a feature it lacks or a value it refuses is a refusal naming the camera, the
field and the GenICam feature, while a camera that does not answer is a failure the child retries with
backoff. ``GenicamSource.read`` hands on one buffer at a time: an
incomplete buffer (lost packets, timeout) becomes a fault frame (an ERROR verdict, never a score) and is
counted; with a software trigger, each trigger the daemon sends through the trigger pipe is fired on its own
thread and the next buffer after it carries its seq (``CaptureMeta.trigger_seq``); a trigger no buffer answers
within ``timeout_ms`` becomes a fault frame for that seq. A triggered camera with no frames is probed every
``read_timeout_s`` so a camera that vanished between parts is noticed like a stalled stream.
"""

from __future__ import annotations

import contextlib
import multiprocessing.connection as mpc
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inspector.capture.aravis import Configurator, connect, error_message, load_aravis
from inspector.capture.pixels import PixelFormatError, to_bgr
from inspector.capture.shared import (
    I_INCOMPLETE,
    I_LOST_PACKETS,
    CameraRefusedError,
    CaptureError,
    CaptureMeta,
    ReadResult,
)
from inspector.config.camera import CameraConfig
from inspector.config.genicam import SOFTWARE, GenicamConfig
from inspector.core.records import NO_IMAGE

GENICAM_READ_BOUND_S = 15.0  # one read may block this long: a probe of a camera that vanished retries GVCP
READ_SLICE_S = 0.2  # a read waits at most this long for a buffer, so stop and trigger deadlines are seen
TRIGGER_POLL_S = 0.1  # the trigger thread re-checks for a close this often
THREAD_JOIN_S = 5.0
US_PER_S = 1_000_000
US_PER_MS = 1000
NS_PER_S = 1e9
S_PER_MS = 1e-3
TRIGGER_RECORD = struct.Struct("<qd")  # trigger seq, wall-clock time to fire at (s)
_PIXEL_FORMATS = {
    "MONO_8": "Mono8", "MONO_10": "Mono10", "MONO_12": "Mono12", "MONO_16": "Mono16",
    "BAYER_RG_8": "BayerRG8", "BAYER_GR_8": "BayerGR8", "BAYER_GB_8": "BayerGB8", "BAYER_BG_8": "BayerBG8",
    "RGB_8_PACKED": "RGB8", "BGR_8_PACKED": "BGR8",
}  # fmt: skip

Counter = Callable[[int, int], None]  # (shared slot, amount)


def open_genicam(
    cfg: CameraConfig, triggers: mpc.Connection | None, count: Counter
) -> tuple[GenicamSource | None, str, bool]:
    """Connect, configure and start streaming; return (source, "", False) or (None, why, refused)."""
    try:
        aravis = load_aravis()
    except CaptureError as exc:
        return None, f"camera {cfg.name}: {exc}", False
    try:
        camera = connect(aravis, cfg.source)
    except Exception as exc:  # noqa: BLE001 - Aravis raises GLib.Error, typed only at run time
        return (
            None,
            f"camera {cfg.name}: no GenICam camera answers at {cfg.source!r}: {error_message(exc)}",
            False,
        )
    try:
        Configurator(aravis, camera, cfg.name, cfg.settings).run()
        stream = _start_stream(camera, cfg.settings)
    except CameraRefusedError as exc:
        return None, str(exc), True
    except Exception as exc:  # noqa: BLE001 - GLib.Error: the camera stopped answering while set up
        return (
            None,
            f"camera {cfg.name}: GenICam camera {cfg.source!r} failed while set up: {error_message(exc)}",
            False,
        )
    return GenicamSource(aravis, camera, stream, cfg, triggers, count), "", False


def _start_stream(camera: Any, settings: GenicamConfig) -> Any:
    stream = camera.create_stream(None, None)
    if stream is None:
        raise RuntimeError("the camera gave no stream")
    if camera.is_gv_device():
        stream.set_property("frame-retention", int(settings.timeout_ms * US_PER_MS))
    payload = camera.get_payload()
    aravis = load_aravis()
    for _ in range(settings.buffer_count):
        stream.push_buffer(aravis.Buffer.new_allocate(payload))
    camera.set_acquisition_mode(aravis.AcquisitionMode.CONTINUOUS)
    camera.start_acquisition()
    return stream


@dataclass(frozen=True)
class _Fired:
    seq: int
    fired_ns: int  # host wall clock just before the camera was told
    deadline: float  # monotonic: past it with no buffer, the trigger is answered by a fault frame


class GenicamSource:
    """A started camera's stream, read one buffer at a time (see the module doc)."""

    def __init__(
        self,
        aravis: Any,
        camera: Any,
        stream: Any,
        cfg: CameraConfig,
        triggers: mpc.Connection | None,
        count: Counter,
    ) -> None:
        self._aravis, self._camera, self._stream = aravis, camera, stream
        self._cfg, self._settings, self._count = cfg, cfg.settings, count
        self._formats = {
            int(getattr(aravis, f"PIXEL_FORMAT_{key}")): name for key, name in _PIXEL_FORMATS.items()
        }
        self._lock = threading.Lock()  # the camera's control channel: software triggers and probes
        self._fired: deque[_Fired] = deque()
        self._closing = threading.Event()
        self._last_alive = time.monotonic()
        self._lost_seen = 0
        self._trigger_error = ""  # why the latest software trigger could not be sent, for its fault
        self._thread: threading.Thread | None = None
        if self._settings.trigger_source == SOFTWARE and triggers is not None:
            self._thread = threading.Thread(target=self._trigger_loop, args=(triggers,), daemon=True)
            self._thread.start()

    def read(self) -> ReadResult:
        """One buffer as a frame, a fault frame (incomplete, unanswered trigger), idle, or a failure."""
        unanswered = self._unanswered()
        if unanswered is not None:
            return unanswered
        buffer = self._stream.timeout_pop_buffer(int(READ_SLICE_S * US_PER_S))
        if buffer is None:
            return self._quiet()
        self._last_alive = time.monotonic()
        try:
            result = self._frame(buffer)
        finally:
            self._stream.push_buffer(buffer)
        self._count_lost_packets()
        return result

    def close(self) -> None:
        """Stop the trigger thread and the acquisition; release the camera."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(THREAD_JOIN_S)
        with self._lock, contextlib.suppress(Exception):  # a camera that vanished cannot be stopped
            self._camera.stop_acquisition()
        with self._lock:
            self._stream = self._camera = None

    def _frame(self, buffer: Any) -> ReadResult:
        block, stamp, arrived = buffer.get_frame_id(), buffer.get_timestamp(), buffer.get_system_timestamp()
        arrived_ns = arrived or time.time_ns()
        trigger_seq = None
        if self._settings.trigger_source == SOFTWARE:
            trigger_seq = self._claim(arrived_ns)
            if trigger_seq is None:
                return ReadResult(None, idle=True)  # a late frame of a trigger already answered: no part's
        meta = CaptureMeta(str(block), int(stamp) or None, trigger_seq, arrived_ns / NS_PER_S)
        status = buffer.get_status()
        if status != self._aravis.BufferStatus.SUCCESS:
            self._count(I_INCOMPLETE, 1)
            fault = f"camera {self._cfg.name}: incomplete frame {block} ({status.value_nick}): not scored"
            return ReadResult(NO_IMAGE, fault=fault, meta=meta)
        width, height = buffer.get_image_width(), buffer.get_image_height()
        code = buffer.get_image_pixel_format()
        try:
            image = to_bgr(buffer.get_image_data(), width, height, self._formats.get(code, f"0x{code:08x}"))
        except PixelFormatError as exc:
            return ReadResult(NO_IMAGE, fault=f"camera {self._cfg.name}: frame {block}: {exc}", meta=meta)
        return ReadResult(image, meta=meta)

    def _quiet(self) -> ReadResult:
        """No buffer in this slice: idle, or a failure once read_timeout_s passed (streaming, or no answer)."""
        silent_s = time.monotonic() - self._last_alive
        if silent_s < self._cfg.read_timeout_s:
            return ReadResult(None, idle=True)
        if not self._settings.triggered:
            return ReadResult(
                None,
                fault=f"camera {self._cfg.name}: no frame within read_timeout_s={self._cfg.read_timeout_s:g}",
            )
        return self._probe()

    def _probe(self) -> ReadResult:
        """A triggered camera between parts: one register read says whether it is still there."""
        try:
            with self._lock:
                self._camera.get_integer("Width")
        except Exception as exc:  # noqa: BLE001 - any failure to answer means the camera is gone
            return ReadResult(
                None, fault=f"camera {self._cfg.name}: the camera stopped answering: {error_message(exc)}"
            )
        self._last_alive = time.monotonic()
        return ReadResult(None, idle=True)

    def _count_lost_packets(self) -> None:
        try:
            lost = int(self._stream.get_info_uint64_by_name("n_missing_packets"))
        except Exception:  # noqa: BLE001 - a transport without the statistic (USB3 Vision) loses no packets
            return
        if lost > self._lost_seen:
            self._count(I_LOST_PACKETS, lost - self._lost_seen)
            self._lost_seen = lost

    # ------------------------------------------------------------------------------- software triggers

    def _trigger_loop(self, triggers: mpc.Connection) -> None:
        timeout_s = self._settings.timeout_ms * S_PER_MS
        while not self._closing.is_set():
            try:
                if not triggers.poll(TRIGGER_POLL_S):
                    continue
                seq, fire_at = TRIGGER_RECORD.unpack(triggers.recv_bytes())
            except (OSError, EOFError, struct.error):
                return
            wait_s = fire_at - time.time()
            if wait_s < -timeout_s:
                continue  # sent while the camera was away: the daemon answers its part (trigger timeout)
            if wait_s > 0.0 and self._closing.wait(wait_s):
                return
            self._fire(seq, timeout_s)

    def _fire(self, seq: int, timeout_s: float) -> None:
        with self._lock:
            if self._camera is None:
                return
            self._fired.append(_Fired(seq, time.time_ns(), time.monotonic() + timeout_s))
            try:
                self._camera.software_trigger()
            except Exception as exc:  # noqa: BLE001 - no frame will come: answered at its deadline
                self._trigger_error = f" (TriggerSoftware failed: {error_message(exc)})"

    def _claim(self, arrived_ns: int) -> int | None:
        """The seq of the oldest fired trigger this buffer can answer (fired before it arrived), if any."""
        with self._lock:
            if self._fired and self._fired[0].fired_ns <= arrived_ns:
                return self._fired.popleft().seq
        return None

    def _unanswered(self) -> ReadResult | None:
        """The oldest fired trigger past its deadline, as a fault frame for its seq; the camera is probed next."""
        with self._lock:
            if not self._fired or time.monotonic() <= self._fired[0].deadline:
                return None
            fired = self._fired.popleft()
        self._last_alive = -float("inf")  # an unanswered trigger: check the camera on the next quiet slice
        fault = (
            f"camera {self._cfg.name}: no frame within genicam.timeout_ms={self._settings.timeout_ms:g} "
            f"of the software trigger{self._trigger_error}"
        )
        return ReadResult(NO_IMAGE, fault=fault, meta=CaptureMeta(trigger_seq=fired.seq))
