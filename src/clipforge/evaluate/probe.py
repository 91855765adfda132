"""Logistic-regression probes on frozen features, with the CLIP paper's choice of C.

The paper (appendix A.3) fits scikit-learn's L-BFGS logistic regression and picks the L2
strength on a validation split with a parametric binary search: start at 10^-6, 10^-4, ...,
10^6, then repeatedly halve the step around the best value until 8 steps per decade. We search
log10(C) the same way (C = 1/lambda, so the range is the same), then refit on train + val.
When the best coarse value sits at an end of the range and beats its inner neighbour, the optimum
may lie beyond it: the sweep widens by two decades at a time (up to 10^-10 .. 10^10), and a C
still at the edge is reported as such (`c_at_edge`) rather than silently taken.

Few-shot (k examples per class): the k-shot sample is the training set, a disjoint validation
set of min(k, 4) further examples per class (the CoOp convention) picks C, and the final model
is fitted on the k-shot sample alone, so "k-shot" means k training labels per class. With no
examples left for validation, C falls back to 1.0 and the result says so.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ProbeResult", "c_at_edge", "fewshot_split", "fit_probe", "fit_threads", "limited_fit_threads", "mean_std",
           "search_c", "stratified_holdout"]

COARSE_LOG10_C = (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0)
WIDEST_LOG10_C = (-10.0, 10.0)  # how far the sweep widens when the best C is at an end
FINEST_STEP = 0.125  # 8 steps per decade


FIT_THREADS_ENV = "CLIPFORGE_PROBE_THREADS"


def limited_fit_threads() -> int:
    """BLAS/OpenMP threads the probe fits run with: 1, or ``$CLIPFORGE_PROBE_THREADS``.

    A fit is small (hundreds to a few thousand rows x 512 features): its matrix products are too
    short for threads to pay off, and when the cores are busy (DataLoader workers just finished,
    another job) spinning BLAS threads wait on each other. Measured on the 2-core box: one
    800 x 256 L-BFGS fit took 12-50 s with 2 OpenBLAS/OpenMP threads under load, 0.5-1 s with one.
    """
    try:
        return max(1, int(os.environ.get(FIT_THREADS_ENV, "1")))
    except ValueError:
        return 1


@contextmanager
def fit_threads() -> Iterator[None]:
    """Limit BLAS/OpenMP pools to `limited_fit_threads()` for the fits inside (restored afterwards).

    threadpoolctl (a dependency of scikit-learn, so always present with it) only limits libraries
    already loaded, so scikit-learn's solver and scipy are imported first.
    """
    import scipy.optimize  # noqa: F401 - the L-BFGS solver's BLAS
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=limited_fit_threads()):
        yield


def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=max_iter, solver="lbfgs", random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model, converged


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float((model.predict(x) == y).mean())


def search_c(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             max_iter: int = 1000, evaluate: Callable[[float], float] | None = None,
             on_fit: Callable[[float, float], None] | None = None) -> tuple[float, dict[float, float]]:
    """Best C by validation accuracy; returns (C, {log10 C: accuracy} for every C tried).

    Ties go to the smaller C (stronger regularisation), so the search is deterministic.
    `evaluate` (log10 C -> accuracy) replaces fitting, for tests of the search itself;
    `on_fit(log10 C, accuracy)` is called after each fit (progress bars).
    """
    def score(log_c: float) -> float:
        if evaluate is not None:
            acc = evaluate(log_c)
        else:
            model, _ = _fit(x_train, y_train, 10.0 ** log_c, max_iter)
            acc = _accuracy(model, x_val, y_val)
        if on_fit is not None:
            on_fit(log_c, acc)
        return acc

    tried: dict[float, float] = {}

    def best() -> float:
        return max(sorted(tried), key=lambda c: (tried[c], -c))

    for log_c in COARSE_LOG10_C:
        tried[log_c] = score(log_c)
    low, high = COARSE_LOG10_C[0], COARSE_LOG10_C[-1]
    # Widen while the best value is an end of the range and strictly better than its inner neighbour.
    while True:
        centre = best()
        if centre == low and low - 2 >= WIDEST_LOG10_C[0] and tried[low] > tried[low + 2]:
            low -= 2
            tried[low] = score(low)
        elif centre == high and high + 2 <= WIDEST_LOG10_C[1] and tried[high] > tried[high - 2]:
            high += 2
            tried[high] = score(high)
        else:
            break
    step = 2.0
    while step > FINEST_STEP:
        step /= 2
        centre = best()
        for log_c in (centre - step, centre + step):
            log_c = round(log_c, 6)
            if low <= log_c <= high and log_c not in tried:
                tried[log_c] = score(log_c)
    return 10.0 ** best(), tried


def c_at_edge(sweep: dict[float, float]) -> bool:
    """True when the chosen log10 C is the widest value tried and beats its neighbour: the
    validation accuracy was still rising there, so the optimum may lie beyond the sweep."""
    if len(sweep) < 2:
        return False
    keys = sorted(sweep)
    chosen = max(keys, key=lambda c: (sweep[c], -c))
    if chosen == keys[0]:
        return sweep[keys[0]] > sweep[keys[1]]
    if chosen == keys[-1]:
        return sweep[keys[-1]] > sweep[keys[-2]]
    return False


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, val): `fraction` of each class with >= 2 samples goes to val."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(fraction * len(idx))) if len(idx) >= 2 else 0
        n_val = min(max(n_val, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(val, dtype=int))


def fewshot_split(y: np.ndarray, k: int, seed: int, val_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k training indices per class (all of a class with fewer), plus min(k, 4) disjoint
    validation indices per class from what is left."""
    if k < 1:
        raise ValueError(f"few-shot k must be >= 1, got {k}")
    per_val = min(k, 4) if val_per_class is None else val_per_class
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        train.extend(idx[:k])
        val.extend(idx[k:k + per_val])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(val, dtype=int))


