"""The joins stay explicit: module size, no reaching across layers, no cycles, one definition
of each shared figure. (See ARCHITECTURE.md.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sesame_server"
MAX_LINES = 350


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def imported(name: str, tree: ast.Module) -> set[str]:
    """Every sesame_server module `name` imports, at any depth (lazy imports count)."""
    is_package = MODULES[name].name == "__init__.py"
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: None if is_package else -1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in MODULES else base)
    found = set()
    for target in targets:
        parts = target.split(".")
        for end in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b too
            module = ".".join(parts[:end])
            if module in MODULES and module != name and not name.startswith(module + "."):
                found.add(module)
    return found


GRAPH = {name: imported(name, tree) for name, tree in TREES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_is_small(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines < MAX_LINES, f"{name} has {lines} lines: split it by job"


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(GRAPH[module]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_nothing_above_backends_imports_the_csm_backend():
    offenders = {name: sorted(m for m in deps if m.startswith("sesame_server.backends.csm"))
                 for name, deps in GRAPH.items() if not name.startswith("sesame_server.backends")}
    assert {name: deps for name, deps in offenders.items() if deps} == {}


def test_no_getattr_on_a_backend_outside_backends():
    offenders = []
    for name, tree in TREES.items():
        if name.startswith("sesame_server.backends"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
                if "backend" in ast.unparse(node.args[0]).lower():
                    offenders.append(f"{name}: {ast.unparse(node)}")
    assert offenders == []


def _literals(value: float) -> list[str]:
    places = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value == value:
                places.append(f"{name}:{node.lineno}")
    return places


def test_the_sample_rate_and_frame_length_are_defined_once():
    units = "sesame_server.audio.units"
    # formats.py lists ElevenLabs' pcm_/wav_ rates and the mp3_24000_48 row: wire names, not our rate.
    rate = [p for p in _literals(24000) if not p.startswith((units, "sesame_server.audio.formats"))]
    assert rate == [], "use audio.units.SAMPLE_RATE"
    assert [p for p in _literals(0.08) if not p.startswith(units)] == [], "use audio.units.FRAME_SECONDS"


def test_the_speed_range_is_defined_once():
    offenders = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(isinstance(t, (ast.Name, ast.Tuple)) and
                                                   any(n in ast.unparse(t) for n in ("MIN_SPEED", "MAX_SPEED"))
                                                   for t in node.targets):
                if name != "sesame_server.audio.units":
                    offenders.append(f"{name}:{node.lineno}")
            if isinstance(node, (ast.Compare, ast.Call)):
                values = {n.value for n in ast.walk(node) if isinstance(n, ast.Constant)}
                if {0.25, 4.0} <= values or (isinstance(node, ast.Compare) and values & {0.25, 4.0}
                                             and "speed" in ast.unparse(node)):
                    offenders.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == [], "use audio.units.MIN_SPEED / MAX_SPEED"
