"""`--plot` on every eval task, the task's own usage on a bad flag, and the probe's C sweep edge."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.evaluate.probe import c_at_edge, fit_probe, search_c


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    import scipy.optimize  # noqa: F401 - threadpoolctl only limits libraries already loaded
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _pngs(paths):
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(im.format)
    return out


_BASE = ["--model", "test-vit-tiny", "--device", "cpu", "--workers", "0", "--quiet", "--batch-size", "8"]


def test_retrieval_plot(tmp_path):
    (tmp_path / "caps").mkdir()
    rows = ["image,caption"]
    for i, rgb in enumerate(((200, 0, 0), (0, 200, 0), (0, 0, 200))):
        Image.new("RGB", (16, 16), rgb).save(tmp_path / "caps" / f"{i}.png")
        rows += [f"{i}.png,colour {i}", f"{i}.png,another {i}"]
    (tmp_path / "caps" / "captions.csv").write_text("\n".join(rows) + "\n")
    assert main(["eval", "retrieval", *_BASE, "--captions", str(tmp_path / "caps" / "captions.csv"),
                 "--out", str(tmp_path / "out"), "--plot", str(tmp_path / "plots")]) == 0
    assert _pngs(sorted((tmp_path / "plots").glob("*_recall.png"))) == ["PNG"]


def test_linear_probe_plot_and_sweep_recorded(tmp_path, capsys, colour_classes):
    colour_classes(tmp_path / "d" / "train", per_class=4, seed=1, side=20)
    colour_classes(tmp_path / "d" / "test", per_class=2, seed=2, side=20)
    assert main(["eval", "linear-probe", *_BASE, "--dataset", "folder", "--root", str(tmp_path / "d"),
                 "--out", str(tmp_path / "out"), "--feature-cache", str(tmp_path / "feats"),
                 "--fewshot-k", "1,2", "--seeds", "1", "--plot"]) == 0
    for suffix in ("_c_sweep.png", "_per_class.png", "_confusion.png", "_fewshot.png"):
        assert len(list((tmp_path / "out").glob(f"*{suffix}"))) == 1, suffix
    assert set(_pngs((tmp_path / "out").glob("*.png"))) == {"PNG"}


@pytest.mark.parametrize("task,needed", [("zeroshot", ["--dataset", "folder", "--root", "x"]),
                                         ("retrieval", ["--captions", "x.csv"]),
                                         ("linear-probe", ["--dataset", "folder", "--root", "x"])])
def test_unknown_flag_shows_the_task_usage(task, needed, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", task, *needed, "--no-such-flag"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"usage: clipforge eval {task}" in err and "--no-such-flag" in err


def test_sweep_widens_when_the_best_c_is_at_the_end():
    # accuracy still rising at 10^6: the sweep goes on to 10^8 and finds the peak there
    c, tried = search_c(None, None, None, None, evaluate=lambda lc: -abs(lc - 7.75))
    assert c == pytest.approx(10 ** 7.75) and 8.0 in tried and not c_at_edge(tried)
    # rising all the way: widened to the limit and reported at the edge
    c, tried = search_c(None, None, None, None, evaluate=lambda lc: lc)
    assert c == pytest.approx(1e10) and min(tried) == -6 and c_at_edge(tried)
    c, tried = search_c(None, None, None, None, evaluate=lambda lc: -lc)
    assert c == pytest.approx(1e-10) and c_at_edge(tried)
    # a flat sweep does not widen (ties prefer the smaller C, which is not "still rising")
    c, tried = search_c(None, None, None, None, evaluate=lambda lc: 0.5)
    assert c == pytest.approx(1e-6) and min(tried) == -6 and not c_at_edge(tried)


def test_probe_summary_notes_an_edge_c():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = (x[:, 0] > 0).astype(int)
    res = fit_probe(x[:30], y[:30], x[30:], 2, val=(x[30:], y[30:]))
    summary = res.summary()
    assert summary["c_at_edge"] == c_at_edge(res.sweep)
    assert ("note" in summary) == summary["c_at_edge"]


def test_probe_sweep_shows_progress(capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 3))
    y = (x[:, 0] > 0).astype(int)
    fit_probe(x[:20], y[:20], x[20:], 2, val=(x[20:], y[20:]), progress=True, desc="C sweep (full probe)")
    err = capsys.readouterr().err
    assert "C sweep (full probe)" in err and "fit" in err


def test_cli_dataset_choices_are_the_registry():
    from clipforge.cli.eval import DATASETS
    from clipforge.data import available_datasets

    assert sorted(DATASETS) == available_datasets()
