"""Names a package re-exports, imported on first use (PEP 562): one implementation for every package.

A package's ``__init__`` that imported its submodules eagerly made ``import clipforge.x.leaf`` pay
for all of them (torch, transformers, the dataset adapters); a decoding process forked before
torch is imported (`clipforge.data.prefetch`) and ``clipforge --help`` need the leaves only.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, sources: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for `package`, whose name ``n`` comes from module ``sources[n]``: a
    submodule name ("files") or a full dotted path ("clipforge.zoo"). Each name is imported once, then
    kept in the package's namespace."""

    def __getattr__(name: str) -> Any:
        module = sources.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module if "." in module else f"{package}.{module}"), name)
        vars(sys.modules[package])[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(sources))

    return __getattr__, __dir__
