"""Freed activation memory is reused, not faulted in again (inference/_memory.py).

Each case runs in a fresh process (the setting is process-wide) and counts the minor page faults
of 24 allocations of 100 MB in turn: with glibc's default every such block is a new `mmap`
(~25,600 faults of 4 KB each time); once the fast path ran, a freed block is reused (almost none).

Not from the first round on: `posix_memalign` (PyTorch's CPU allocator) leaves a few bytes after
each block that glibc's per-thread cache holds as in use, so until that cache is full (7 chunks a
size) a freed block cannot merge with the heap's top and the next, equally large request grows
the heap instead. Measured here, the 9th round was the last to grow the heap at worst, the 1st
after a model had run; the tests judge the last 4 rounds, the steady state a server lives in.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from clipforge.inference._memory import RETAIN_ENV

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"),
    reason="the setting is glibc's")


def _huge_pages_always() -> bool:
    """Transparent huge pages on every mapping: a fresh 100 MB block then faults ~50 times, not ~25,600,
    and the counts without the setting prove nothing."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as handle:
            return "[always]" in handle.read()
    except OSError:
        return False


_FAULTS = """
import resource, sys, torch
from clipforge.inference._memory import retain_freed_memory
modes = sys.argv[1].split(",")
if "direct" in modes:
    print("took", retain_freed_memory())
if "model" in modes:
    from clipforge.inference import prepare
    from clipforge.models import create_model_from_config, get_config
    model = prepare(create_model_from_config(get_config("test-vit-tiny")), "fp32")
    with torch.inference_mode():
        model.encode_image(torch.randn(2, 3, 32, 32))

def fill_faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(100 << 20, dtype=torch.uint8).fill_(1)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

print("faults", sum([fill_faults() for _ in range(24)][-4:]))
"""


def _run(mode: str, retain: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != RETAIN_ENV}
    if retain is not None:
        env[RETAIN_ENV] = retain
    done = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


def test_a_large_freed_block_is_faulted_in_again_without_the_setting() -> None:
    # the positive control: what every large activation cost before
    if _huge_pages_always():
        pytest.skip("transparent huge pages are on for every mapping here: few faults either way")
    assert int(_run("none")["faults"]) > 4 * 20_000


def test_the_setting_reuses_a_freed_large_block() -> None:
    out = _run("direct")
    assert out["took"] == "True"
    assert int(out["faults"]) < 1_000


def test_a_models_first_fast_call_applies_it_and_the_environment_can_refuse_it() -> None:
    """Without the environment's refusal a model's first fast call applies the setting; with it, a direct call
    says False and a model's first fast call after it leaves every large block faulted in again: one process
    (one start-up fewer) checks both, the direct call first."""
    assert int(_run("model")["faults"]) < 1_000
    refused = _run("direct,model", retain="0")
    assert refused["took"] == "False"
    if not _huge_pages_always():
        assert int(refused["faults"]) > 4 * 20_000
