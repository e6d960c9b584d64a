"""Library layout: every module imports, none is over ~400 lines, and imports between modules form no cycle."""

import ast
import importlib
import pkgutil
from pathlib import Path

import forklab

LIB = Path(forklab.__file__).parent
MAX_LINES = 420  # "about 400"
#: Modules allowed over the limit (none: seqpolicy and dynamics were split like lm/sampling.py and envs/tasks.py).
KNOWN_LONG: dict[str, int] = {}


def _modules() -> dict[str, Path]:
    found = {"forklab": LIB / "__init__.py"}
    for info in pkgutil.walk_packages(forklab.__path__, "forklab."):
        rel = info.name.split(".")[1:]
        path = LIB.joinpath(*rel)
        found[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    return found


def _module_level_imports(name: str, path: Path) -> set[str]:
    """forklab modules imported at module level (function-level imports are lazy and cannot form a cycle)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("forklab")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.startswith("forklab"):
                out.add(base)
                out |= {f"{base}.{a.name}" for a in node.names}  # `from forklab import ops` imports a module
    return out


def test_every_module_imports_and_is_short():
    modules = _modules()
    assert "forklab.lm.sampling" in modules and "forklab.envs.tasks._addition" in modules
    long = {}
    for name, path in modules.items():
        if name.startswith("forklab.integrations."):
            continue  # needs the optional trl extra; covered by its own tests
        importlib.import_module(name)
        lines = len(path.read_text().splitlines())
        if lines > KNOWN_LONG.get(name, MAX_LINES):
            long[name] = lines
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle of ``graph`` (module → modules it imports) as a path, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None


def test_imports_form_no_cycle():
    modules = _modules()
    graph = {name: sorted(_module_level_imports(name, path) & modules.keys() - {name})
             for name, path in modules.items()}
    assert "forklab.surrogates" in graph["forklab.regularizers"]  # the parser sees real imports
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_detector_and_import_parser(tmp_path):
    assert _find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None
    (tmp_path / "a.py").write_text("from forklab import b\n")
    assert _module_level_imports("forklab.a", tmp_path / "a.py") == {"forklab", "forklab.b"}
    (tmp_path / "c.py").write_text("from . import d\nfrom .e import f\n\ndef g():\n    import forklab.h\n")
    assert _module_level_imports("forklab.c", tmp_path / "c.py") == {"forklab", "forklab.d", "forklab.e",
                                                                     "forklab.e.f"}
