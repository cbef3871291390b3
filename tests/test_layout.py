"""The architecture shows in the tree: a few modules at the top of bench/, the run path, data and
evaluation in their own packages, and no import circles (counting imports inside functions too)."""
import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGES = ("bench", "backbones", "losses")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
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
                cycles.append(stack[stack.index(d):] + [d])
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