@dataclass
class ProbeResult:
    c: float
    c_selection: str
    val_accuracy: float | None
    sweep: dict[float, float] = field(default_factory=dict)
    converged: bool = True
    test_scores: np.ndarray | None = None  # [N_test, num_classes] probabilities
    search_s: float = 0.0  # seconds of the C search (its fits and validation scoring)
    fit_s: float = 0.0  # seconds of the final fit and test scoring
    fits: int = 0  # logistic-regression fits in all (search + final)

    def timing(self) -> dict[str, Any]:
        """The seconds this probe took, for the report's ``timing.probe`` (the search dominated runs)."""
        return {"search_s": round(self.search_s, 4), "fit_s": round(self.fit_s, 4), "fits": self.fits}

    @property
    def at_edge(self) -> bool:
        return c_at_edge(self.sweep)

    def summary(self) -> dict[str, Any]:
        out = {"C": self.c, "c_selection": self.c_selection, "val_accuracy": self.val_accuracy,
               "sweep": {f"{k:g}": v for k, v in sorted(self.sweep.items())}, "converged": self.converged,
               "c_at_edge": self.at_edge}
        if self.at_edge:
            out["note"] = (f"C={self.c:.3g} is the widest value the sweep tried and validation accuracy was still "
                           "rising there: the optimum may lie beyond it")
        return out


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, num_classes: int, *,
              val: tuple[np.ndarray, np.ndarray] | None = None, refit_on_val: bool = True,
              max_iter: int = 1000, progress: bool = False, desc: str = "C sweep") -> ProbeResult:
    """Choose C on `val` = (x_val, y_val), refit, and score `x_test` ([N, num_classes] probabilities).

    Classes absent from the training data get probability 0 (sklearn only knows seen classes).
    Every fit runs under `fit_threads` (one BLAS thread unless $CLIPFORGE_PROBE_THREADS says otherwise).
    """
    with fit_threads():
        return _fit_probe(x_train, y_train, x_test, num_classes, val=val, refit_on_val=refit_on_val,
                          max_iter=max_iter, progress=progress, desc=desc)


def _fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, num_classes: int, *,
               val: tuple[np.ndarray, np.ndarray] | None, refit_on_val: bool, max_iter: int, progress: bool,
               desc: str) -> ProbeResult:
    t0 = time.perf_counter()
    if val is not None and len(val[1]):
        from tqdm.auto import tqdm

        # 7 coarse fits + 8 refinements (more when the sweep widens); each fit can take a while
        with tqdm(total=len(COARSE_LOG10_C) + 8, desc=desc, unit="fit", disable=not progress, leave=False) as bar:
            def tick(log_c: float, acc: float) -> None:
                bar.set_postfix_str(f"C=1e{log_c:g} val {100 * acc:.1f}%")
                if bar.n >= bar.total:
                    bar.total = bar.n + 1
                bar.update(1)

            c, sweep = search_c(x_train, y_train, val[0], val[1], max_iter=max_iter, on_fit=tick)
        val_acc, selection = max(sweep.values()), "validation sweep"
        if refit_on_val:
            x_train, y_train = np.concatenate([x_train, val[0]]), np.concatenate([y_train, val[1]])
    else:
        c, sweep, val_acc, selection = 1.0, {}, None, "default C=1 (no validation examples)"
    t1 = time.perf_counter()
    model, converged = _fit(x_train, y_train, c, max_iter)
    scores = np.zeros((len(x_test), num_classes), dtype=np.float64)
    scores[:, model.classes_.astype(int)] = model.predict_proba(x_test)
    return ProbeResult(c, selection, val_acc, sweep, converged, scores, search_s=t1 - t0,
                       fit_s=time.perf_counter() - t1, fits=len(sweep) + 1)


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n": int(len(arr))}
