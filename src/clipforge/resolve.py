"""Deprecated: the model loader moved to `clipforge.api` (`load_model`, `default_model_spec`).

Kept only while callers switch; names are looked up in `clipforge.api` on each access, so this
module can never become a second loader. Remove it when nothing imports it.
"""

from __future__ import annotations

from typing import Any

_RENAMED = {"default_model": "default_model_spec"}
_FORWARDED = ("OFFLINE_DEFAULT", "PREFERRED_DEFAULT", "LoadedModel", "default_model", "load_model")


def __getattr__(name: str) -> Any:
    if name not in _FORWARDED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import clipforge.api

    return getattr(clipforge.api, _RENAMED.get(name, name))
