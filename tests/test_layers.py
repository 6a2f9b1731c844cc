"""The layer contract of docs/design.md, read from ``pyproject.toml`` (``[tool.vqjax.layers]``).

* every module of ``vqjax`` belongs to one unit of one layer;
* a module imports vqjax modules only from its own unit or from units of lower layers (imports inside functions
  count too);
* the graph of module-level imports has no cycle;
* an import inside a function guards an optional or heavy dependency and says so in a comment on its line or the
  line above (``optional`` or ``heavy``).
"""

import ast
import os
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _units() -> dict[str, tuple[int, int]]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        table = tomllib.load(fh)["tool"]["vqjax"]["layers"]
    out = {}
    for layer, units in table.items():
        for u, unit in enumerate(units):
            for prefix in unit.split():
                out[prefix] = (int(layer), u)
    return out


UNITS = _units()


def unit_of(module: str) -> tuple[int, int] | None:
    """The (layer, unit) of the longest prefix of ``module`` in the table."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in UNITS:
            return UNITS[key]
    return None


def modules() -> dict[str, str]:
    """``{module name: file}`` for every module of the vqjax package."""
    out = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "vqjax")):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, f)
    return out


MODULES = modules()


def _target(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The vqjax modules an import statement names (``from a import b`` names ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "vqjax"]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
    if base.split(".")[0] != "vqjax":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def imports(module: str, source: str | None = None) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for each vqjax import of ``module`` (its file, or
    ``source``)."""
    file = MODULES.get(module, module.replace(".", os.sep) + ".py")
    tree = ast.parse(open(file).read() if source is None else source, file)
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _target(child, module, file.endswith("__init__.py")):
                    found.append((target, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def test_every_module_has_a_layer():
    assert not [m for m in MODULES if unit_of(m) is None]


def upward_imports(module: str, source: str | None = None) -> list[str]:
    """The imports of ``module`` into its own layer's other units or into higher layers."""
    here, bad = unit_of(module), []
    for target, line, _ in imports(module, source):
        there = unit_of(target)
        if there is not None and there != here and there[0] >= here[0]:
            bad.append(f"{module}:{line}: {module} (layer {here[0]}) imports {target} (layer {there[0]})")
    return bad


def test_nothing_imports_upward_or_sideways():
    bad = [line for module in MODULES for line in upward_imports(module)]
    assert not bad, "\n".join(bad)


def test_module_level_imports_have_no_cycle():
    graph = {m: sorted({t for t, _, inside in imports(m) if not inside and t in MODULES and t != m})
             for m in MODULES}
    state: dict[str, int] = {}
    cycles = []

    def dfs(node, path):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                dfs(nxt, path + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m, [m])
    assert not cycles, "\n".join(cycles)


def test_imports_inside_functions_say_why():
    bad = []
    for module, file in MODULES.items():
        lines = open(file).read().splitlines()
        tree = ast.parse("\n".join(lines), file)
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    text = " ".join(lines[max(node.lineno - 2, 0):node.end_lineno]).lower()
                    if "optional" not in text and "heavy" not in text:
                        bad.append(f"{file}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not bad, "imports inside functions without a reason:\n" + "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("source, found", [
    ("from vqjax.lm.model import init_cache\n", True),                        # models -> lm: upward
    ("def f():\n    from vqjax.train import core  # heavy import\n", True),  # inside a function counts too
    ("from vqjax.graph import Graph\n", True),                                # models -> graph: same layer
    ("from vqjax.nn import VectorQuantizer\nfrom vqjax import codebook\n", False),
])
def test_the_contract_catches_upward_and_sideways_imports(source, found):
    assert bool(upward_imports("vqjax.models.example", source)) == found
