"""`clipforge eval`: bad options refused before any model or image is loaded; nothing of a run lost or unnamed.

Each of these used to surface only after the whole evaluation (`--expect acc1=80`: "no such metric",
no report; `--plot` into a file: the report lost; `--limit 0`: a stray log), or as an errno
(`--out afile`: "[Errno 17] File exists"). Skipped files were counted but not named anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.evaluate.report import parse_expect

_BASE = ["--model", "test-vit-tiny", "--device", "cpu", "--workers", "0", "--quiet", "--batch-size", "8"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIPFORGE_PROBE_THREADS", raising=False)


def test_expect_names_are_checked_and_the_suites_names_accepted():
    assert parse_expect(["acc1=80,acc5=95"], "zeroshot") == {"top1": 80.0, "top5": 95.0}
    assert parse_expect(["lp_acc1=70", "TOP5=90"], "linear-probe") == {"top1": 70.0, "top5": 90.0}
    assert parse_expect(["image_retrieval_recall@5=60"], "retrieval") == {"text_to_image_R@5": 60.0}
    assert parse_expect(["mAP11=50"], "zeroshot", "voc2007") == {"mAP11": 50.0}
    with pytest.raises(ValueError, match=r"--expect acc9: zeroshot has no such metric \(known: top1, top5"):
        parse_expect(["acc9=1"], "zeroshot")
    with pytest.raises(ValueError, match="no such metric"):
        parse_expect(["mAP11=50"], "zeroshot", "cifar10")  # CIFAR-10 has no mAP


@pytest.mark.parametrize("items,named", [(["top1=60", "top1=70"], "top1"), (["top1=60,acc1=70"], "top1"),
                                         (["TOP5=90", "acc5=91"], "top5")])
def test_a_metric_expected_twice_with_two_values_is_refused(items, named):
    """audit 61: the last value silently won (`--expect top1=60 --expect top1=70` checked 70)."""
    with pytest.raises(ValueError, match=rf"--expect names {named} twice \(\d+ and \d+\): give it once"):
        parse_expect(items, "zeroshot")
    assert parse_expect(["top1=60", "acc1=60"], "zeroshot") == {"top1": 60.0}  # the same value twice is no conflict


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_value_that_is_no_finite_percent_is_refused_in_one_line(value):
    """review 61: ``top1=nan`` (never equal to itself) took the "named twice" branch: a KeyError traceback."""
    with pytest.raises(ValueError, match=rf"--expect 'top1={value}': expected METRIC=PERCENT \(a finite number\)"):
        parse_expect([f"top1={value}"], "zeroshot")


@pytest.mark.parametrize("extra,message", [
    (["--expect", "acc9=80"], "--expect acc9: zeroshot has no such metric"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--out", "{tmp}/afile"], "--out {tmp}/afile: is a file, not a folder"),
    (["--out", "{tmp}/afile/sub"], "--out {tmp}/afile/sub: cannot write there"),
    (["--plot", "{tmp}/afile"], "--plot {tmp}/afile: is a file, not a folder"),
    (["--templates", "nosuchset"], "unknown template set 'nosuchset'"),  # it came after the model had loaded
])
def test_zeroshot_refuses_before_loading_anything(tmp_path, capsys, no_model, extra, message, colour_classes):
    root = colour_classes(tmp_path / "d", per_class=2, side=16)
    (tmp_path / "afile").write_text("")
    args = ["eval", "zeroshot", *_BASE, "--dataset", "folder", "--root", str(root), "--out", str(tmp_path / "out")]
    assert main(args + [e.replace("{tmp}", str(tmp_path)) for e in extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {message.replace('{tmp}', str(tmp_path))}"] or \
        (len(err) == 1 and err[0].startswith(f"error: {message.replace('{tmp}', str(tmp_path))}"))
    assert not list(tmp_path.rglob("*.log"))  # a refused run leaves no log


def test_probe_and_retrieval_refuse_before_loading_anything(tmp_path, capsys, no_model, colour_classes):
    root = colour_classes(tmp_path / "d", per_class=2, side=16)
    assert main(["eval", "linear-probe", *_BASE, "--dataset", "folder", "--root", str(root), "--limit-train", "0",
                 "--out", str(tmp_path / "out")]) == 2
    assert "--limit-train must be >= 1" in capsys.readouterr().err
    (tmp_path / "c.csv").write_text("image,caption\nred/0.png,red\n")
    assert main(["eval", "retrieval", *_BASE, "--captions", str(tmp_path / "c.csv"), "--images", str(root),
                 "--expect", "acc1=1", "--out", str(tmp_path / "out")]) == 2
    assert "--expect acc1: retrieval has no such metric" in capsys.readouterr().err


def test_suite_refuses_an_unusable_out_before_any_cell(tmp_path, capsys, colour_classes):
    (tmp_path / "afile").write_text("")
    root = colour_classes(tmp_path / "d", per_class=2, side=16)
    code = main(["eval", "suite", "--models", "test-vit-tiny", "--datasets", f"cifar10={root}", "--device", "cpu",
                 "--quiet", "--out", str(tmp_path / "afile")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == f"error: --out {tmp_path / 'afile'}: is a file, not a folder"


def test_dataset_typo_says_what_was_meant(tmp_path, capsys):
    assert main(["eval", "zeroshot", *_BASE, "--dataset", "cifr10", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--dataset 'cifr10': unknown dataset (did you mean cifar10?)" in err and "usage:" not in err


def test_failed_plot_keeps_the_report(tmp_path, capsys, monkeypatch, colour_classes):
    import clipforge.evaluate.plots as plots

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(plots, "plot_per_class_accuracy", broken)
    root = colour_classes(tmp_path / "d", per_class=2, side=16)
    assert main(["eval", "zeroshot", *_BASE, "--dataset", "folder", "--root", str(root), "--templates", "simple",
                 "--out", str(tmp_path / "out"), "--plot"]) == 1
    reports = list((tmp_path / "out").glob("*.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["plot_error"] == "disk full"
    assert "warning: plots not written: disk full (the report was written:" in capsys.readouterr().err


def test_skipped_files_are_named_in_report_log_and_stderr(tmp_path, capsys, colour_classes):
    root = colour_classes(tmp_path / "imgs", per_class=2, side=16)
    (root / "red" / "broken.png").write_bytes(b"not a png")
    rows = ["image,caption", "red/0.png,a red square", "green/0.png,a green square", "blue/0.png,a blue one",
            "red/broken.png,a broken one", "gone.png,a missing one", "only-one-field"]
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    assert main(["eval", "retrieval", *_BASE, "--captions", str(tmp_path / "c.csv"), "--images", str(root),
                 "--out", str(tmp_path / "out"), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    ds = report["dataset"]
    assert ds["missing_examples"] == [str(root / "gone.png")]
    assert ds["bad_csv_row_examples"] == [{"line": 7, "reason": "1 fields, expected 2"}]
    assert "broken.png" in report["bad_images"]["examples"][0]["source"]
    assert "notice: 2 images skipped (unreadable or missing; named in" in captured.err
    log = Path(report["files"]["log"]).read_text()
    assert f"bad image skipped: {root / 'red' / 'broken.png'}" in log
    assert f"missing file (listed, not on disk): {root / 'gone.png'}" in log and "line 7: 1 fields" in log


def test_unfinished_run_keeps_a_log_that_says_why_and_where(tmp_path, capsys):
    root = tmp_path / "d"
    (root / "red").mkdir(parents=True)
    (root / "red" / "0.png").write_bytes(b"not a png")  # nothing readable: the run fails after its log opened
    (root / "blue").mkdir()
    (root / "blue" / "0.png").write_bytes(b"not a png either")  # two classes: one is refused before any log
    assert main(["eval", "zeroshot", *_BASE, "--dataset", "folder", "--root", str(root), "--templates", "simple",
                 "--out", str(tmp_path / "out")]) == 2
    logs = list((tmp_path / "out").glob("*.log"))
    assert len(logs) == 1 and not list((tmp_path / "out").glob("*.json"))
    assert "run stopped before its report was written: no image of" in logs[0].read_text()
    assert f"log of the unfinished run: {logs[0]}" in capsys.readouterr().err


def test_probe_fits_run_single_threaded_and_are_timed(tmp_path, colour_classes):
    """The fits ran with every BLAS/OpenMP thread: 12-50 s a fit on 2 loaded cores instead of 0.5-1 s."""
    import sklearn.linear_model  # noqa: F401 - loaded, so threadpoolctl sees (and limits) its BLAS
    from threadpoolctl import threadpool_info, threadpool_limits

    import clipforge.evaluate.probe as probe
    from clipforge.evaluate import evaluate_linear_probe

    seen: list[int] = []
    real_fit = probe._fit

    def spy(*args, **kwargs):
        seen.append(max(p["num_threads"] for p in threadpool_info()))
        return real_fit(*args, **kwargs)

    for split, seed in (("train", 1), ("test", 2)):
        colour_classes(tmp_path / "d" / split, per_class=4, seed=seed, side=16)
    with threadpool_limits(2), pytest.MonkeyPatch.context() as patch:  # the machine's default on 2 cores
        patch.setattr(probe, "_fit", spy)
        report = evaluate_linear_probe("test-vit-tiny", "folder", tmp_path / "d", fewshot_k=[1], seeds=1, workers=0,
                                       device="cpu", out_dir=tmp_path / "out", progress=False)
    assert seen and set(seen) == {1}
    timing = report["timing"]["probe"]
    assert timing["fit_threads"] == 1 and timing["full"]["fits"] == len(report["probe"]["full"]["sweep"]) + 1
    assert timing["full"]["search_s"] > 0 and timing["fewshot"]["probes"] == 1
    assert report["dataset"]["train_root"] == str(tmp_path / "d" / "train")
    assert report["dataset"]["root"] == str(tmp_path / "d" / "test")


def test_a_run_that_fails_before_its_log_leaves_no_out_folder(tmp_path, capsys, colour_classes):
    """`--out` is checked up front without being made: a dataset that then fails to open (a root that does not
    exist, a dataset of another shape) used to leave an empty `--out` folder behind; the folder appears with
    the run's log. A run that starts writes into it as before."""
    out = tmp_path / "new" / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    for task in ("zeroshot", "linear-probe"):  # a folder dataset with no class folders fails as it opens
        assert main(["eval", task, *_BASE, "--dataset", "folder", "--root", str(empty), "--out", str(out)]) == 2
        assert "error:" in capsys.readouterr().err
        assert not (tmp_path / "new").exists()
    root = colour_classes(tmp_path / "d", per_class=2, side=16)
    assert main(["eval", "zeroshot", *_BASE, "--dataset", "folder", "--root", str(root), "--templates", "simple",
                 "--out", str(out)]) == 0
    assert len(list(out.glob("*.json"))) == 1 and len(list(out.glob("*.log"))) == 1
