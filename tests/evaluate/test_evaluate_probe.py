"""The linear-probe pieces: the C search of the CLIP paper, splits, and the probe fit."""

from __future__ import annotations

import numpy as np
import pytest

from clipforge.evaluate.probe import fewshot_split, fit_probe, mean_std, search_c, stratified_holdout
from clipforge.evaluate.report import check_expectations, parse_expect


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """The suite shares 2 CPUs; multi-threaded BLAS in tiny L-BFGS steps ran ~10x slower."""
    import scipy.optimize  # noqa: F401 - threadpoolctl only limits libraries already loaded
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def test_search_reaches_eighth_decade_resolution_around_the_peak():
    calls = []

    def accuracy(log_c):
        calls.append(log_c)
        return -abs(log_c - 1.375)

    c, tried = search_c(None, None, None, None, evaluate=accuracy)
    assert c == pytest.approx(10 ** 1.375)
    assert set(tried) >= {-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 1.375}
    assert len(calls) == len(set(calls)) and len(calls) < 20  # a binary search, not a 96-point grid


def test_search_ties_prefer_stronger_regularisation():
    c, tried = search_c(None, None, None, None, evaluate=lambda log_c: 0.5)
    assert c == pytest.approx(1e-6)
    c, _ = search_c(None, None, None, None, evaluate=lambda log_c: float(log_c >= 5.9))
    assert c == pytest.approx(1e6)  # the edge of the range is reachable


def test_stratified_holdout_and_fewshot_split():
    y = np.array([0] * 10 + [1] * 5 + [2] * 1)
    tr, va = stratified_holdout(y, 0.2, seed=0)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(16)) and not set(tr) & set(va)
    assert np.bincount(y[va], minlength=3).tolist() == [2, 1, 0]  # the singleton class stays in train
    assert stratified_holdout(y, 0.2, seed=0)[1].tolist() == va.tolist()  # deterministic per seed
    tr, va = fewshot_split(y, k=2, seed=3)
    assert np.bincount(y[tr], minlength=3).tolist() == [2, 2, 1]
    assert np.bincount(y[va], minlength=3).tolist() == [2, 2, 0] and not set(tr) & set(va)
    with pytest.raises(ValueError, match="k must be >= 1"):
        fewshot_split(y, 0, seed=0)


def test_fit_probe_separable_and_unseen_classes():
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 5
    y = np.repeat(np.arange(3), 20)  # class 3 never appears in training
    x = centres[y] + rng.normal(0, 0.5, size=(60, 4))
    x_test = centres[[0, 1, 2, 3]] + 0.1
    res = fit_probe(x[::2], y[::2], x_test, num_classes=4, val=(x[1::2], y[1::2]))
    assert res.c_selection == "validation sweep" and res.val_accuracy == 1.0 and res.converged
    assert res.test_scores.shape == (4, 4) and np.allclose(res.test_scores.sum(axis=1), 1)
    assert res.test_scores[:3].argmax(axis=1).tolist() == [0, 1, 2] and (res.test_scores[:, 3] == 0).all()
    res = fit_probe(x, y, x_test, num_classes=4, val=None)
    assert res.c == 1.0 and res.val_accuracy is None and "no validation" in res.c_selection


def test_mean_std_and_expectations():
    assert mean_std([0.2, 0.4]) == pytest.approx({"mean": 0.3, "std": np.std([0.2, 0.4], ddof=1), "n": 2})
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    assert parse_expect(["top1=63.3", "top5=88.1,mean_per_class_recall=60"]) == {
        "top1": 63.3, "top5": 88.1, "mean_per_class_recall": 60.0}
    with pytest.raises(ValueError, match="METRIC=PERCENT"):
        parse_expect(["top1"])
    with pytest.raises(ValueError, match="METRIC=PERCENT"):
        parse_expect(["top1=high"])
    checks = check_expectations({"top1": 0.6329, "top5": 0.88}, {"top1": 63.3, "top5": 88.5}, 0.3)
    assert [c["ok"] for c in checks] == [True, False] and checks[0]["measured"] == pytest.approx(63.29)
    with pytest.raises(ValueError, match="no such metric"):
        check_expectations({"top1": 0.5}, {"acc": 50}, 0.3)
