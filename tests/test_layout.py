"""The package layout is the architecture: which package may import which.

contract <- core <- edges <- worker (and the console); models and serving beside them;
devtools and the CLI on top. The service (what an operator's image carries) never imports
the dev tooling or model training, and the pure core imports no I/O library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "moderation"

SHARED = {"config", "faults"}  # the settings root and the test-only fault markers
ALLOWED: dict[str, set[str]] = {
    "contract": {"contract"},
    "core": {"contract", "core"},
    "edges": {"contract", "core", "edges", "config"},
    "worker": {"contract", "core", "edges", "worker", *SHARED},
    "tools": {"contract", "core", "edges", "tools", "config"},
    "console": {"contract", "core", "edges", "console", "config"},
    "models": {"contract", "core", "models", "serving"},
    "models.training": {"contract", "core", "edges", "models", "models.training"},
    "serving": {"contract", "core", "models", "serving", "faults"},
    "devtools": {"contract", "core", "edges", "worker", "tools", "models", "models.training",
                 "serving", "devtools", *SHARED},
    "config": {"contract", "core", "edges"},
    "faults": set(),
}
IO_LIBRARIES = {"socket", "subprocess", "kafka", "redis", "tritonclient", "urllib", "http",
                "requests", "pathlib", "os", "shutil", "threading"}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "bundles" not in p.parts)


def package_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[:2] == ("models", "training"):
        return "models.training"
    return parts[0]


def imported(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "moderation":
                names.update(f"moderation.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def target_package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "moderation" or len(parts) < 2:
        return None
    if parts[1:3] == ["models", "training"]:
        return "models.training"
    return parts[1]


@pytest.mark.parametrize("path", [p for p in modules() if package_of(p) in ALLOWED],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    own = package_of(path)
    bad = {m for m in imported(path)
           if (t := target_package(m)) is not None and t not in ALLOWED[own]}
    assert not bad, f"{own} may import only {sorted(ALLOWED[own])}; found {sorted(bad)}"


@pytest.mark.parametrize("path", [p for p in modules() if package_of(p) in ("contract", "core")],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_core_and_the_contract_do_no_io(path: Path) -> None:
    bad = {m for m in imported(path) if m.split(".")[0] in IO_LIBRARIES}
    assert not bad, f"{path.name} imports I/O libraries {sorted(bad)}"


def test_the_cli_loads_tooling_and_training_only_when_their_commands_run() -> None:
    for path in (PACKAGE / "cli").glob("*.py"):
        eager = {target_package(m) for m in imported(path, top_level_only=True)}
        assert not eager & {"devtools", "models", "models.training"}, path.name


def test_every_package_is_placed() -> None:
    packages = {package_of(p) for p in modules()} - {"__init__", "__main__", "cli", "bundles"}
    assert packages <= set(ALLOWED), packages - set(ALLOWED)
