"""Peak memory of one `load_image` call, measured in a fresh interpreter (libwebp's and libavif's allocations are
invisible to tracemalloc): the growth of its peak RSS across the call, and what the call said."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# The peak of this interpreter's own memory (VmHWM, kB), not `ru_maxrss`: Linux carries a process's maxrss into
# the child it forks and execs, so a child of a test process that had peaked at 600 MB measured 0 MB of growth
# for a load of 100 MB, and "costs little memory" held whatever the load cost.
_SCRIPT = """
import json, resource, sys
from PIL import Image
from clipforge.image import ImageLoadError, load_image
def peak_kb():
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
Image.init()
before = peak_kb()
try:
    load_image(sys.argv[1])
    outcome = "loaded"
except ImageLoadError as exc:
    outcome = exc.reason
after = peak_kb()
print(json.dumps({"mb": (after - before) / 1024, "outcome": outcome}))
"""


def load_peak(path: Path) -> dict:
    """{"mb": peak RSS growth in MB, "outcome": "loaded" or the refusal's reason} of `load_image(path)`, run with
    the clipforge this test imported (so a run against another source tree measures that tree)."""
    src = str(Path(sys.modules["clipforge"].__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(path)], capture_output=True, text=True, env=env,
                          timeout=60, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
