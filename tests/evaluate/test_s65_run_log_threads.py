"""Evaluation runs side by side in threads of one process (audit 65, finding 2): each run's `.log` holds its own
lines only, and the `clipforge` logger's level is put back exactly when the last run closes.

`open_run_log` used to hang a plain `FileHandler` on the shared `clipforge` logger and save/restore its level per
run: the runs' lines landed in each other's logs, the run that closed first set the level back to NOTSET (the other
run's later INFO lines were dropped), and the other then "restored" INFO for good."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from clipforge.evaluate.run_log import open_run_log


@pytest.fixture()
def package_level():
    """The `clipforge` logger's level, put back after the test whatever it did."""
    package = logging.getLogger("clipforge")
    before = package.level
    yield package
    package.setLevel(before)


def _messages(path: Path) -> list[str]:
    return [line.split(": ", 1)[1] for line in path.read_text(encoding="utf-8").splitlines()]


def _run(path: Path, name: str, steps: list[tuple[threading.Event | None, threading.Event | None]],
         errors: list[BaseException], start: threading.Event | None = None,
         closed: threading.Event | None = None) -> None:
    """Open a run log (after `start`) and log two lines per step: a step waits for its first event, then sets its
    second; `closed` is set once the log is closed."""
    try:
        if start is not None:
            assert start.wait(10), f"{name}: never started"
        with open_run_log(path) as log:
            for n, (wait, done) in enumerate(steps):
                if wait is not None:
                    assert wait.wait(10), f"{name}: step {n} waited in vain"
                log.info("%s line %d", name, n)
                log.debug("%s debug %d", name, n)  # below the log's INFO, whatever the logger's level
                logging.getLogger("clipforge.data").info("%s data %d", name, n)  # another clipforge module
                if done is not None:
                    done.set()
    except BaseException as exc:  # pragma: no cover - reported by the test
        errors.append(exc)
    finally:
        if closed is not None:
            closed.set()


def _lines(name: str, steps: int) -> list[str]:
    return [f"{name} {kind} {n}" for n in range(steps) for kind in ("line", "data")]


@pytest.mark.parametrize("level", [logging.NOTSET, logging.WARNING, logging.DEBUG])
@pytest.mark.parametrize("first_closes_first", [False, True])
def test_interleaved_runs_keep_their_own_lines_and_the_level(tmp_path, package_level, level, first_closes_first):
    """A opens, then B; both log while the other is open; then one closes and the other logs once more."""
    package_level.setLevel(level)
    a_opened, b_opened, a_closed, b_closed = (threading.Event() for _ in range(4))
    errors: list[BaseException] = []
    if first_closes_first:  # the auditor's order: the earlier run's close used to drop the later run's INFO lines
        a_steps, b_steps = [(None, a_opened), (b_opened, None)], [(None, b_opened), (a_closed, None)]
    else:
        a_steps, b_steps = [(None, a_opened), (b_opened, None), (b_closed, None)], [(None, b_opened)]
    a = threading.Thread(target=_run, args=(tmp_path / "a.log", "A", a_steps, errors), kwargs={"closed": a_closed})
    b = threading.Thread(target=_run, args=(tmp_path / "b.log", "B", b_steps, errors),
                         kwargs={"start": a_opened, "closed": b_closed})
    a.start(), b.start()
    a.join(20), b.join(20)
    assert not errors, errors
    assert _messages(tmp_path / "a.log") == _lines("A", len(a_steps))
    assert _messages(tmp_path / "b.log") == _lines("B", len(b_steps))
    assert package_level.level == level
    assert package_level.handlers == []


