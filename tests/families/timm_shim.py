"""Import timm and open_clip for parity tests on a machine without a working torchvision (test-only).

PyPI's torchvision does not import beside the CPU torch pinned here, and timm (installed ``--no-deps``)
imports a few torchvision names while its modules load: ``torchvision.ops.misc.FrozenBatchNorm2d``
(norm layers), ``torchvision.transforms`` (its data pipeline, which `timm.models` pulls in for
constants), ``torchvision.datasets`` ... open_clip's ``transform.py`` does the same. A ViT forward
touches none of them. So, only while `imported()` imports the two packages, every torchvision module
they name is a stub whose attributes are inert placeholder classes; the stubs, timm and open_clip are
removed from ``sys.modules`` again afterwards, so no later import sees a stub. clipforge itself never
imports timm, open_clip or torchvision.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

_STUBBED = ("torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.transforms",
            "torchvision.transforms.functional", "torchvision.transforms.v2", "torchvision.datasets",
            "torchvision.utils", "torchvision.io", "torchvision.models", "torchvision.models.feature_extraction")
_OWNED = ("torchvision", "timm", "open_clip")
_ROOT = Path(__file__).resolve().parents[2]  # the rootdir: pytest names nodes relative to it


class _Inert(type):
    """A placeholder class: any attribute of it is another placeholder (``InterpolationMode.BICUBIC``)."""

    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(name)


def _placeholder(name: str) -> type:
    return _Inert(name, (), {"__init__": lambda self, *a, **k: None})


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _placeholder(name)
        setattr(self, name, value)
        return value


def _stubs() -> dict[str, types.ModuleType]:
    modules = {}
    for name in _STUBBED:
        module = _StubModule(name)
        module.__path__ = []
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        modules[name] = module
    for name, module in modules.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    return modules


@contextlib.contextmanager
def imported() -> Iterator[types.ModuleType]:
    """open_clip (with timm importable), for the duration of the block; skips when either is not installed."""
    for package in ("timm", "open_clip"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (pip install -c constraints.txt --no-deps timm open-clip-torch)")
    before = {k for k in sys.modules if k.split(".")[0] in _OWNED}
    if before:
        pytest.skip("timm/open_clip/torchvision already imported in this process; the shim would mix with them")
    real_torchvision = False
    try:
        importlib.import_module("torchvision")
        real_torchvision = True
    except Exception:  # noqa: BLE001 - PyPI's torchvision fails against this torch in several ways
        for key in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
            del sys.modules[key]
    if not real_torchvision:
        sys.modules.update(_stubs())
    try:
        importlib.import_module("timm.models.vision_transformer")
        yield importlib.import_module("open_clip")
    finally:
        for key in [k for k in sys.modules if k.split(".")[0] in _OWNED]:
            del sys.modules[key]


def imported_elsewhere() -> bool:
    """Whether timm, open_clip or torchvision is already imported without the shim (an earlier test in the
    whole suite): the stubs cannot mix with them, so the parity check must run in a process of its own."""
    return any(key.split(".")[0] in _OWNED for key in sys.modules)


FRESH_ENV = "CLIPFORGE_TEST_TIMM_FRESH_PROCESS"  # set in the one fresh interpreter that runs the parity cases
FRESH_TEST = "test_timm_parities_in_a_fresh_process"  # the test that starts it (test_family_timm_parity)
_FRESH_NODES: list[str] = []  # every file's in-process cases, registered when the file is imported
_FRESH_RUNS: dict[tuple[str, ...], subprocess.CompletedProcess] = {}


def run_in_a_fresh_process(test_file: str, test_name: str, params: list[str]) -> list[str]:
    """Register `test_name[param]` of `test_file` for the one shared fresh interpreter, and return their node
    ids (relative to the rootdir, as pytest's ``-rA`` summary names them). Called at a test file's import."""
    rel = Path(test_file).resolve().relative_to(_ROOT).as_posix()
    nodes = [f"{rel}::{test_name}[{param}]" for param in params]
    _FRESH_NODES.extend(node for node in nodes if node not in _FRESH_NODES)
    return nodes


def skip_unless_checked_here(request: pytest.FixtureRequest) -> None:
    """Where an in-process parity case runs: always in the fresh interpreter; elsewhere only when no
    `FRESH_TEST` was collected (one case or one file run by hand) and nothing imported timm or open_clip yet.

    In the whole suite the cases run in the fresh interpreter only: whether a process has imported open_clip
    depends on which tests ran before in it, and under pytest-xdist the cases and the test that checks them
    can land on different workers, where a rule of "run here unless imported" could skip on both sides."""
    if os.environ.get(FRESH_ENV) == "1":
        return
    if any(item.name == FRESH_TEST for item in request.session.items):
        pytest.skip(f"checked in one fresh interpreter by {FRESH_TEST}")
    if imported_elsewhere():
        pytest.skip("timm/open_clip/torchvision already imported in this process; the shim would mix with them")


def assert_passes_in_a_fresh_process(request: pytest.FixtureRequest) -> None:
    """Assert that every registered case PASSED in one new interpreter (`FRESH_ENV` set, pytest-xdist off):
    one start of torch, open_clip, timm and transformers for every timm parity file, read back from its
    ``-rA`` summary so that none of them is silently skipped in CI."""
    todo = tuple(_FRESH_NODES)
    assert todo, "no timm parity case was registered"
    if todo not in _FRESH_RUNS:
        _FRESH_RUNS[todo] = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-rA", *todo],
            capture_output=True, text=True, timeout=600, cwd=request.config.rootpath,
            env={**os.environ, FRESH_ENV: "1"})
    done = _FRESH_RUNS[todo]
    passed = {line.split(" ", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("PASSED ")}
    missing = [node for node in todo if node not in passed]
    assert not missing, f"not PASSED: {missing}\n" + done.stdout[-3000:] + done.stderr[-2000:]
