"""The models inside the package (no network needed): standard library only."""

from __future__ import annotations

from pathlib import Path

SHIPPED_MODELS_DIR = Path(__file__).resolve().parents[1] / "pretrained"


def shipped_models() -> dict[str, Path]:
    """Models that live inside the package (no network needed), by name."""
    if not SHIPPED_MODELS_DIR.is_dir():
        return {}
    return {p.name: p / "model.safetensors" for p in sorted(SHIPPED_MODELS_DIR.iterdir())
            if (p / "model.safetensors").is_file()}
