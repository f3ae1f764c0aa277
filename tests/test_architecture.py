"""The package's shape: the import rule of docs/architecture.md on every module, and what a fresh import loads."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

PACKAGE = REPO_ROOT / "inspector"
ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"
RULE_FENCE = "```import-rule"
ROOT = "inspector"
FRESH_IMPORT_TIMEOUT_S = 120


def read_rule(text: str) -> dict[str, set[str]]:
    """The import rule block of architecture.md: layer -> the layers it may import."""
    start = text.index(RULE_FENCE) + len(RULE_FENCE)
    block = text[start : text.index("```", start)]
    rule: dict[str, set[str]] = {}
    for line in block.strip().splitlines():
        layer, *uses = line.split()
        assert layer not in rule, f"layer {layer} listed twice"
        rule[layer] = set() if uses == ["-"] else set(uses)
    return rule


def imported_modules(path: Path, package: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in a file, in functions too (``inspector`` for the root's names)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == ROOT:  # from inspector import x: x is a subpackage, or a name of the root
                for alias in node.names:
                    is_package = (package / alias.name / "__init__.py").is_file()
                    yield node.lineno, f"{ROOT}.{alias.name}" if is_package else ROOT
            else:
                yield node.lineno, node.module


def layer_of(module: str, layers: set[str]) -> str | None:
    """The layer a dotted module name belongs to (None for the package root and foreign modules)."""
    parts = module.split(".")
    if parts[0] != ROOT or len(parts) == 1 or parts[1] not in layers:
        return None
    return parts[1]


def violations(package: Path, rule: dict[str, set[str]]) -> list[str]:
    """Every import that breaks the rule, as ``file:line: layer imports module``; also modules outside layers."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent)
        if len(rel.parts) == 2:  # the package root's own modules
            if rel.name != "__init__.py":
                found.append(f"{rel}: module outside every layer")
            continue
        layer = rel.parts[1]
        if layer not in rule:
            found.append(f"{rel}: package {layer} is not a layer of the rule")
            continue
        for line, module in imported_modules(path, package):
            target = layer_of(module, set(rule))
            if module.startswith(f"{ROOT}.") and target is None:
                found.append(f"{rel}:{line}: imports {module}, which is in no layer")
            elif target is not None and target != layer and target not in rule[layer]:
                found.append(f"{rel}:{line}: {layer} imports {module} ({target} is not in its row)")
    return found


def acyclic(rule: dict[str, set[str]]) -> bool:
    """True when no layer reaches itself through the rule's arrows."""

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(u == goal or (u not in seen and reaches(u, goal, seen | {u})) for u in rule.get(start, ()))

    return not any(reaches(layer, layer, set()) for layer in rule)


def test_the_rule_names_every_subpackage_once_and_has_no_cycle() -> None:
    rule = read_rule(ARCHITECTURE.read_text(encoding="utf-8"))
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert set(rule) == packages
    assert all(uses <= set(rule) for uses in rule.values())
    assert acyclic(rule)


def test_every_module_imports_only_the_layers_its_row_allows() -> None:
    rule = read_rule(ARCHITECTURE.read_text(encoding="utf-8"))
    assert violations(PACKAGE, rule) == []


def test_the_checker_flags_an_upward_import_and_a_stray_module(tmp_path: Path) -> None:
    """The rule test can fail: a synthetic tree with a model module importing the daemon."""
    package = tmp_path / ROOT
    for sub in ("core", "model", "daemon"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text('"""x."""\n')
    (package / "__init__.py").write_text('"""x."""\n')
    (package / "stray.py").write_text('"""x."""\n')
    (package / "model" / "engine.py").write_text(
        "from inspector.core import names\n\n\ndef f() -> None:\n    from inspector.daemon.worker import W\n"
    )
    (package / "daemon" / "worker.py").write_text("import inspector.model.engine\n")
    rule = {"core": set(), "model": {"core"}, "daemon": {"model", "core"}}
    assert violations(package, rule) == [
        f"{Path(ROOT) / 'model' / 'engine.py'}:5: model imports inspector.daemon.worker (daemon is not in its row)",
        f"{Path(ROOT) / 'stray.py'}: module outside every layer",
    ]
    assert not acyclic({"model": {"daemon"}, "daemon": {"model"}})


def test_no_module_re_exports_names_with_a_star() -> None:
    stars = [
        f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names)
    ]
    assert stars == []


def loaded_after_import(*modules: str) -> set[str]:
    """Top-level names of the modules a fresh interpreter has loaded after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(modules)!r}:\n"
        "    importlib.import_module(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=FRESH_IMPORT_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout))


def modules_of(layer: str) -> list[str]:
    """Every module of a layer, dotted."""
    return sorted(
        ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (PACKAGE / layer).rglob("*.py")
        if p.name != "__main__.py"
    )


@pytest.mark.parametrize(
    ("layer", "must_not_load"),
    [
        ("model", {"zmq", "prometheus_client", "sklearn"}),
        ("daemon", {"sklearn", "scipy", "matplotlib"}),
        ("config", {"torch", "cv2", "zmq", "prometheus_client", "numpy"}),
    ],
)
def test_a_fresh_import_of_a_layer_loads_none_of_what_it_must_not(
    layer: str, must_not_load: set[str]
) -> None:
    modules = modules_of(layer)
    assert len(modules) > 1
    assert loaded_after_import(*modules) & must_not_load == set()


def test_the_command_line_loads_torch_only_when_a_command_scores() -> None:
    assert "torch" not in loaded_after_import(
        "inspector.cli.main", "inspector.cli.daemon", "inspector.cli.offline", "inspector.cli.gallery"
    )
    assert "torch" in loaded_after_import("inspector.model.engine")  # the check above can fail


def test_importing_the_package_sets_passive_openmp_waiting_unless_the_environment_says_otherwise() -> None:
    env_code = "import os, inspector; print(os.environ['OMP_WAIT_POLICY'])"
    default = subprocess.run(
        [sys.executable, "-c", env_code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        env={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"},
        timeout=FRESH_IMPORT_TIMEOUT_S,
    )  # fmt: skip
    explicit = subprocess.run(
        [sys.executable, "-c", env_code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}, timeout=FRESH_IMPORT_TIMEOUT_S,
    )  # fmt: skip
    assert (default.stdout.strip(), explicit.stdout.strip()) == ("PASSIVE", "ACTIVE")
