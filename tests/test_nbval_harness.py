"""The nbval harness is strict: a changed printed number fails, the right one passes."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _notebook(path: Path, stored: str) -> None:
    cell = nbformat.v4.new_code_cell("print(round(2 / 3, 3))", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored)]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.parametrize("stored, passes", [("0.667\n", True), ("0.668\n", False)])
def test_strict_nbval_compares_printed_numbers(tmp_path, stored, passes):
    nb = tmp_path / "check.ipynb"
    _notebook(nb, stored)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", str(nb),
         "--sanitize-with", str(ROOT / "tests" / "sanitize.cfg"), "--rootdir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert (result.returncode == 0) == passes, result.stdout[-2000:]
