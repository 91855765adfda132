"""`python -m benchmarks.report`: the docs block is rewritten from saved results, with the date, load
average, CPU flags and roofs, and the towers rows judged against the roof (issue 22.3)."""

from __future__ import annotations

import json

from benchmarks import report


def _results() -> dict:
    def row(tower: str, precision: str, share: float, batch: int = 32) -> dict:
        return {"model": "ViT-B/32", "tower": tower, "input": "77 tokens", "batch": batch, "precision": precision,
                "items_per_s": 10.0, "gflops": share * 100, "roof_gflops": 100.0, "roof_share": share, "note": ""}

    def family(tower: str, precision: str, batch: int, ratio: float) -> dict:
        return {"tower": tower, "precision": precision, "batch": batch, "ratio": ratio,
                "clipforge": {"per_s": ratio, "roof_share": 0.5}, "transformers": {"per_s": 1.0, "roof_share": 0.4}}

    return {
        "date": "2026-12-04 11:00 UTC", "quick": False, "wall_seconds": 60.0, "load_average_end": [0.5, 0.4, 0.3],
        "machine": {"cpu_model": "AMD EPYC", "usable_cpus": 2, "flags": ["avx512f", "avx512_bf16"], "torch": "2.x",
                    "torch_threads": 2, "load_average_start": [0.1, 0.2, 0.3], "bf16_native": True},
        "roof": {"fp32_gflops": 200.0, "bf16_gflops": 440.0, "bf16_native": True},
        "sections": {"towers": {"rows": [row("text", "fp32", 0.95), row("text", "bf16", 0.5),
                                         row("image", "bf16", 0.3, batch=8)],
                                "roofs": {"ViT-B/32": {"fp32": 100.0, "bf16": 100.0}}, "bf16": "native",
                                "not_covered": {"ViT-bigG/14": "too big here"}},
                     "families": {"depth": 12, "image_resolution": 224, "context_length": 64,
                                  "cosine_min": {"image": 1.0, "text": 1.0},
                                  "rows": [family("image", "fp32", 1, 1.8), family("text", "bf16", 1, 1.2),
                                           family("image", "fp32", 32, 1.4), family("text", "fp32", 32, 1.1)]}},
    }


def test_towers_goals_take_the_lowest_batch_32_row() -> None:
    goals = {g["goal"]: g for g in report.goals(_results())}
    fp32 = goals["text and family towers, batch 32, fp32: lowest share of the fp32 roof"]
    bf16 = goals["text and family towers, batch 32, bf16: lowest share of the bf16 roof"]
    assert (fp32["measured"], fp32["met"]) == (0.95, True)
    assert (bf16["measured"], bf16["met"]) == (0.5, False)  # the batch-8 row (0.3) is not a batch-32 figure


def test_a_share_above_the_roof_is_not_a_goal_met() -> None:
    """The roof is timed in the same round-robin group as the towers, on a shared machine: in a slow minute it
    read 1,417 GFLOP/s against a bf16 tower at 1,656, and the goal said MET at 117%. A share past
    `ABOVE_ROOF` is the roof reading low; it is reported, with why, and never counted as met."""
    results = _results()
    results["sections"]["image"] = {"models": {"ViT-B/32": {
        "roof_in_group": {"matmul-roof-fp32": 300.0, "matmul-roof-bf16": 1417.0},
        "batches": {"32": {"clipforge": {"gflops": 285.0, "images_per_s": 33.0},
                           "clipforge-bf16": {"gflops": 1656.0, "images_per_s": 190.0}}}}}}
    results["sections"]["towers"]["rows"].append({**results["sections"]["towers"]["rows"][0], "roof_share": 1.3})
    goals = {g["goal"]: g for g in report.goals(results)}
    fp32 = goals["ViT-B/32 image fp32 batch 32, share of fp32 matmul roof"]
    bf16 = goals["ViT-B/32 image bf16 batch 32, share of bf16 matmul roof"]
    assert (round(fp32["measured"], 2), fp32["met"], fp32["note"]) == (0.95, True, "285 of 300 GFLOP/s")
    assert (round(bf16["measured"], 3), bf16["met"]) == (1.169, False)
    assert bf16["note"].startswith("1656 of 1417 GFLOP/s (above the roof timed in the same group")
    towers = goals["text and family towers, batch 32, fp32: lowest share of the fp32 roof"]
    assert (towers["measured"], towers["met"]) == (0.95, False) and "1 above their group's roof" in towers["note"]


def test_report_rewrites_only_the_generated_block(tmp_path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results()))
    docs = tmp_path / "performance.md"
    docs.write_text(f"# Performance\n\nprose kept\n\n{report.BEGIN}\nold numbers\n{report.END}\n\nafter\n")
    assert report.main([str(results), "--docs", str(docs), "--no-plot"]) == 0
    text = docs.read_text()
    assert "prose kept" in text and text.rstrip().endswith("after") and "old numbers" not in text
    assert "Measured 2026-12-04 11:00 UTC" in text and "avx512_bf16" in text
    assert "load average at start [0.1, 0.2, 0.3], at end [0.5, 0.4, 0.3]" in text
    assert "| ViT-B/32 | text | 77 tokens | 32 | bf16 |" in text and "Not covered: ViT-bigG/14: too big here" in text


def test_families_goals_take_the_lowest_ratio_per_batch() -> None:
    goals = {g["goal"].split(":")[0]: g for g in report.goals(_results())}
    b1 = goals["SigLIP 2 B/16 towers vs transformers SiglipModel, batch 1"]
    b32 = goals["SigLIP 2 B/16 towers vs transformers SiglipModel, batch 32"]
    assert (b1["measured"], b1["met"], b1["note"]) == (1.2, False, "text bf16; 2 rows")  # 1.2 < 1.3
    assert (b32["measured"], b32["met"]) == (1.1, True)
    assert "### SigLIP 2 B/16 towers vs transformers" in report.markdown({**_results(), "goals": report.goals(_results())})
