"""Reading a configuration file: TOML in, a validated tree or one error line per bad field out."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from inspector.config.camera import FILE_SOURCE_KINDS
from inspector.config.root import InspectorConfig
from inspector.config.sources import env_source, toml_type_problems, unknown_env_settings
from inspector.core.errors import validation_lines


class ConfigError(Exception):
    """A configuration that cannot be read, does not validate or cannot run; one line per problem.

    ``lines`` are the problems as printed, each with the source that caused it: the file, or the environment
    variable that set the field.
    """

    def __init__(self, source: str, problems: list[str], sources: list[str] | None = None) -> None:
        self.source = source
        self.problems = problems
        self.lines = [
            f"{src}: {p}" for src, p in zip(sources or [source] * len(problems), problems, strict=True)
        ]
        super().__init__("\n".join(self.lines))


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> InspectorConfig:
    """Load and validate the configuration.

    Args:
        path: TOML file; None means built-in defaults (environment overrides still apply).
        overrides: values merged over the file's top-level sections (used by the CLI).

    The process's ``INSPECTOR_*`` environment variables override the file; one naming no setting is an
    error, and a bad value is blamed on its variable.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: the file is missing, is not TOML, or a field does not validate (each named).
    """
    data: dict[str, Any] = {}
    source = str(path) if path else "config"
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(source, ["file not found"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, [f"cannot read: {exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    environ = os.environ
    unknown = unknown_env_settings(environ, InspectorConfig)
    typed = toml_type_problems(data, InspectorConfig)
    if unknown or typed:
        names = [name for name, _ in unknown] + [source] * len(typed)
        raise ConfigError(source, [line for _, line in unknown] + typed, names)
    for section, values in (overrides or {}).items():
        merged = dict(data.get(section, {}))
        merged.update(values)
        data[section] = merged
    try:
        return InspectorConfig(**data)
    except ValidationError as exc:
        lines = validation_lines(exc)
        blamed = [env_source(tuple(e["loc"]), environ) for e in exc.errors()]
        raise ConfigError(source, lines, [b or source for b in blamed]) from None


def run_problems(config: InspectorConfig) -> list[str]:
    """What prevents ``inspector run`` from starting with a valid config; one line per problem, field first.

    Checks at least one camera, a product for every camera, every product's gallery file, and that file/folder
    sources exist.
    """
    problems: list[str] = []
    if not config.cameras:
        problems.append("cameras: at least one [[cameras]] entry is required to run the daemon")
    for index, cam in enumerate(config.cameras):
        if config.product_for(cam) is None:
            problems.append(
                f"cameras.{index}.product: camera {cam.name} has no product (set product, gallery or worker.gallery)"
            )
        kind = cam.resolved_kind()
        if kind in FILE_SOURCE_KINDS and not Path(cam.source).exists():
            problems.append(f"cameras.{index}.source: {kind} {cam.source} (camera {cam.name}) not found")
    for name, gallery in config.product_galleries().items():
        if not gallery.is_file():
            problems.append(
                f"{gallery_field(config, name)}: gallery file {gallery} (product {name}) not found"
            )
    return problems + plaintext_network_problems(config)


LOOPBACK_HOSTS = frozenset({"localhost", "::1", "[::1]", "lo"})


def is_local_endpoint(endpoint: str) -> bool:
    """True for a ZeroMQ endpoint only this machine can reach: ipc://, inproc://, or tcp:// on loopback."""
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    host = rest.rsplit(":", 1)[0]
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def plaintext_network_problems(config: InspectorConfig) -> list[str]:
    """The ZeroMQ sockets that would listen beyond this machine without CURVE (unless allowed explicitly)."""
    security = config.security
    if security.curve_server_secret_key is not None or security.allow_plaintext_network:
        return []
    endpoints = {"bus.bind": config.bus.bind}
    if config.external_cameras:
        endpoints["triggers.bind"] = config.triggers.bind
    if config.control.enabled:
        endpoints["control.bind"] = config.control.bind
    return [
        f"{field}: {endpoint} listens beyond this machine without CURVE: set [security] "
        "curve_server_secret_key and curve_allowed_clients, bind to 127.0.0.1, or set "
        "security.allow_plaintext_network = true"
        for field, endpoint in endpoints.items()
        if not is_local_endpoint(endpoint)
    ]


def gallery_field(config: InspectorConfig, product: str) -> str:
    """The config field that names a product's gallery, for error messages."""
    for index, p in enumerate(config.products):
        if p.name == product:
            return f"products.{index}.gallery"
    for index, cam in enumerate(config.cameras):
        if cam.gallery is not None and cam.gallery.stem == product:
            return f"cameras.{index}.gallery"
    return "worker.gallery"


def load_run_config(path: Path | None) -> InspectorConfig:
    """Load a config for ``inspector run`` / ``check-config``: :func:`load_config` plus :func:`run_problems`.

    Raises:
        ConfigError: the file does not validate, or the daemon could not run with it (each field named).
    """
    config = load_config(path)
    problems = run_problems(config)
    if problems:
        raise ConfigError(str(path) if path else "config", problems)
    return config
