"""One TOML config builder for the tests that start a real daemon: shared sections, per-test changes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

TomlScalar = str | int | float | bool | Path
TomlValue = TomlScalar | Sequence[str] | Mapping[str, TomlScalar]  # a mapping: an inline table
Table = Mapping[str, TomlValue]

# What every real-daemon test shares unless it says otherwise: small batches, a deadline far beyond any
# scheduling delay of a busy 2-core machine, and JSON logs (the tests read the daemon's events from them).
BATCHING: Table = {"max_batch": 4, "max_wait_ms": 10, "deadline_ms": 60000}
LOGGING: Table = {"format": "json"}
NO_METRICS: Table = {"enabled": False}
ROOT: Table = {"shutdown_timeout_s": 30}


def toml_value(value: TomlValue) -> str:
    """One TOML value: strings and paths quoted (JSON escapes are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"
    return "[" + ", ".join(json.dumps(str(v)) for v in value) + "]"


def _keys(table: Table) -> str:
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in table.items())


def daemon_toml(
    root: Table = ROOT,
    *,
    products: Sequence[Table] = (),
    cameras: Sequence[Table] = (),
    **tables: Table,
) -> str:
    """The text of a daemon config: root keys, ``[[products]]``, ``[[cameras]]``, then each named table.

    ``batching`` and ``logging`` default to :data:`BATCHING` and :data:`LOGGING`; pass a table to replace one.
    """
    parts = [_keys(root)]
    parts += [f"[[products]]\n{_keys(p)}" for p in products]
    parts += [f"[[cameras]]\n{_keys(c)}" for c in cameras]
    for name, table in {"batching": BATCHING, "logging": LOGGING, **tables}.items():
        parts.append(f"[{name}]\n{_keys(table)}")
    return "\n".join(parts)


def write_daemon_config(
    path: Path,
    root: Table = ROOT,
    *,
    products: Sequence[Table] = (),
    cameras: Sequence[Table] = (),
    **tables: Table,
) -> Path:
    """Write :func:`daemon_toml` to ``path`` and return it."""
    path.write_text(daemon_toml(root, products=products, cameras=cameras, **tables), encoding="utf-8")
    return path


def video_camera(name: str, video: Path, fps: float, **extra: TomlValue) -> dict[str, TomlValue]:
    """A ``[[cameras]]`` entry that plays ``video`` in a loop at ``fps``, with any further keys."""
    return {"name": name, "source": video, "loop": True, "fps": fps, **extra}


def tcp(port: int) -> str:
    """A loopback ZeroMQ endpoint."""
    return f"tcp://127.0.0.1:{port}"
