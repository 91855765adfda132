"""Runs the library's vector-search benchmark (`benchmarks/bench_search.py`) for the suite.

That script belongs to the library package and writes its own JSON; the suite calls its `main`
with a temporary output file and folds the numbers into `results.json`. The quick suite uses
200,000 vectors (labelled as such) to stay inside its time budget; the full run uses 1,000,000.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

__all__ = ["run"]


def run(quick: bool = False, progress: bool = True) -> dict:
    try:
        from benchmarks import bench_search
    except ImportError as exc:
        return {"skipped": f"benchmarks/bench_search.py is not available ({exc})"}
    n = 200_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="clipforge-bench-search-") as folder:
        out = Path(folder) / "search.json"
        argv = ["--n", str(n), "--out", str(out)] + (["--quick"] if quick else [])
        code = bench_search.main(argv)
        if code or not out.is_file():
            return {"skipped": f"bench_search exited with {code}"}
        result = json.loads(out.read_text())
    result["quick_subset"] = quick
    return result
