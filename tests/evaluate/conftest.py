"""Fixtures of the evaluation tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_colour_classes(root: Path, per_class: int = 3, seed: int = 0, side: int = 20) -> Path:
    """An image-folder dataset at `root`: classes red, green and blue, `per_class` noisy PNGs each."""
    rng = np.random.default_rng(seed)
    for name, rgb in (("red", (220, 30, 30)), ("green", (30, 180, 40)), ("blue", (30, 50, 220))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            noise = rng.integers(-20, 20, size=(side, side, 3))
            Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def colour_classes() -> Callable[..., Path]:
    """`colour_classes(root, per_class=3, seed=0, side=20)`: see `write_colour_classes`."""
    return write_colour_classes


@pytest.fixture()
def no_model(monkeypatch):
    """Make loading a model fail the test loudly: a refusal must come before it (every runner, and the suite,
    which imports `resolve_model` from `evaluate.common` when it runs)."""
    import clipforge.evaluate.common as common
    import clipforge.evaluate.linear_probe_eval as lp
    import clipforge.evaluate.retrieval_eval as rt
    import clipforge.evaluate.zeroshot_eval as zs

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    for module in (zs, rt, lp, common):
        monkeypatch.setattr(module, "resolve_model", refuse)


@pytest.fixture()
def quiet_suite(monkeypatch, tmp_path):
    """A suite run isolated for its cells: its own class-embedding cache, no heat map drawn (the cells are what is
    tested), one torch thread; the thread count restored after."""
    import torch

    import clipforge.evaluate.plots as plots

    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(plots, "plot_heatmap", lambda grid, rows, cols, path, **kw: path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def isolated_cache(monkeypatch, tmp_path):
    """A cache folder of the test's own (features, class embeddings) and one torch thread, restored after."""
    import torch

    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
