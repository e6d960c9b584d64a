"""Project hygiene: dependency lists agree, notebooks were really executed, the lock is complete."""

import ast
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    extras = project["optional-dependencies"]
    for group in extras.values():
        wanted |= set(group)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {r for r in pip_section if not r.startswith("-e")}
    assert listed == wanted
    editable = [r for r in pip_section if r.startswith("-e")]
    assert editable and set(re.search(r"\[(.*)\]", editable[0]).group(1).split(",")) == set(extras)
    assert "python=3.11" in env["dependencies"]


def test_lock_pins_every_dependency_exactly():
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"unpinned line in requirements.lock: {line}"
            pins[_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = list(project["dependencies"]) + [r for g in project["optional-dependencies"].values() for r in g]
    missing = {_name(r) for r in needed} - set(pins)
    assert not missing, f"requirements.lock lacks {missing}"
    assert pins["torch"] == "2.13.0" and pins["nbval"] == "0.11.0"


def _prints(source: str) -> bool:
    """True if the cell surely produces output: a print/display call, or a bare non-call expression last."""
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in {"print", "display"}:
            return True
    last = tree.body[-1] if tree.body else None
    return isinstance(last, ast.Expr) and not isinstance(last.value, ast.Call | ast.Constant)


def test_there_is_at_least_one_notebook():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_was_executed_and_printing_cells_kept_outputs(path):
    """Strict nbval compares nothing in a cell with no execution count or no stored outputs."""
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    counts = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if not source.strip():
            continue
        assert cell.get("execution_count") is not None, f"{path.name} cell {i} was never executed"
        counts.append(cell["execution_count"])
        prints = _prints(source)
        if prints:
            assert cell.get("outputs"), f"{path.name} cell {i} prints but has no stored outputs"
    assert counts == sorted(counts) and len(set(counts)) == len(counts), f"{path.name} was not run top to bottom"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_contract_opening_and_real_run_cell(path):
    nb = json.loads(path.read_text())
    first_md = "".join(nb["cells"][0]["source"])
    assert "arXiv" in first_md and "run time" in first_md.lower()
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert tagged and "REAL_RUN = False" in "".join(tagged[0]["source"])


def test_no_file_points_outside_the_repository():
    """Notebooks, docstrings, tests and docs cite only what ships here (docs/formulas.md, data/models/README.md, ...),
    never the team's private reference folder or its file names."""
    outside = re.compile(r"\.\./shared|shared/reference|tiny-lm-facts|notebook-plan\.md|frameworks\.md|"
                         r"formulas-wave2|DESIGN\.md|(?<![/\w])formulas\.md ?§")
    paths = [p for d in ("lib", "tests", "scripts", "benchmarks", "docs", "notebooks", "data")
             for p in (ROOT / d).rglob("*") if p.suffix in {".py", ".md", ".ipynb", ".sh"}]
    offenders = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in paths + [ROOT / "README.md"]
                 if p.name != "test_project.py" for m in [outside.search(p.read_text(encoding="utf-8"))] if m]
    assert not offenders, offenders
