"""A model built without one of its towers: what `clipforge.api.load_model(..., towers=...)` makes.

A text search never runs the image tower and `clipforge embed` never runs the text tower; when the
file allows reading tensors by name (`clipforge.weights.loading.load_checkpoint(skip=...)`) the
unused tower's bytes stay on disk. Its modules still exist (built by `skeleton`: memory allocated,
never touched) so shapes, config and key order are the model's; its forward refuses to run, and
the model is marked partial (`clipforge.weights.fingerprint.PARTIAL`): its fingerprint can only
be the file's known one, and `clipforge.inference.prepare` leaves the unread tensors alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["TOWER_TENSORS", "build_without", "is_image_tensor", "is_text_tensor", "missing_towers"]


def is_image_tensor(name: str) -> bool:
    return name.startswith("visual.")


def is_text_tensor(name: str) -> bool:
    return not name.startswith("visual.") and name not in ("logit_scale", "logit_bias")


TOWER_TENSORS: dict[str, Callable[[str], bool]] = {"image": is_image_tensor, "text": is_text_tensor}


def missing_towers(model: torch.nn.Module) -> tuple[str, ...]:
    """The towers ("image", "text") `model` was loaded without; () for a whole model."""
    from clipforge.weights.fingerprint import PARTIAL

    return tuple(getattr(model, "__dict__", {}).get(PARTIAL) or ())


def _image_tower_not_loaded(*args: object, **kwargs: object) -> torch.Tensor:
    raise RuntimeError("this model was loaded for text only (load_model(..., towers=('text',))), so its image "
                       "tower holds no weights; load it again without `towers` to encode images")


def _text_tower_not_loaded(*args: object, **kwargs: object) -> torch.Tensor:
    raise RuntimeError("this model was loaded for images only (load_model(..., towers=('image',))), so its text "
                       "tower holds no weights; load it again without `towers` to encode texts")


def build_without(tower: str, state_dict: dict[str, torch.Tensor], config: dict | None,
                   skipped: frozenset[str]) -> torch.nn.Module:
    """`build_model` for a checkpoint whose `tower` ("image" or "text") was not read (`load_checkpoint(skip=...)`).

    The module tree is built whole (`skeleton`: the unread tower's memory is allocated, never
    touched), the other tensors are assigned as `build_model` does, and the unread tower's
    forward (``visual`` / the text ``transformer``) is replaced by one that refuses. The model is
    marked partial: its fingerprint can only come from the file's cached one (`seed_from_file`),
    and `clipforge.inference.prepare` leaves the unread tensors alone.
    """
    from clipforge.models import config_from_state_dict, create_model_from_config
    from clipforge.models.clip import _NON_PARAMETER_KEYS
    from clipforge.models.skeleton import skeleton
    from clipforge.weights.fingerprint import PARTIAL

    unread = TOWER_TENSORS[tower]
    model = skeleton(lambda **c: create_model_from_config(c), **(config or config_from_state_dict(state_dict)))
    wanted = {k: v if v.dtype == torch.float32 or not v.is_floating_point() else v.float()
              for k, v in state_dict.items() if k not in skipped and k not in _NON_PARAMETER_KEYS}
    result = model.load_state_dict(wanted, strict=False, assign=True)
    wrong = [k for k in result.missing_keys if not unread(k)] + list(result.unexpected_keys)
    if wrong or any(not unread(k) for k in skipped):
        raise RuntimeError(f"Error(s) in loading state_dict:\n\tthe {'text' if tower == 'image' else 'image'} tower "
                           f"does not fit the architecture: {', '.join(wrong[:5]) or ', '.join(sorted(skipped)[:5])}")
    # instance attributes: Module.__call__ finds them before the class's forward
    if tower == "image":
        model.visual.forward = _image_tower_not_loaded
    else:
        model.transformer.forward = _text_tower_not_loaded
    model.__dict__[PARTIAL] = (tower,)
    return model.eval()
