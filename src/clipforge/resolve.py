"""Deprecated: the model loader moved to `clipforge.api` (`load_model`, `default_model_spec`).

Kept only while callers switch; remove when nothing imports it.
"""

from __future__ import annotations

from clipforge.api import OFFLINE_DEFAULT, PREFERRED_DEFAULT, LoadedModel, load_model
from clipforge.api import default_model_spec as default_model

__all__ = ["OFFLINE_DEFAULT", "PREFERRED_DEFAULT", "LoadedModel", "default_model", "load_model"]
