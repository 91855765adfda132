"""`clipforge.figures.pyplot`: Agg where nothing chose a backend, the user's own backend kept where something did.

pyplot's backend is process-wide, so each case runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_PLOT = """
import sys
import numpy as np
{before}
from clipforge.zeroshot.plot import plot_predictions
out = plot_predictions([np.zeros((8, 8, 3), np.uint8)], [["cat", "dog"]], [[0.75, 0.25]], sys.argv[1])
import matplotlib
print(matplotlib.get_backend().lower())
print(open(out, "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n")
"""


def _run(tmp_path: Path, before: str) -> list[str]:
    script = _PLOT.format(before=before)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "plot.png")], capture_output=True, text=True,
                          timeout=120, env={"MPLBACKEND": "", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_plot_selects_agg_in_a_fresh_process(tmp_path: Path) -> None:
    assert _run(tmp_path, "") == ["agg", "True"]


def test_a_plot_keeps_the_backend_a_user_chose(tmp_path: Path) -> None:
    # a script or notebook that imported pyplot on its own backend; the old unconditional
    # matplotlib.use("Agg") switched it under them
    user = "import matplotlib\nmatplotlib.use('svg')\nimport matplotlib.pyplot as plt"
    assert _run(tmp_path, user) == ["svg", "True"]
