"""The package's import rules: layers point one way, and no module imports itself back.

Layers, from the top: ``cli`` → ``engine`` → ``data`` / ``model`` → ``config`` → ``errors``.
``data`` (rasterio I/O) and ``model`` (pure ``nn.Module``s) never import each other, and
``model`` reads no files. Imports inside functions count too: a lazy import is still a
dependency, and hiding a cycle behind one is what this test exists to catch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sgma_cli"

#: Layer rank of each top-level part; a module may import only its own rank or lower.
RANKS = {
    "__main__": 5,
    "cli": 4,
    "engine": 3,
    "data": 2,
    "model": 2,
    "config": 1,
    "errors": 0,
    "__init__": 0,
}

#: Modules that ``model/`` must never import: it receives tensors, not files.
FILE_READERS = {"rasterio", "geopandas", "pyogrio", "safetensors", "fiona", "tomllib", "tomli"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Every ``sgma_cli`` module and third-party top-level name imported anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found


GRAPH = {name: {m for m in _imports(path) if m in MODULES} for name, path in MODULES.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_has_a_rank() -> None:
    assert {_part(m) for m in MODULES} <= set(RANKS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    part = _part(module)
    upward = sorted(m for m in GRAPH[module] if RANKS[_part(m)] > RANKS[part])
    assert not upward, f"{module} imports a higher layer: {upward}"
    if part in ("data", "model"):
        sibling = "model" if part == "data" else "data"
        across = sorted(m for m in GRAPH[module] if _part(m) == sibling)
        assert not across, f"{module} imports {sibling}/: {across}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _part(m) == "model"))
def test_model_reads_no_files(module: str) -> None:
    third_party = {name.split(".")[0] for name in _imports(MODULES[module])}
    assert not third_party & FILE_READERS, (
        f"{module} imports file readers {sorted(third_party & FILE_READERS)}"
    )


def test_shared_engine_modules_do_not_import_jobs() -> None:
    """What every job uses sits at the top of engine/ and knows no job package."""
    jobs = {m for m in MODULES if m.count(".") >= 3 and m.startswith("sgma_cli.engine.")}
    job_packages = {".".join(m.split(".")[:3]) for m in jobs}
    for module in MODULES:
        if (
            module.startswith("sgma_cli.engine.")
            and module.count(".") == 2
            and module not in job_packages
        ):
            assert not GRAPH[module] & (jobs | job_packages), f"{module} imports a job package"


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(GRAPH[module]):
            if dep == module or _is_package_of(dep, module):
                continue
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module)


def _is_package_of(package: str, module: str) -> bool:
    """A package's ``__init__`` re-exporting its own modules is not a cycle through them."""
    return module.startswith(package + ".") and MODULES[package].name == "__init__.py"


def test_cycle_detection_sees_lazy_imports(tmp_path: Path) -> None:
    """The walk counts imports inside functions, so a lazily hidden cycle is still found."""
    source = "def f():\n    from sgma_cli.engine.weights import load_model\n"
    path = tmp_path / "lazy.py"
    path.write_text(source)
    assert "sgma_cli.engine.weights" in _imports(path)


def _documented_tree() -> set[str]:
    """The files listed in docs/architecture.md's tree, rebuilt into paths from the indentation."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    block = doc.split("## The tree", 1)[1].split("```", 2)[1]
    paths: set[str] = set()
    folders: list[str] = []
    for line in block.strip("\n").splitlines():
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        folders = folders[:depth]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            paths.add("/".join([*folders, name]))
    return paths


def test_architecture_page_lists_every_file() -> None:
    """docs/architecture.md's tree names every module, and no module that is gone."""
    files = {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" or p.parent == PACKAGE
    }
    assert _documented_tree() == files
