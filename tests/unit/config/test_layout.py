"""The architecture shows in the tree: a few modules at the top of bench/, the run path, data and
evaluation in their own packages, and no import circles (counting imports inside functions too)."""

import ast
from pathlib import Path

from paths import ROOT

PACKAGES = ("bench", "backbones", "losses")


def module_name(path: Path) -> str:
    """The name a module is imported by: backbones/ and losses/ install as bench.backbones and bench.losses."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in ("backbones", "losses"):
        parts = ["bench", *parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            while name and name not in known:  # `from bench.eval import metrics` → bench.eval.metrics
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def test_no_import_circles():
    mods = modules()
    graph = {m: imports(p, set(mods)) - {m} for m, p in mods.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles: " + "; ".join(" → ".join(c) for c in cycles)


def test_at_most_a_dozen_modules_at_the_top_of_bench():
    top = [p.name for p in (ROOT / "bench").glob("*.py")]
    assert len(top) <= 12, top
    for package in ("run", "data", "eval", "cli"):
        assert (ROOT / "bench" / package / "__init__.py").is_file()


def test_plugins_public_names_stay_importable():
    from bench.plugins import BACKBONES, DATASETS, LOSSES, InputSpec, LabelledImages  # noqa: F401


# The layers, bottom first: a unit (a subpackage of bench, or a module at its top) imports only from its own layer
# or below, and units never import each other in a circle. bench/__init__ (which sets the OpenMP wait policy
# before torch loads) and bench/__main__ are the entry points, above every layer.
LAYERS = (
    ("bench.errors", "bench.registry", "bench.typecheck", "bench.schema"),
    ("bench.plugins", "bench.config", "bench.results", "bench.items"),
    ("bench.eval", "bench.data", "bench.backbones", "bench.losses", "bench.baselines", "bench.builtins"),
    ("bench.grid",),
    ("bench.run",),
    ("bench.report",),
    ("bench.export",),
    ("bench.cli",),
)
ENTRY = ("bench", "bench.__main__")


def unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def unit_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for m, p in mods.items():
        if m in ENTRY:
            continue
        graph.setdefault(unit(m), set()).update(unit(d) for d in imports(p, set(mods)) if unit(d) != unit(m))
    return graph


def test_every_unit_has_a_layer():
    placed = {u for layer in LAYERS for u in layer}
    assert set(unit_graph()) <= placed, sorted(set(unit_graph()) - placed)


def test_no_arrow_up_between_packages():
    level = {u: i for i, layer in enumerate(LAYERS) for u in layer}
    up = [f"{a} → {b}" for a, deps in unit_graph().items() for b in sorted(deps) if level.get(b, 0) > level.get(a, 0)]
    assert not up, "imports that point up a layer: " + "; ".join(up)


def test_no_circle_between_packages():
    graph = unit_graph()
    circles = []

    def reach(start, node, seen):
        for nxt in graph.get(node, ()):
            if nxt == start:
                circles.append(start)
            elif nxt not in seen:
                seen.add(nxt)
                reach(start, nxt, seen)

    for u in graph:
        reach(u, u, set())
    assert not circles, "packages in an import circle: " + ", ".join(sorted(set(circles)))
