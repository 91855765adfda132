"""Choose 1 or 2 intra-op threads by measured speed, re-checked as the machine's load changes.

On a shared 2-core machine two OpenMP threads wait on each other whenever one of them is
descheduled, so under load one thread can be many times faster (a measured run: 750 images/s
with one thread, 22 with two); on an idle machine two are faster. Every `period` steps the other
setting runs for `probe` steps (the first is discarded as warm-up) and is kept if its best step
beat the incumbent's median. The first probe comes after `first` steps; three steps in a row
4x slower than before (someone else's job started) trigger the re-check at once. The processes a run
uses beside its threads, DataLoader workers, are checked against the cores too (`too_many_workers`).
"""

from __future__ import annotations

import torch


class ThreadTuner:
    def __init__(self, choices: tuple[int, ...] = (1, 2), period: int = 400, probe: int = 2,
                 first: int = 30) -> None:
        self.choices, self.period, self.probe = choices, period, probe
        self.current = choices[0]
        self.recent: list[float] = []
        self.speed: dict[int, float] = {}
        self.steps = max(period - probe - first, 0)
        torch.set_num_threads(self.current)

    def record(self, seconds_per_sample: float) -> None:
        """Feed one step's time per sample; may switch the thread count for the next step."""
        if len(self.choices) < 2:
            return
        self.steps += 1
        self.recent = (self.recent + [seconds_per_sample])[-9:]
        phase = self.steps % self.period
        if self.speed and phase < self.period - self.probe - 1 and self._slowed_down():
            # other load arrived: re-measure now instead of at the next period
            self.steps += self.period - self.probe - 1 - phase
            self.recent = self.recent[-3:]
            return
        if phase == self.period - self.probe:  # measure the incumbent, then probe the other setting
            window = sorted(self.recent)
            self.speed = {self.current: 1.0 / window[len(window) // 2]}
            self.current = next(c for c in self.choices if c != self.current)
        elif phase == 0 and self.speed:  # probe done: keep whichever was faster
            self.speed[self.current] = 1.0 / min(self.recent[-(self.probe - 1):])
            self.current = max(self.speed, key=self.speed.get)
        else:
            return
        torch.set_num_threads(self.current)

    def _slowed_down(self, factor: float = 4.0) -> bool:
        """The last 3 steps each took `factor` times the median of the 6 before them."""
        if len(self.recent) < 9:
            return False
        before = _median(self.recent[:-3])
        return all(x > factor * before for x in self.recent[-3:])


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def configure_threads(threads: int | None) -> ThreadTuner | None:
    """None: leave torch's default; N > 0: exactly N threads; 0: a `ThreadTuner` over 1 and 2."""
    if threads is None:
        return None
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: choose by measured speed), got {threads}")
    if threads == 0:
        return ThreadTuner((1, 2))
    torch.set_num_threads(threads)
    return None


def too_many_workers(workers: int) -> str | None:
    """One line when the DataLoader workers asked for outnumber the cores this process may run on, else None.

    The number is kept (the user asked for it: `--set workers=N`; a recipe's own is cut to the cores when the
    config is built), and the trainer silences torch's own warning, which said it twice a run in three lines."""
    from clipforge.cores import usable_cores

    cores = usable_cores()
    if workers <= cores:
        return None
    noun = "core" if cores == 1 else "cores"
    return (
        f"workers={workers}: more DataLoader processes than the {cores} {noun} this process may run on; kept as "
        f"asked (they take turns on the cores; --workers {cores} uses each once)"
    )
