"""Tests for inspector.config.genicam and the genicam rules of a camera: every bad value names its field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from inspector.config.camera import CameraConfig
from inspector.config.genicam import GenicamConfig


def genicam(**fields: Any) -> CameraConfig:
    extra = {k: fields.pop(k) for k in list(fields) if k in CameraConfig.model_fields}
    return CameraConfig.model_validate(
        {"name": "g", "source": "10.0.0.2", "kind": "genicam", "genicam": fields, **extra}
    )


def test_trigger_sources_and_activations_map_to_their_genicam_entries() -> None:
    assert GenicamConfig(trigger_source="software").genicam_trigger_source() == "Software"
    assert GenicamConfig(trigger_source="line12").genicam_trigger_source() == "Line12"
    assert GenicamConfig(trigger_activation="falling_edge").genicam_trigger_activation() == "FallingEdge"
    assert GenicamConfig().genicam_trigger_activation() is None
    assert GenicamConfig(trigger_source="line0").line_triggered and not GenicamConfig().triggered


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"trigger_source": "Line0"}, "genicam.trigger_source"),
        ({"pixel_format": "YUV422_8"}, "genicam.pixel_format"),
        ({"exposure_us": 0}, "genicam.exposure_us"),
        ({"packet_size_bytes": 100}, "genicam.packet_size_bytes"),
        ({"buffer_count": 1}, "genicam.buffer_count"),
        ({"exposure": 10}, "genicam.exposure"),
        ({"trigger_source": "software"}, 'needs trigger = "external"'),
        (
            {
                "trigger_source": "line0",
                "trigger": "external",
                "pairing_window_ms": 2000,
                "trigger_timeout_ms": 500,
            },
            "pairing_window_ms must be <= trigger_timeout_ms",
        ),
    ],
)
def test_a_bad_genicam_value_is_refused_naming_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError, match=named.replace("(", r"\(")):
        genicam(**fields)


def test_a_genicam_table_needs_kind_genicam_and_kind_genicam_is_never_guessed() -> None:
    with pytest.raises(ValidationError, match=r"\[cameras.genicam\] table needs kind"):
        CameraConfig.model_validate({"name": "c", "source": "10.0.0.2", "genicam": {}})
    assert CameraConfig(name="c", source="10.0.0.2").resolved_kind() == "file"
    plain = CameraConfig(name="c", source="Basler-acA1300-22150000", kind="genicam")
    assert plain.resolved_kind() == "genicam" and plain.settings == GenicamConfig()
