"""Where a setting came from: ``INSPECTOR_*`` environment variables checked by name, TOML values by type."""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

ENV_PREFIX = "INSPECTOR_"
ENV_NESTED_DELIMITER = "__"
# INSPECTOR_* variables that are not settings (read by one command each, documented with it)
OTHER_VARIABLES = frozenset({"INSPECTOR_OPCUA_PASSWORD"})


def env_settings(environ: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Each ``INSPECTOR_*`` variable that is a setting, with the field path it sets (lower case)."""
    found = {}
    for name in environ:
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in OTHER_VARIABLES:
            found[name] = tuple(upper.removeprefix(ENV_PREFIX).lower().split(ENV_NESTED_DELIMITER))
    return found


def unknown_env_settings(environ: Mapping[str, str], root: type[BaseModel]) -> list[tuple[str, str]]:
    """(variable, problem) for each ``INSPECTOR_*`` variable that names no section or field of ``root`` (a
    typo would otherwise be ignored silently)."""
    problems = []
    for name, path in sorted(env_settings(environ).items()):
        model: type[BaseModel] | None = root
        for depth, key in enumerate(path):
            fields = model.model_fields if model is not None else {}
            if key not in fields:
                where = (
                    "a section or top-level setting"
                    if depth == 0
                    else f"a field of [{'.'.join(path[:depth])}]"
                )
                known = ", ".join(sorted(fields))
                problems.append((name, f"{key!r} is not {where} (known: {known})"))
                break
            model = _model_of(fields[key].annotation)
            if model is None:
                break
    return problems


def env_source(loc: tuple[int | str, ...], environ: Mapping[str, str]) -> str | None:
    """The environment variable that set the field at a validation error's location, if one did."""
    path = tuple(str(p).lower() for p in loc)
    for name, prefix in env_settings(environ).items():
        if path[: len(prefix)] == prefix:
            return name
    return None


def toml_type_problems(data: Mapping[str, Any], model: type[BaseModel], where: str = "") -> list[str]:
    """True/false settings given as anything but a TOML boolean (``loop = "yes"``): pydantic would take
    "yes", "on" or 1 for true; a file must say ``true`` or ``false``. One line per field, named."""
    problems = []
    for key, value in data.items():
        info = model.model_fields.get(key)
        if info is None:
            continue  # unknown keys are refused by the model itself
        path = f"{where}{key}"
        if info.annotation is bool and not isinstance(value, bool):
            problems.append(f"{path}: must be true or false (a TOML boolean), got {value!r}")
        sub = _model_of(info.annotation)
        if sub is None:
            continue
        if isinstance(value, Mapping):
            problems += toml_type_problems(value, sub, f"{path}.")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    problems += toml_type_problems(item, sub, f"{path}.{index}.")
    return problems


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model class a field holds (directly, in a list, or optional), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, Union, types.UnionType):
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None
