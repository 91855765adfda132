"""pyplot for the figures clipforge writes: the one place that picks matplotlib's backend.

Every plot (evaluation reports, zero-shot predictions, training curves, the similarity heatmap) is
written to a PNG, never shown, so a display-free backend is right on servers, CI and SSH sessions.
But a process that already imported pyplot (a notebook, a script that shows its own figures) has
chosen its backend, and switching it would break that user's next ``plt.show()``; any backend can
save a PNG, so theirs is kept. Imported lazily: commands that draw nothing never load matplotlib.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["pyplot"]


def pyplot() -> Any:
    """`matplotlib.pyplot`, on the Agg backend unless this process had imported pyplot already."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
