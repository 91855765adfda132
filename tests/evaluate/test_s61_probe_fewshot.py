"""audit61 finding 1: ``eval linear-probe --fewshot-k 4,4 --seeds 2`` ran seeds 0 and 1 twice and reported n 4 and a
std over two draws each counted twice (seeds [0, 1, 0, 1]), exit status 0. A repeated k is now refused in one line
naming the flag and the value, by the CLI's parser and by `evaluate_linear_probe` (before the model loads); distinct
ks still give n = seeds. ``--seeds`` is a count (seeds 0..N-1), not a list: nothing there can repeat.
"""

from __future__ import annotations

import json

import pytest

from clipforge.cli.main import main
from clipforge.evaluate import evaluate_linear_probe

_REPEAT = ("--fewshot-k 4,4: k=4 is listed twice; each k already runs --seeds draws, so a repeat would count the same "
           "draws again: list each k once")


def test_the_parser_refuses_a_repeated_k_in_one_line(tmp_path, capsys, no_model):
    with pytest.raises(SystemExit) as stop:
        main(["eval", "linear-probe", "--model", "test-vit-tiny", "--dataset", "folder", "--root", str(tmp_path),
              "--no-full", "--fewshot-k", "4,4", "--seeds", "2", "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == ("clipforge eval linear-probe: error: argument --fewshot-k: '4,4' lists k=4 twice; each k already "
                    "runs --seeds draws, so a repeat would count the same draws again: list each k once")
    assert not (tmp_path / "out").exists()


def test_the_parser_still_drops_an_empty_item_and_names_three_repeats(tmp_path, capsys):
    from clipforge.cli.eval import _ks

    assert _ks("4,,8") == [4, 8]
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match=r"^'2,2,2' lists k=2 3 times; "):
        _ks("2,2,2")


@pytest.mark.parametrize(("ks", "message"), [
    ([4, 4], _REPEAT),
    ((1, 2, 1), "--fewshot-k 1,2,1: k=1 is listed twice; each k already runs --seeds draws, so a repeat would count "
                "the same draws again: list each k once"),
    ([2, 0], "--fewshot-k 2,0: 0 is not a whole number of shots >= 1"),
    ([2.5], "--fewshot-k 2.5: 2.5 is not a whole number of shots >= 1"),
    (4, "--fewshot-k 4: expected a list of shot counts, e.g. [1, 2, 4, 8, 16]"),
])
def test_the_api_refuses_before_the_model_loads(tmp_path, no_model, ks, message):
    with pytest.raises(ValueError) as err:
        evaluate_linear_probe("test-vit-tiny", "folder", tmp_path, fewshot_k=ks, seeds=2, full=False,
                              out_dir=tmp_path / "out", progress=False)
    assert str(err.value) == message
    assert not (tmp_path / "out").exists()


def test_an_iterator_of_ks_is_read_once_and_kept():
    from clipforge.evaluate.linear_probe_eval import check_fewshot_k

    assert check_fewshot_k(iter([1, 2, 4])) == [1, 2, 4]
    assert check_fewshot_k(None) is None


def test_distinct_ks_give_n_equal_to_seeds(tmp_path, colour_classes, monkeypatch):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "colours"
    colour_classes(root / "train", per_class=4, seed=0, side=12)
    colour_classes(root / "test", per_class=2, seed=1, side=12)
    out = tmp_path / "out"
    code = main(["eval", "linear-probe", "--model", "test-vit-tiny", "--device", "cpu", "--workers", "0", "--quiet",
                 "--dataset", "folder", "--root", str(root), "--no-full", "--fewshot-k", "1,2", "--seeds", "2",
                 "--out", str(out), "--feature-cache", str(tmp_path / "features")])
    assert code == 0
    [path] = out.glob("*.json")
    report = json.loads(path.read_text())
    for k in ("1", "2"):
        entry = report["metrics"]["fewshot"][k]
        assert [run["seed"] for run in entry["runs"]] == [0, 1]
        assert entry["top1"]["n"] == 2
    assert report["timing"]["probe"]["fewshot"]["probes"] == 4
