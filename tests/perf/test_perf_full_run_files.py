"""Which files a run of the benchmark suite writes (review 65 of the audit-65 fix for partial runs).

Audit 65 made partial runs leave the committed full run (`benchmarks/results.json`) and the docs block alone; only
that negative half was tested, so a change that never wrote them again passed. Every section is faked here (each
section's `run` answers "skipped"), so these tests time nothing: they check the files each kind of run writes.
"""

from __future__ import annotations

import importlib
import json

import pytest

from benchmarks import report
from benchmarks import run as suite

SECTION_MODULES = ("bench_tokenizer", "bench_image", "bench_towers", "bench_text", "bench_pipeline", "bench_commands",
                   "bench_startup", "bench_search_suite", "families", "bench_cuda")
FULL = '{"the": "full run"}'


@pytest.fixture()
def fake_root(tmp_path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks" / "results.json").write_text(FULL)
    (tmp_path / "docs" / "performance.md").write_text(f"# P\n\n{report.BEGIN}\nFULL-RUN-BLOCK\n{report.END}\n")
    monkeypatch.setattr(suite, "ROOT", tmp_path)
    monkeypatch.setattr(suite, "matmul_roof", lambda dtype: 100.0)
    for name in SECTION_MODULES:
        monkeypatch.setattr(importlib.import_module(f"benchmarks.{name}"), "run", lambda *a, **k: {"skipped": "faked"})
    import benchmarks.zoo as zoo

    monkeypatch.setattr(zoo, "Zoo", lambda name: type("Z", (), {"close": lambda self: None})())
    monkeypatch.setattr(report, "plot", lambda results, path: None)
    monkeypatch.setattr(report, "markdown", lambda results: f"{report.BEGIN}\nNEW\n{report.END}")
    return tmp_path


def test_a_full_run_writes_results_json_and_the_docs_block(fake_root, capsys):
    assert suite.main(["--no-progress"]) == 0
    assert json.loads((fake_root / "benchmarks" / "results.json").read_text())["quick"] is False
    docs = (fake_root / "docs" / "performance.md").read_text()
    assert "FULL-RUN-BLOCK" not in docs and "\nNEW\n" in docs
    assert "left as they are" not in capsys.readouterr().out


def test_a_quick_run_writes_its_own_file_and_leaves_the_docs(fake_root):
    assert suite.main(["--no-progress", "--quick"]) == 0
    assert (fake_root / "benchmarks" / "results-quick.json").exists()
    assert (fake_root / "benchmarks" / "results.json").read_text() == FULL
    assert "FULL-RUN-BLOCK" in (fake_root / "docs" / "performance.md").read_text()


def test_only_listing_every_section_is_a_full_run(fake_root):
    assert suite.main(["--no-progress", "--only", ",".join(reversed(suite.SECTIONS))]) == 0
    assert json.loads((fake_root / "benchmarks" / "results.json").read_text()).get("only") is None


def test_a_partial_run_told_to_write_results_json_says_it_replaced_it(fake_root, capsys):
    target = fake_root / "benchmarks" / "results.json"
    assert suite.main(["--no-progress", "--only", "tokenizer", "--out", str(target)]) == 0
    out = capsys.readouterr().out
    assert target.read_text() != FULL
    assert "--out replaced the full run's benchmarks/results.json with this run" in out
    assert "left as they are" not in out
    assert "FULL-RUN-BLOCK" in (fake_root / "docs" / "performance.md").read_text()
