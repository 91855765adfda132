"""Defaults sized by cores count the cores this process may run on, not the host's.

A 2-core container on a 64-core host (``--cpuset-cpus``, ``taskset``) reports 64 from ``os.cpu_count()``;
every default below must follow the affinity mask instead (`clipforge.cores.usable_cores`).
"""

from __future__ import annotations

import os

import pytest

from clipforge.cores import usable_cores


@pytest.fixture
def two_of_64(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5}, raising=False)


def test_usable_cores_follow_the_affinity_mask(two_of_64: None) -> None:
    assert usable_cores() == 2


def test_usable_cores_without_an_affinity_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cores() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cores() == 6


def test_decoding_workers_and_the_library_share_one_default(two_of_64: None) -> None:
    from clipforge.data.files import default_workers
    from clipforge.library import library_writes

    assert default_workers() == 1
    assert library_writes.default_workers is default_workers  # what `Library.add` calls


def test_eval_workers_default_to_usable_cores(two_of_64: None) -> None:
    from clipforge.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["eval", "zeroshot", "--dataset", "cifar10", "--root", "x"])
    assert args.workers == 2
    args = parser.parse_args(["eval", "suite", "--models", "m", "--datasets", "cifar10"])
    assert args.workers == 2


def test_training_threads_are_bounded_by_usable_cores(two_of_64: None) -> None:
    from clipforge.train.checks import MAX_THREADS_PER_CORE, check_config
    from clipforge.train.config import TrainConfigError, build_config

    check_config(build_config(threads=2 * MAX_THREADS_PER_CORE))
    with pytest.raises(TrainConfigError, match="threads"):
        check_config(build_config(threads=2 * MAX_THREADS_PER_CORE + 1))


def test_cpu_summary_reports_usable_and_logical_cores(two_of_64: None) -> None:
    from clipforge.inference.cpu import cpu_summary

    summary = cpu_summary()
    assert (summary["logical_cpus"], summary["usable_cpus"]) == (64, 2)
