"""Notebook harness helpers: seeding, figure saving, paths."""

import random

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import forklab
from forklab import paths, plots


def draws():
    return random.random(), np.random.rand(), torch.rand(1).item()  # noqa: NPY002 - the legacy global state


def test_seed_everything_makes_python_numpy_and_torch_repeat():
    forklab.seed_everything(123)
    first = draws()
    forklab.seed_everything(123)
    assert draws() == first
    forklab.seed_everything(124)
    assert draws() != first


def test_seed_everything_fixes_thread_count_and_returns_a_seeded_generator():
    before = torch.get_num_threads()
    try:
        gen = forklab.seed_everything(7, threads=1)
        assert torch.get_num_threads() == 1
        fresh = torch.Generator().manual_seed(7)
        assert torch.rand(3, generator=gen).tolist() == torch.rand(3, generator=fresh).tolist()
        with pytest.raises(ValueError, match="`threads`"):
            forklab.seed_everything(7, threads=0)
    finally:
        torch.set_num_threads(before)


def test_save_figure_writes_png_closes_figure_and_validates_name(tmp_path, monkeypatch):
    monkeypatch.setenv("FORKLAB_FIGURES", str(tmp_path / "figs"))
    plots.use_style()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = plots.save_figure(fig, "test_figure")
    assert path == tmp_path / "figs" / "test_figure.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    with pytest.raises(ValueError, match="`name`"):
        plots.save_figure(plt.figure(), "../escape")


def test_repo_root_contains_the_project():
    assert (paths.REPO_ROOT / "pyproject.toml").exists()
    assert paths.figures_dir().name == "figures" or paths.figures_dir().exists()
