"""How the benchmark suite runs (audit 65): a partial run leaves the full run's results and docs alone, the
start-up section keeps every process in its own cache, and a machine without transformers still times the
clipforge rows, saying in one line which HF rows it could not measure.

Sections are not run whole: the processes, timings and section bodies are faked where they would cost seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchmarks import bench_commands, bench_startup, bench_towers, families, report
from benchmarks import run as suite
from benchmarks.common import Timing

HF_LINE = "HF rows not measured: transformers is not installed"


@pytest.fixture()
def fake_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout in `tmp_path` with committed full results and docs; roofs and the tokenizer section faked."""
    from benchmarks import bench_tokenizer

    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks" / "results.json").write_text('{"the": "full run"}')
    (tmp_path / "docs" / "performance.md").write_text(f"# Performance\n\n{report.BEGIN}\nFULL-RUN-BLOCK\n{report.END}\n")
    monkeypatch.setattr(suite, "ROOT", tmp_path)
    monkeypatch.setattr(suite, "matmul_roof", lambda dtype: 100.0)
    monkeypatch.setattr(bench_tokenizer, "run", lambda quick, progress: {"skipped": "faked"})
    return tmp_path


def test_a_partial_run_writes_its_own_file_and_leaves_the_docs(fake_suite: Path, capsys) -> None:
    """`--only ...` without `--quick` (a documented command) overwrote benchmarks/results.json, the full run the docs
    and README cite, and rewrote the docs' block with every other goal as "-"."""
    assert suite.main(["--only", "tokenizer", "--no-progress"]) == 0
    out = capsys.readouterr().out
    partial = fake_suite / "benchmarks" / "results-partial.json"
    assert json.loads(partial.read_text())["sections"] == {"tokenizer": {"skipped": "faked"}}
    assert (fake_suite / "benchmarks" / "results.json").read_text() == '{"the": "full run"}'
    assert "FULL-RUN-BLOCK" in (fake_suite / "docs" / "performance.md").read_text()
    assert f"wrote {partial}" in out
    assert ("partial run (tokenizer): benchmarks/results.json and docs/performance.md are left as they are "
            "(--docs rewrites the docs block from this run)") in out


def test_a_partial_run_rewrites_the_docs_only_when_asked(fake_suite: Path) -> None:
    assert suite.main(["--only", "tokenizer", "--no-progress", "--docs"]) == 0
    docs = (fake_suite / "docs" / "performance.md").read_text()
    assert "FULL-RUN-BLOCK" not in docs and "by `python -m benchmarks.run --only tokenizer`" in docs
    assert (fake_suite / "benchmarks" / "results.json").read_text() == '{"the": "full run"}'


def test_the_search_goal_without_the_search_section_does_not_say_zero_vectors() -> None:
    goal = next(g for g in report.goals({"sections": {}}) if g["goal"].startswith("approximate search"))
    assert goal == {"goal": "approximate search, median latency at recall@10 >= 0.95", "target": "<= 5 ms",
                    "measured": None, "met": None, "note": "search section not in this run"}
    ran = {"sections": {"search": {"n": 200_000, "best_meeting_target": {"median_ms": 0.5, "nprobe": 2,
                                                                          "recall_at_k": 0.98}}}}
    goal = next(g for g in report.goals(ran) if g["goal"].startswith("approximate search"))
    assert goal["goal"] == "approximate search over 200,000 vectors, median latency at recall@10 >= 0.95"


