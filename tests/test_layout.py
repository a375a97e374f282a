"""The package's import rules (docs/design.md): no import cycles among mta's modules, counting imports inside
functions; the reference op, the oracle, imports torch alone; the public API of `mta` is documented."""

from __future__ import annotations

import ast
from pathlib import Path

import mta

PACKAGE = Path(mta.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(name: str) -> set[str]:
    """Every module `name` imports, at module level or inside a function: absolute names, as written."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names)
    return found


def intra_package(name: str) -> set[str]:
    """The mta modules `name` imports (a name inside a module counts as that module)."""
    targets = set()
    for target in imported(name):
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name:
            targets.add(target)
    return targets


def test_no_import_cycles():
    graph = {name: intra_package(name) for name in MODULES}
    state: dict[str, str] = {}

    def cycle_from(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := cycle_from(target, path + [target])):
                return found
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            found = cycle_from(name, [name])
            assert found is None, "import cycle: " + " -> ".join(found)


def test_reference_imports_torch_alone():
    assert {name.split(".")[0] for name in imported("mta.ops.reference")} <= {"__future__", "typing", "torch"}


def test_public_api_is_documented_with_shapes():
    names = set(mta.__all__) - {"__version__"}
    assert names == {"mta_attention", "mta_attention_step", "MultiTokenAttention", "AttentionConfig", "DecoderLM",
                     "ModelConfig", "get_preset", "list_presets"}
    for name in names - {"list_presets"}:  # list_presets returns names, no tensor
        assert "[B, " in getattr(mta, name).__doc__, name
    assert mta.list_presets.__doc__


SCRIPTS = sorted(path for folder in ("experiments", "benchmarks") for path in (PACKAGE.parents[1] / folder).glob("*.py"))


def private_imports(path: Path) -> list[str]:
    """The private names (a part with a leading underscore) that the script `path` imports from mta."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mta":
            found += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "mta"]
    return [name for name in found if any(part.startswith("_") for part in name.split("."))]


def test_scripts_import_public_names_only():
    assert SCRIPTS, "no experiment or benchmark scripts found"
    private = {path.name: names for path in SCRIPTS if (names := private_imports(path))}
    assert not private, f"scripts import private names from mta: {private}"
