"""figures/README.md lists every figure with its notebook and caption, and is up to date."""

import importlib.util
import json
from pathlib import Path

import matplotlib.figure
from PIL import Image

from forklab.plots import save_figure

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("figures_gallery", ROOT / "scripts" / "figures_gallery.py")
gallery = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gallery)


def test_the_gallery_is_up_to_date_with_the_figures_present():
    expected = gallery.render(ROOT / "figures", ROOT / "notebooks")
    current = (ROOT / "figures" / "README.md").read_text()
    assert current == expected, "figures/README.md is out of date: run `make figures` or scripts/figures_gallery.py"
    for png in (ROOT / "figures").glob("*.png"):
        assert f"![{png.stem}]({png.name})" in current


def _notebook(path: Path, *sources: str) -> None:
    cells = [{"cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": None}
             for s in sources]
    path.write_text(json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# t"}, *cells]}))


def test_captions_notebooks_stale_and_missing_figures(tmp_path):
    notebooks, figures = tmp_path / "notebooks", tmp_path / "figures"
    notebooks.mkdir()
    figures.mkdir()
    _notebook(notebooks / "07_demo.ipynb",
              "%matplotlib inline\nx = 1",
              'path = save_figure(fig, "07_curves",\n    caption="Reward rises; entropy falls.")',
              'Image(filename=str(save_figure(fig2, "07_bars")))',
              'save_figure(fig3, "07_not_run", caption=f"G = {G}")')
    for name in ["07_curves", "07_bars", "old_plot"]:
        (figures / f"{name}.png").write_bytes(b"")
    assert gallery.figure_sources(notebooks) == {
        "07_curves": ("07_demo.ipynb", 2, "Reward rises; entropy falls."),
        "07_bars": ("07_demo.ipynb", 3, None),
        "07_not_run": ("07_demo.ipynb", 4, "f'G = {G}'"),
    }
    text = gallery.render(figures, notebooks)
    curves = text.index("## `07_curves`")
    assert "Reward rises; entropy falls.\n\nDrawn by [`notebooks/07_demo.ipynb`](../notebooks/07_demo.ipynb) (cell 2)" \
        in text[curves:]
    assert "(no caption yet)" in text[text.index("## `07_bars`"):curves]
    assert "Not drawn by any notebook" in text[text.index("## `old_plot`"):]
    assert "- `07_not_run` (`notebooks/07_demo.ipynb`): run `make figures`" in text
    assert gallery.main(["--check", "--figures", str(figures), "--notebooks", str(notebooks)]) == 1
    assert gallery.main(["--figures", str(figures), "--notebooks", str(notebooks)]) == 0
    assert gallery.main(["--check", "--figures", str(figures), "--notebooks", str(notebooks)]) == 0


def test_save_figure_writes_the_caption_into_the_png(tmp_path, monkeypatch):
    monkeypatch.setenv("FORKLAB_FIGURES", str(tmp_path))
    fig = matplotlib.figure.Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1])
    path = save_figure(fig, "demo", caption="  A line.  ")
    assert Image.open(path).text["Description"] == "A line."
