"""Aravis through GObject introspection: loaded on demand, a camera connected and its GenICam settings written."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inspector.capture.shared import CameraRefusedError, CaptureError
from inspector.config.genicam import SOFTWARE, GenicamConfig

INSTALL_HINT = (
    "install the Debian packages gir1.2-aravis-0.8 and python3-gi (tools/bootstrap.sh links gi into the "
    "project's virtual environment)"
)
# Aravis error codes that mean "the camera answered and said no" (a configuration problem, not retried).
_REFUSED_GC = ("PROPERTY_NOT_DEFINED", "PVALUE_NOT_DEFINED", "INVALID_PVALUE", "EMPTY_ENUMERATION",
               "OUT_OF_RANGE", "NODE_NOT_FOUND", "ENUM_ENTRY_NOT_FOUND", "READ_ONLY", "INVALID_LENGTH")  # fmt: skip
_REFUSED_DEVICE = ("WRONG_FEATURE", "FEATURE_NOT_FOUND", "INVALID_PARAMETER",
                   "PROTOCOL_ERROR_INVALID_PARAMETER", "PROTOCOL_ERROR_WRITE_PROTECT")  # fmt: skip


def load_aravis() -> Any:
    """The Aravis 0.8 module through GObject introspection.

    Raises:
        CaptureError: gi or Aravis' typelib is not installed (the message says which packages to install).
    """
    try:
        with warnings.catch_warnings():
            # Debian 12's PyGObject 3.42 importer predates exec_module (fixed in 3.44): harmless, not ours.
            warnings.simplefilter("ignore", ImportWarning)
            import gi

            gi.require_version("Aravis", "0.8")
            from gi.repository import Aravis
    except (ImportError, ValueError) as exc:
        raise CaptureError(
            f"kind genicam needs Aravis 0.8 through GObject introspection ({exc}): {INSTALL_HINT}"
        )
    return Aravis


def error_message(exc: BaseException) -> str:
    """The text of an Aravis (GLib) error or any other exception."""
    return str(getattr(exc, "message", None) or exc)


def _is_refusal(aravis: Any, exc: BaseException) -> bool:
    """True for an Aravis error that says the camera refused a feature or value (not a transport problem)."""
    domain, code = getattr(exc, "domain", None), getattr(exc, "code", None)
    if domain is None or code is None:
        return False
    if domain == "arv-gc-error-quark":
        return code in {
            int(getattr(aravis.GcError, name)) for name in _REFUSED_GC if hasattr(aravis.GcError, name)
        }
    if domain == "arv-device-error-quark":
        names = (name for name in _REFUSED_DEVICE if hasattr(aravis.DeviceError, name))
        return code in {int(getattr(aravis.DeviceError, name)) for name in names}
    return False


@dataclass(frozen=True)
class _Step:
    field: str  # the [cameras.genicam] field
    value: object
    write: Callable[[], None]


class Configurator:
    """Writes a camera's ``[cameras.genicam]`` fields, each refusal named by camera, field and feature."""

    def __init__(self, aravis: Any, camera: Any, name: str, settings: GenicamConfig) -> None:
        self.aravis, self.camera, self.name, self.settings = aravis, camera, name, settings

    def refuse(self, field: str, value: object, why: str) -> CameraRefusedError:
        return CameraRefusedError(
            f"camera {self.name}: the camera refused genicam.{field} = {value!r}: {why}"
        )

    def require(self, field: str, value: object, ok: bool, feature: str) -> None:
        if not ok:
            raise self.refuse(field, value, f"it has no {feature} feature")

    def offered(self, field: str, entry: str, feature: str, entries: list[str]) -> None:
        """Refuse unless the enumeration offers ``entry`` (its GenICam name; the message shows the field's)."""
        if entry not in entries:
            value = getattr(self.settings, field)
            raise self.refuse(field, value, f"{feature} offers {', '.join(entries) or 'nothing'}")

    def steps(self) -> list[_Step]:
        s, cam = self.settings, self.camera
        steps: list[_Step] = []
        if s.pixel_format is not None:
            steps.append(
                _Step("pixel_format", s.pixel_format, lambda: self.pixel_format(s.pixel_format or ""))
            )
        if s.exposure_us is not None:
            steps.append(_Step("exposure_us", s.exposure_us, lambda: self.exposure(s.exposure_us or 0.0)))
        if s.gain_db is not None:
            steps.append(_Step("gain_db", s.gain_db, lambda: self.gain(s.gain_db or 0.0)))
        if s.frame_rate_hz is not None:  # before the trigger: some cameras turn triggers off with the rate
            rate = s.frame_rate_hz
            steps.append(_Step("frame_rate_hz", rate, lambda: self.frame_rate(rate)))
        steps.append(_Step("trigger_source", s.trigger_source, self.trigger))
        if s.trigger_activation is not None:
            steps.append(_Step("trigger_activation", s.trigger_activation, self.activation))
        if cam.is_gv_device():
            steps.append(_Step("packet_size_bytes", s.packet_size_bytes, self.packet_size))
            if s.packet_delay_ns is not None:
                delay = s.packet_delay_ns
                steps.append(_Step("packet_delay_ns", delay, lambda: cam.gv_set_packet_delay(delay)))
        else:
            for field in ("packet_size_bytes", "packet_delay_ns"):
                if getattr(s, field) is not None:
                    raise self.refuse(field, getattr(s, field), "only GigE Vision cameras have packets")
        return steps

    def run(self) -> None:
        """Write every field in order.

        Raises:
            CameraRefusedError: a feature the camera lacks or a value it refuses.
            Exception: Aravis' own error when the camera stopped answering (retried by the caller).
        """
        self.camera.set_range_check_policy(self.aravis.RangeCheckPolicy.ENABLE)
        for step in self.steps():
            try:
                step.write()
            except CameraRefusedError:
                raise
            except Exception as exc:
                if _is_refusal(self.aravis, exc):
                    raise self.refuse(step.field, step.value, error_message(exc)) from None
                raise

    def pixel_format(self, value: str) -> None:
        self.offered(
            "pixel_format", value, "PixelFormat", self.camera.dup_available_pixel_formats_as_strings()
        )
        self.camera.set_pixel_format_from_string(value)

    def exposure(self, value: float) -> None:
        self.require("exposure_us", value, self.camera.is_exposure_time_available(), "ExposureTime")
        if self.camera.is_exposure_auto_available():
            self.camera.set_exposure_time_auto(self.aravis.Auto.OFF)
        self.camera.set_exposure_time(value)

    def gain(self, value: float) -> None:
        self.require("gain_db", value, self.camera.is_gain_available(), "Gain")
        if self.camera.is_gain_auto_available():
            self.camera.set_gain_auto(self.aravis.Auto.OFF)
        self.camera.set_gain(value)

    def frame_rate(self, value: float) -> None:
        self.require("frame_rate_hz", value, self.camera.is_frame_rate_available(), "AcquisitionFrameRate")
        self.camera.set_frame_rate(value)

    def trigger(self) -> None:
        s = self.settings
        if not s.triggered:
            self.camera.clear_triggers()
            return
        source = s.genicam_trigger_source()
        self.offered("trigger_source", source, "TriggerSource", self.camera.dup_available_trigger_sources())
        if s.trigger_source == SOFTWARE and not self.camera.is_software_trigger_supported():
            raise self.refuse("trigger_source", s.trigger_source, "it has no TriggerSoftware command")
        self.camera.set_trigger(source)

    def activation(self) -> None:
        value = self.settings.genicam_trigger_activation() or ""
        entries = self.camera.dup_available_enumerations_as_strings("TriggerActivation")
        self.offered("trigger_activation", value, "TriggerActivation", entries)
        self.camera.set_string("TriggerActivation", value)

    def packet_size(self) -> None:
        wanted = self.settings.packet_size_bytes
        if wanted is None:
            self.camera.gv_auto_packet_size()  # the largest packet the path carries
            return
        self.camera.gv_set_packet_size(wanted)
        took = self.camera.gv_get_packet_size()
        if took != wanted:
            raise self.refuse("packet_size_bytes", wanted, f"GevSCPSPacketSize took {took}")


def connect(aravis: Any, source: str) -> Any:
    """Open a camera by device id or IP address, else by serial number among the cameras discovered.

    Raises:
        Exception: Aravis' error when no camera answers to ``source``.
    """
    try:
        return aravis.Camera.new(source)
    except Exception:
        aravis.update_device_list()
        for index in range(aravis.get_n_devices()):
            if source in (aravis.get_device_serial_nbr(index), aravis.get_device_physical_id(index)):
                return aravis.Camera.new(aravis.get_device_id(index))
        raise