def test_startup_section_runs_every_process_in_its_own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the ViT-B/32 rows had a cache of their own: the shipped model's `index add`, `search`, `classify` and
    `similarity` wrote fingerprints, class embeddings and prefetch hints into the user's ~/.cache/clipforge and were
    timed against whatever it held."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (photos / name).write_bytes(b"not decoded: the processes are faked")
    monkeypatch.setattr(bench_startup, "IMAGES", photos)
    monkeypatch.setattr(bench_startup, "compile_sources", lambda: None)
    monkeypatch.setattr(bench_startup, "_vit_b32_file", lambda work: work / "vit-b32-random.safetensors")
    monkeypatch.delenv("CLIPFORGE_CACHE", raising=False)
    started: list[tuple[list[str], dict | None]] = []

    def fake_run(argv, *args, env=None, **kwargs):
        started.append((list(argv), env))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    ticks = iter(range(1, 1_000_000))  # each process "spends" a CPU second: the ratios need a non-zero anchor
    monkeypatch.setattr(bench_startup.resource, "getrusage", lambda who: SimpleNamespace(ru_utime=next(ticks),
                                                                                         ru_stime=0.0))
    out = bench_startup.run(quick=True, progress=False, photos=2)
    assert set(out["runs"]) == {"import torch", "search", "classify", "similarity", "search-vit-b32",
                                "search-vit-b32-first"}
    work = Path(tempfile.gettempdir())
    commands = [argv[3] if argv[2] == "clipforge" else argv[-1] for argv, _ in started]
    assert "index" in commands and "search" in commands and "classify" in commands
    for argv, env in started:
        cache = Path((env or {}).get("CLIPFORGE_CACHE", "~/.cache/clipforge"))
        assert cache.parent.name.startswith("clipforge-bench-startup-") and cache.parent.parent == work, argv


def test_a_bf16_command_is_held_against_a_bf16_start_up(tmp_path: Path) -> None:
    """Review 65: the anchor loaded fp32 for every row, so a bf16 command's cast of its weights (~0.4 s on the AMX
    Xeon) counted as the command's own work. Each precision's rows now divide by that precision's start-up."""
    files = {"ckpt": tmp_path / "w.safetensors", "images": tmp_path}
    candidates = bench_commands._candidates(files, tmp_path, bf16=True)
    assert candidates["startup-bf16"](0)[-3:] == [str(files["ckpt"]), "cpu", "bf16"]
    assert len(candidates["startup"](0)) == 4  # fp32: the default precision
    results: dict = {"images": 300, "runs": {}}
    seconds = {"embed": [10.0], "embed-bf16": [6.0], "startup": [1.0], "startup-bf16": [1.5],
               "model-only-fp32": [8.0], "model-only-bf16": [3.0]}
    bench_commands._summarise(results, seconds, {k: [v[0]] for k, v in seconds.items()}, ["fp32", "bf16"])
    assert results["startup_seconds_by_precision"] == {"fp32": 1.0, "bf16": 1.5}
    assert results["runs"]["embed"]["vs_startup_plus_model"] == pytest.approx(10 / 9)
    assert results["runs"]["embed-bf16"]["vs_startup_plus_model"] == pytest.approx(6 / 4.5)
    assert results["runs"]["embed-bf16"]["cpu_vs_startup_plus_model"] == pytest.approx(6 / 4.5)
    assert "startup-bf16" not in results["runs"]


def _hide_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed (the audit's repro)


def test_commands_without_transformers_time_the_clipforge_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys) -> None:
    """`_setup` imported transformers unconditionally: the whole section failed with a traceback, start-up and
    model-only rows included."""
    from benchmarks.zoo import Zoo

    _hide_transformers(monkeypatch)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"x")
    monkeypatch.setattr(bench_commands, "IMAGES", photos)
    work = tmp_path / "work"
    work.mkdir()
    zoo = Zoo("test-vit-tiny")
    try:
        files = bench_commands._setup(zoo, 1, work)
    finally:
        zoo.close()
    assert "hf" not in files and files["ckpt"].is_file()
    candidates = bench_commands._candidates(files, work, bf16=False)
    assert sorted(candidates) == ["embed", "index-add", "model-only-fp32", "startup"]
    results: dict = {"images": 300, "runs": {}}
    seconds = {"embed": [10.0], "index-add": [12.0], "startup": [1.0], "model-only-fp32": [8.0]}
    bench_commands._summarise(results, seconds, {k: [2 * v[0]] for k, v in seconds.items()}, ["fp32"])
    assert results["hf_skipped"] == "transformers is not installed"
    assert (results["startup_seconds"], results["model_only_seconds"]) == (1.0, {"fp32": 8.0})
    assert results["runs"]["embed"]["vs_startup_plus_model"] == pytest.approx(10 / 9)
    assert results["runs"]["index-add"]["cpu_vs_startup_plus_model"] == pytest.approx(24 / 18)
    assert "vs_hf_loop" not in results["runs"]["embed"]
    suite._print_commands(results)
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("  embed ")]
    assert lines.count(f"  {HF_LINE}") == 1 and len(rows) == 1 and "HF loop" not in rows[0]
    goals = {g["goal"]: g for g in report.goals({"sections": {"commands": results}})}
    hf_goal = next(g for name, g in goals.items() if name.startswith("`clipforge embed` whole process vs HF"))
    assert (hf_goal["met"], hf_goal["note"]) == (None, "transformers is not installed")
    assert "| embed | 10.00 |" in report.markdown({**_header(), "goals": [], "sections": {"commands": results}})