def test_a_run_stopped_by_an_error_logs_why_in_its_own_log_only(tmp_path, package_level, capsys):
    package_level.setLevel(logging.NOTSET)
    other_open, failed = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def failing():
        try:
            with open_run_log(tmp_path / "bad.log") as log:
                assert other_open.wait(10)
                log.info("bad started")
                raise ValueError("broken dataset")
        except ValueError:
            failed.set()

    other = threading.Thread(target=_run, args=(tmp_path / "good.log", "G", [(None, other_open), (failed, None)],
                                                errors))
    bad = threading.Thread(target=failing)
    other.start(), bad.start()
    other.join(20), bad.join(20)
    assert not errors, errors
    assert _messages(tmp_path / "bad.log") == ["bad started", "run stopped before its report was written: broken dataset"]
    assert _messages(tmp_path / "good.log") == _lines("G", 2)
    assert package_level.level == logging.NOTSET
    assert f"log of the unfinished run: {tmp_path / 'bad.log'}" in capsys.readouterr().err


def test_records_of_other_threads_stay_out_of_a_run_log(tmp_path, package_level):
    """A host application's own thread logging through clipforge while a run is open is not that run's story."""
    package_level.setLevel(logging.NOTSET)
    with open_run_log(tmp_path / "run.log") as log:
        log.info("mine")
        t = threading.Thread(target=lambda: logging.getLogger("clipforge.library").warning("someone else's"))
        t.start(), t.join()
    assert _messages(tmp_path / "run.log") == ["mine"]
    assert package_level.level == logging.NOTSET


def test_nested_run_logs_reach_the_outer_log_too(tmp_path, package_level):
    """A run opened inside another (in one thread) writes to both, as one shared handler did."""
    package_level.setLevel(logging.NOTSET)
    with open_run_log(tmp_path / "outer.log") as outer:
        outer.info("outer 1")
        with open_run_log(tmp_path / "inner.log") as inner:
            inner.info("inner")
        outer.info("outer 2")
    assert _messages(tmp_path / "outer.log") == ["outer 1", "inner", "outer 2"]
    assert _messages(tmp_path / "inner.log") == ["inner"]
    assert package_level.level == logging.NOTSET


def test_two_zeroshot_runs_in_threads_each_log_their_own_run(tmp_path, package_level, colour_classes,
                                                             isolated_cache, monkeypatch):
    """The auditor's case end to end: run 1 (fewer images) finishes while run 0 is still working."""
    import clipforge.evaluate.zeroshot_eval as zs

    package_level.setLevel(logging.NOTSET)
    root = colour_classes(tmp_path / "data", per_class=3, side=8)
    both_started = threading.Barrier(2, timeout=20)
    run1_done = threading.Event()
    real_classifier, real_extract = zs.ZeroShotClassifier, zs.extract_image_features

    def classifier(*args, **kwargs):  # both runs have logged their start before either goes on
        both_started.wait()
        return real_classifier(*args, **kwargs)

    def extract(*args, **kwargs):  # run 0 reads its images only after run 1 has written its report and closed
        if threading.current_thread().name == "run0":
            assert run1_done.wait(20)
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(zs, "ZeroShotClassifier", classifier)
    monkeypatch.setattr(zs, "extract_image_features", extract)
    reports: dict[int, dict] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            reports[i] = zs.evaluate_zeroshot("clipforge-tiny", "folder", root, limit=(7, 4)[i], workers=0,
                                              templates=["a photo of a {}."], out_dir=tmp_path / f"out{i}",
                                              progress=False)
        except BaseException as exc:  # pragma: no cover - reported by the test
            errors.append(exc)
        finally:
            if i == 1:
                run1_done.set()

    threads = [threading.Thread(target=run, args=(i,), name=f"run{i}") for i in range(2)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert not errors, errors
    for i, count in ((0, 7), (1, 4)):
        lines = _messages(Path(reports[i]["files"]["log"]))
        assert sum(line.startswith("model clipforge-tiny") for line in lines) == 1, lines
        assert sum(line.startswith("class embeddings:") for line in lines) == 1, lines
        assert [line.split("; ")[0].split(" over ")[1] for line in lines if " over " in line] == [f"{count} images"]
        assert lines[-1] == f"report written to {reports[i]['files']['report']}"
    assert package_level.level == logging.NOTSET
    assert package_level.handlers == []
