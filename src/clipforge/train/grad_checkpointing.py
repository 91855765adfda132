"""Gradient checkpointing for every family the one loader builds: each tower recomputes its blocks its own way.

`prepare_for_training` asked only for ``model.text`` (open_clip's transformers text towers) or
``model.transformer`` (OpenAI's shape), so a Chinese-CLIP, whose text tower is transformers' ``BertModel`` at
``model.bert``, ended `train --recipe pretrain` (``grad_checkpointing: true``) in an ``AttributeError``
traceback. Here each tower is found by where the families keep it and switched on by the kind of module it is:

- clipforge's own `Transformer` (OpenAI's and MetaCLIP 2's text towers; every ViT image tower: OpenAI's,
  SigLIP's attention-pool, CLIPA's mean-pool, Chinese-CLIP's) has a ``grad_checkpointing`` flag;
- a transformers encoder (Chinese-CLIP's BERT at ``model.bert``; XLM-R, RoBERTa, NLLB, mT5 at
  ``model.text.transformer``) is switched by its own ``activation_checkpointing_enable`` (transformers 5;
  ``gradient_checkpointing_enable`` in 4.x), which recomputes each layer with ``use_reentrant=False``;
- a ResNet image tower (OpenAI's RN models, ``cn-RN50``, clipforge-tiny) is not checkpointed: its
  BatchNorm layers update their running statistics in every forward pass, so recomputing a block in the
  backward pass would count each batch twice. A trainable one is said in one notice (open_clip skips it in
  silence); a locked one keeps no activations for a backward pass, so there is nothing to say.

Recomputation gives the same gradients as keeping the activations (dropout included: torch's checkpoint
restores the RNG state), so turning it on changes memory and time only. A model with no tower that can be
checkpointed is refused in one line naming the setting that turns it off.
"""

from __future__ import annotations

from torch import nn

from clipforge.train.config import TrainConfigError

__all__ = ["enable_grad_checkpointing", "image_tower", "text_tower", "tower_checkpointed"]


def text_tower(model: nn.Module) -> nn.Module | None:
    """The module that runs a model's text blocks: a transformers encoder or clipforge's `Transformer`."""
    hf_text = getattr(model, "text", None)
    if isinstance(hf_text, nn.Module):  # FamilyCLIP with a transformers tower (`family_hf.HFTextTower`)
        return getattr(hf_text, "transformer", None)
    bert = getattr(model, "bert", None)  # Chinese-CLIP
    if isinstance(bert, nn.Module):
        return bert
    own = getattr(model, "transformer", None)  # OpenAI's shape and FamilyCLIP's own text tower
    return own if isinstance(own, nn.Module) else None


def image_tower(model: nn.Module) -> nn.Module | None:
    """The blocks of a ViT image tower (any pooling), or None for a ResNet (or a model without `visual`)."""
    visual = getattr(model, "visual", None)
    blocks = getattr(visual, "transformer", None)
    return blocks if isinstance(blocks, nn.Module) else None


def _switch(tower: nn.Module | None) -> bool:
    """Turn recomputation on in `tower`; False when it has no way to."""
    if tower is None:
        return False
    if hasattr(tower, "grad_checkpointing"):  # clipforge's Transformer
        tower.grad_checkpointing = True
        return True
    if not getattr(tower, "supports_gradient_checkpointing", False):
        return False
    # transformers 5 renamed the call (the old name warns of its removal in v6); 4.x has only the old name
    call = getattr(tower, "activation_checkpointing_enable", None) or getattr(
        tower, "gradient_checkpointing_enable", None)
    if call is None:
        return False
    if getattr(getattr(tower, "config", None), "use_cache", False):  # an encoder caches nothing; said otherwise,
        tower.config.use_cache = False  # transformers printed "use_cache=True is incompatible" at the first step
    call()
    return True


def tower_checkpointed(tower: nn.Module | None) -> bool:
    """Whether `tower` recomputes its blocks in the backward pass (either kind of tower)."""
    if tower is None:
        return False
    if hasattr(tower, "grad_checkpointing"):
        return bool(tower.grad_checkpointing)
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # transformers 5, 4.x
        if hasattr(type(tower), name):
            return bool(getattr(tower, name))
    return False


def _trainable(module: nn.Module | None) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())


def enable_grad_checkpointing(model: nn.Module, name: str = "the model") -> list[str]:
    """Switch on gradient checkpointing in every tower of `model` that can recompute its blocks; returns the
    notices for trainable towers that cannot (a ResNet image tower), one line each. TrainConfigError when no
    tower can (`name`: the model as the user gave it)."""
    text, image = text_tower(model), image_tower(model)
    switched = [_switch(text), _switch(image)]
    if not any(switched):
        kinds = ", ".join(type(m).__name__ for m in (text, getattr(model, "visual", None)) if m is not None)
        raise TrainConfigError(f"grad_checkpointing: {name} ({type(model).__name__}) has no tower whose blocks can "
                               f"be recomputed ({kinds or 'no text or image tower found'}); "
                               "--set grad_checkpointing=false")
    notices: list[str] = []
    visual = getattr(model, "visual", None)
    if not switched[1] and _trainable(visual):
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in visual.modules()):
            notices.append(f"grad_checkpointing: the ResNet image tower of {name} keeps its activations (its "
                           "BatchNorm statistics would count each batch twice if its blocks were recomputed); only "
                           "the text tower is checkpointed")
        else:
            notices.append(f"grad_checkpointing: the {type(visual).__name__} image tower of {name} cannot "
                           "recompute its blocks and keeps its activations; only the text tower is checkpointed")
    if not switched[0] and _trainable(text):
        notices.append(f"grad_checkpointing: the {type(text).__name__} text tower of {name} cannot recompute its "
                       "blocks and keeps its activations; only the image tower is checkpointed")
    return notices
