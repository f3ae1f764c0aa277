"""Property test of inspector.config.load: any TOML values in any known field load or fail as ConfigError."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.config.load import ConfigError, load_run_config
from inspector.config.root import InspectorConfig

SECTIONS = sorted(name for name in InspectorConfig.model_fields if name not in ("cameras", "products"))
CAMERA_KEYS = ["name", "source", "kind", "fps", "queue_size", "max_frame_px", "trigger", "retry_max_s"]

scalars = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
)
values = scalars | st.lists(scalars, max_size=3)


def toml_value(value: object) -> str:
    """A TOML literal of a scalar or a list of scalars."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if abs(value) != float("inf") else ("inf" if value > 0 else "-inf")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    assert isinstance(value, list)
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def section_keys(section: str) -> list[str]:
    field = InspectorConfig.model_fields[section]
    model = field.annotation
    keys = list(getattr(model, "model_fields", {}))
    return keys or ["x"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_values_in_known_fields_load_or_fail_with_one_config_error_line_each(data: st.DataObject) -> None:
    lines = []
    if data.draw(st.booleans()):
        lines.append("[[cameras]]")
        for key in data.draw(st.lists(st.sampled_from(CAMERA_KEYS), unique=True, max_size=4)):
            lines.append(f"{key} = {toml_value(data.draw(values))}")
    for section in data.draw(st.lists(st.sampled_from(SECTIONS), unique=True, max_size=3)):
        keys = section_keys(section)
        if keys == ["x"]:  # a root scalar such as shutdown_timeout_s
            lines.insert(0, f"{section} = {toml_value(data.draw(values))}")
            continue
        lines.append(f"[{section}]")
        for key in data.draw(st.lists(st.sampled_from(keys), unique=True, min_size=1, max_size=3)):
            lines.append(f"{key} = {toml_value(data.draw(values))}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "inspector.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            load_run_config(path)
        except ConfigError as exc:
            assert exc.problems and all(line.strip() for line in exc.problems)
            assert all("\n" not in line for line in exc.problems)
