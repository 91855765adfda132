"""Tower freezing: lock the image tower, the text tower, or train only the two projections.

Locked-image tuning (LiT, Zhai et al. 2022) shows a frozen pretrained image tower with a
trained text tower keeps most of the image tower's quality while costing a fraction of the
compute; training only the projections is the cheapest adaptation of all. Every frozen part is
kept in eval mode whenever the trainer enters train mode (`train_mode`), so BatchNorm statistics
(ResNet towers) never drift.
"""

from __future__ import annotations

from torch import nn

_IMAGE_PROJECTIONS = ("visual.proj", "visual.attnpool.c_proj.weight", "visual.attnpool.c_proj.bias")
_TEXT_PROJECTIONS = ("text_projection", "text.proj.weight", "text.proj.0.weight", "text.proj.2.weight")  # + HF towers


def _is_image(name: str) -> bool:
    return name.startswith("visual.")


def apply_freezing(model: nn.Module, lock_image: bool = False, lock_text: bool = False,
                   projections_only: bool = False) -> dict[str, int]:
    """Set `requires_grad` per parameter; returns trainable/frozen parameter counts.

    The logit scale stays trainable unless both towers are locked without projections.
    """
    trainable = frozen = 0
    for name, param in model.named_parameters():
        if name == "logit_scale":
            train = not (lock_image and lock_text and not projections_only)
        elif projections_only:
            train = name in _IMAGE_PROJECTIONS + _TEXT_PROJECTIONS
        elif _is_image(name):
            train = not lock_image
        else:
            train = not lock_text
        param.requires_grad_(train)
        if train:
            trainable += param.numel()
        else:
            frozen += param.numel()
    if trainable == 0:
        raise ValueError("every parameter is frozen: nothing to train")
    return {"trainable_params": trainable, "frozen_params": frozen}


def train_mode(model: nn.Module) -> nn.Module:
    """`model.train()`, with every frozen part left in eval mode; the one way the trainer enters train mode
    (the loop's start, after each evaluation, after a resume). Returns `model`.

    A module whose parameters are all frozen (`apply_freezing`: `lock_image`, `lock_text`, the towers under
    `projections_only`) is put in eval mode as a whole, so a locked ResNet tower's BatchNorm layers normalise
    with their running statistics and never update them, as open_clip's `lock_image_tower(freeze_bn_stats=True)`
    does. Before, `set_frozen_eval` ran once before the loop and only for `lock_image`/`lock_text`: the first
    evaluation's `model.train(was_training)` put the locked tower back in train mode (its statistics drifted
    from epoch 2 on: the shipped clipforge-tiny-zh was trained so), and `projections_only` never had it.
    A module that holds a trainable parameter somewhere (a tower whose projection trains) stays in train mode
    and its frozen children are judged one by one: an eval-mode module with a trainable parameter would take
    the inference fast path (`clipforge.inference`), whose packed weights are detached copies.
    """
    model.train()
    _frozen_eval(model)
    return model


def _frozen_eval(module: nn.Module) -> None:
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        module.eval()
        return
    for child in module.children():
        _frozen_eval(child)


def batch_norms_in_training(model: nn.Module) -> list[str]:
    """The names of the BatchNorm layers `train_mode(model)` leaves in train mode (their statistics are
    the batch's and their running stats update): the trainable ones."""
    was = {m: m.training for m in model.modules()}
    train_mode(model)
    names = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m, training in was.items():
        m.training = training
    return names
