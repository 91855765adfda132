"""Fixtures for the model-family tests (helpers in `family_fixtures`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: the helpers' folder
from family_fixtures import FAMILY_TINY, save_family_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """{family: path of a small checkpoint with its tokenizer beside it}."""
    root = tmp_path_factory.mktemp("families")
    return {family: save_family_checkpoint(root / family, arch) for family, arch in FAMILY_TINY.items()}
