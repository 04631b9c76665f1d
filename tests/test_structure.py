"""The package's import structure, read from the source with `ast` (nothing is imported):
the module-level imports between gradfuse's modules form no cycle, and gradfuse modules are
imported at the top of a module, not inside functions (whitelisted exceptions carry a reason).

An import counts where it names a gradfuse module: `import gradfuse.x`, `from . import x` (x a
submodule: an edge to x), `from .x import name` (an edge to x), `importlib.import_module` with a
literal name. Imports under `if TYPE_CHECKING:` never run and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "python" / "gradfuse"
EXTENSIONS = ("gradfuse._core",)  # compiled modules: they import no gradfuse module

# (importing module, imported module) -> why it is imported inside a function
FUNCTION_LEVEL_ALLOWED = {
    ("gradfuse", "gradfuse.viz"): "the lazy gf.viz attribute (module __getattr__): gf.viz is imported on first use",
    ("gradfuse", "gradfuse.tune"): "the lazy gf.tune attribute (module __getattr__): gf.tune is imported on first use",
    ("gradfuse.bench.sklearn_mlp", "gradfuse.sklearn"): "gradfuse.sklearn imports scikit-learn, an optional peer: "
    "every bench command (the CLI imports each suite) must start without it",
    ("gradfuse.bench.torchfront", "gradfuse.torch"): "gradfuse.torch imports torch: only when bench torch runs",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path | None]:
    """Every module of the package: its source file (None for the compiled ones)."""
    return {**{module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}, **dict.fromkeys(EXTENSIONS)}


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST, in_function: bool = False):
    """(node, in_function) for every import statement and importlib.import_module call."""
    for node in ast.iter_child_nodes(tree):
        if _is_type_checking(node):
            for child in node.orelse:  # the else branch runs
                yield from _imports(ast.Module(body=[child], type_ignores=[]), in_function)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        elif isinstance(node, ast.Call) and "import_module" in (
            getattr(node.func, "attr", None),
            getattr(node.func, "id", None),
        ):
            yield node, in_function
        nested = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from _imports(node, nested)


def _resolve(name: str, level: int, module: str, is_package: bool) -> str:
    """The absolute module name of a (possibly relative) import in `module`."""
    if level == 0:
        return name
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _targets(node, module: str, is_package: bool, known) -> set[str]:
    """The gradfuse modules an import node names."""
    found = set()

    def add(name: str) -> None:  # the longest known prefix: `import gradfuse.nn.layers` -> gradfuse.nn.layers
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)

    if isinstance(node, ast.Import):
        for alias in node.names:
            add(alias.name)
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(node.module or "", node.level, module, is_package)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            add(sub if sub in known else base)  # `from . import x`: the submodule x itself
    else:  # importlib.import_module("name" or ".name", package)
        args = node.args
        if not args or not isinstance(args[0], ast.Constant) or not isinstance(args[0].value, str):
            return found
        name = args[0].value
        level = len(name) - len(name.lstrip("."))
        if level:
            anchor = args[1] if len(args) > 1 else None
            if isinstance(anchor, ast.Name) and anchor.id in ("__name__", "__package__"):
                package = module if (is_package or anchor.id == "__name__") else module.rpartition(".")[0]
            elif isinstance(anchor, ast.Constant) and isinstance(anchor.value, str):
                package = anchor.value
            else:
                return found
            # import_module(".x", package) is `from <package> import x`
            name = _resolve(name[level:], level, package, is_package=True)
        add(name)
    return found


def scan() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """(graph: module -> modules it imports at module level, [(module, target, line)] of the
    gradfuse imports inside functions)."""
    modules = package_modules()
    graph, nested = {name: set() for name in modules}, []
    for name, path in modules.items():
        if path is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function in _imports(tree):
            for target in _targets(node, name, path.name == "__init__.py", modules) - {name}:
                if in_function:
                    nested.append((name, target, node.lineno))
                else:
                    graph[name].add(target)
    return graph, nested


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle [a, b, ..., a] of the graph, or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


# ---- the checker itself ---------------------------------------------------------------------------------------
KNOWN = {
    "gradfuse",
    "gradfuse.nn",
    "gradfuse.nn.layers",
    "gradfuse.nn.init",
    "gradfuse.data",
    "gradfuse.ops",
    "gradfuse.optim",
    "gradfuse.viz",
}


def _seen(source: str, module: str = "gradfuse.nn.layers", is_package: bool = False) -> set:
    return {
        (t, "function" if in_function else "module")
        for node, in_function in _imports(ast.parse(source))
        for t in _targets(node, module, is_package, KNOWN)
    }


def test_the_scanner_sees_every_kind_of_import():
    assert _seen("from . import init") == {("gradfuse.nn.init", "module")}  # a submodule: the submodule
    assert _seen("from .. import data, ops") == {("gradfuse.data", "module"), ("gradfuse.ops", "module")}
    assert _seen("from ..optim import SGD") == {("gradfuse.optim", "module")}  # a name: its module
    assert _seen("import gradfuse as gf\nimport gradfuse.nn.init\nimport numpy") == {
        ("gradfuse", "module"),
        ("gradfuse.nn.init", "module"),
    }
    assert _seen("class A:\n    from ..data import x") == {("gradfuse.data", "module")}  # runs at import
    assert _seen("def f():\n    from ..data import Standardizer") == {("gradfuse.data", "function")}
    assert _seen("if TYPE_CHECKING:\n    from ..viz import x\nelse:\n    from .. import data") == {
        ("gradfuse.data", "module")
    }
    assert _seen("def f():\n    importlib.import_module('..viz', __package__)") == {("gradfuse.viz", "function")}
    assert _seen("def f():\n    import_module('.viz', __name__)", "gradfuse", True) == {("gradfuse.viz", "function")}


def test_find_cycle_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


# ---- the package --------------------------------------------------------------------------------------------
def test_the_scan_covers_the_package():
    graph, _ = scan()
    assert {
        "gradfuse",
        "gradfuse.train",
        "gradfuse.nn.layers",
        "gradfuse.optim.lr_scheduler",
        "gradfuse.bench.suite",
    } <= set(graph)
    assert "gradfuse.data" in graph["gradfuse.demo"] and "gradfuse.nn" in graph["gradfuse"]


def test_module_level_imports_have_no_cycle():
    graph, _ = scan()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_gradfuse_modules_are_imported_at_module_level():
    _, nested = scan()
    bad = [
        f"{module} (line {line}) imports {target} inside a function"
        for module, target, line in nested
        if (module, target) not in FUNCTION_LEVEL_ALLOWED
    ]
    assert not bad, (
        "move these imports to the top of the module (or whitelist them with a reason in "
        "FUNCTION_LEVEL_ALLOWED):\n" + "\n".join(bad)
    )


def test_the_whitelist_has_no_stale_entries():
    _, nested = scan()
    used = {(module, target) for module, target, _ in nested}
    stale = [key for key in FUNCTION_LEVEL_ALLOWED if key not in used]
    assert not stale, f"FUNCTION_LEVEL_ALLOWED entries that no longer match an import: {stale}"