def _header() -> dict:
    return {"date": "2026-12-07 22:00 UTC", "quick": True, "wall_seconds": 60.0, "machine": {},
            "roof": {"fp32_gflops": 100.0, "bf16_gflops": 50.0}}


def test_towers_without_transformers_keep_the_other_rows(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Chinese-CLIP, XLM-R and NLLB build transformers' classes: the exception escaped `run` and the rows already
    measured were thrown away."""
    _hide_transformers(monkeypatch)
    measured = []

    def fake_measure(label, config_name, overrides, towers, note, quick, bf16):
        if label != "ViT-B/32":
            bench_towers._model(config_name, overrides)  # the real build: fails for lack of transformers
        measured.append(label)
        return [{"model": label, "tower": "text", "input": "15 tokens", "batch": 32, "precision": "fp32",
                 "items_per_s": 1.0, "gflops": 1.0, "roof_gflops": 1.0, "roof_share": 1.0, "calls": 2, "note": ""}], {}

    monkeypatch.setattr(bench_towers, "_measure", fake_measure)
    out = bench_towers.run(quick=True, progress=False, models=("ViT-B/32", "Chinese-CLIP B/16"))
    assert measured == ["ViT-B/32"] and [r["model"] for r in out["rows"]] == ["ViT-B/32"]
    assert out["hf_skipped"] == "transformers is not installed (towers built from its classes: Chinese-CLIP B/16)"
    bench_towers.print_results(out)
    printed = capsys.readouterr().out.splitlines()
    assert f"  {HF_LINE} (towers built from its classes: Chinese-CLIP B/16)" in printed


def test_families_without_transformers_time_clipforge_alone(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`families._models` built transformers' SiglipModel first: without it nothing was timed."""
    from clipforge.models import create_model_from_config, get_config

    _hide_transformers(monkeypatch)
    config = get_config("test-siglip2-tiny")
    monkeypatch.setattr(families, "MODEL", "test-siglip2-tiny")
    groups: list[list[str]] = []

    def fake_round_robin(calls: dict, repeats: int, **kwargs: object) -> dict[str, Timing]:
        groups.append(sorted(calls))
        return {name: Timing(0.5, 0.4, repeats) for name in calls}

    monkeypatch.setattr(families, "time_round_robin", fake_round_robin)
    out = families.run(quick=True, progress=False, roof={"fp32": 100.0, "bf16": 200.0})
    assert out["hf_skipped"] == "transformers is not installed"
    assert groups and all(g == ["clipforge"] for g in groups)
    torch.manual_seed(0)
    plain = create_model_from_config(config).eval().requires_grad_(False)
    assert out["flops_per_item"]["image"] == families._flops(plain.encode_image, torch.randn(1, 3, 32, 32))
    assert [(r["tower"], r["precision"], r["batch"], r["ratio"], r["transformers"]) for r in out["rows"][:2]] == [
        ("image", "fp32", 1, None, None), ("text", "fp32", 1, None, None)]
    families.print_rows(out)
    printed = capsys.readouterr().out
    assert printed.count(HF_LINE) == 1 and "SigLIP2 B/16 image fp32 b1   clipforge     2.00/s" in printed
    goals = {g["goal"].split(":")[0]: g for g in report.goals({"sections": {"families": out}})}
    assert goals["SigLIP 2 B/16 towers vs transformers SiglipModel, batch 1"]["met"] is None
