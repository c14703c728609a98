"""The layout of the architecture issue, checked from the source: no import cycle (imports
inside functions count), arrows pointing one way, no module over 800 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "meanfield_gan"

#: Layers from the bottom; a module may import its own layer or lower ones only.
LAYERS = [
    {"_version", "_validation", "_util"},
    {"model"},
    {"engines"},
    {"core", "coagulation", "metrics", "fitting", "parallel", "models"},
    {"driver"},
    {"io"},
    {"studies", "cli", "__init__"},
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ``meanfield_gan`` module imported anywhere in the file (functions included)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("meanfield_gan"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("meanfield_gan"):
                continue
            for a in node.names:  # `from pkg import module` runs pkg, then imports the module
                sub = f"{mod}.{a.name}"
                is_module = ((PKG.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                             or (PKG.parent / sub.replace(".", "/")).is_dir())
                out.add(mod)
                if is_module:
                    out.add(sub)
    out.discard(name)
    return out


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}
GRAPH = {m: {i for i in _imports(p) if i in MODULES} for m, p in MODULES.items()}


def _layer(mod: str) -> int:
    parts = mod.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for k, layer in enumerate(LAYERS):
        if top in layer:
            return k
    raise AssertionError(f"{mod}: not in any layer of the test")


def test_no_import_cycle():
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in GRAPH[m]:
            if state.get(n) == 1:
                raise AssertionError(" -> ".join(stack + [m, n]))
            if n not in state:
                visit(n, stack + [m])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_arrows_point_down(mod):
    if mod == "meanfield_gan":
        return  # the package's __init__ re-exports the surface
    for n in GRAPH[mod]:
        if n == "meanfield_gan":
            continue
        assert _layer(n) <= _layer(mod), f"{mod} imports {n} (a layer above)"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_module_over_800_lines(mod):
    n = len(MODULES[mod].read_text().splitlines())
    assert n <= 800, f"{mod}: {n} lines"
