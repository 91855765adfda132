"""One optimisation step's forward/backward, with or without gradient accumulation.

`ContrastiveModel` wraps a CLIP so that a single forward returns exactly what the loss needs
(normalised image and text features and the logit scale). Wrapping *that* in DDP means every
parameter the loss touches, `logit_scale` included, gets its gradient inside a DDP backward,
so DDP averages all of them.

Gradient accumulation for a contrastive loss cannot simply sum micro-batch losses: the loss of
a 256-pair batch is not the sum of four 64-pair losses (each pair's negatives are the whole
batch). GradCache (Gao et al. 2021) keeps the big-batch semantics at small-batch memory:
1. encode every micro-batch without autograd and keep the features;
2. compute the loss on the full feature matrix and backpropagate only to the features
   (and the logit scale), which is cheap;
3. re-encode each micro-batch with autograd and backpropagate the cached feature gradients.
The parameter gradients equal those of the full batch (up to float summation order) when a chunk's
features do not depend on the other chunks; the price is one extra forward. RNG state is replayed
for the re-encoding so any stochastic layer would match. A BatchNorm layer in train mode breaks
that (each chunk normalised with its own statistics, running statistics updated by both passes):
the trainer refuses `micro_batch` then (`checks.refuse_inexact_micro_batch`); BatchNorm frozen in
eval mode (a locked ResNet tower) uses its running statistics in both passes and updates nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.train.precision import Precision


class ContrastiveModel(nn.Module):
    """forward(images, texts) -> (unit image features, unit text features, logit_scale)."""

    def __init__(self, clip: nn.Module, with_bias: bool = False) -> None:
        super().__init__()
        self.clip = clip
        self.with_bias = with_bias  # sigmoid loss: the third output is (logit_scale, logit_bias) stacked

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_features = F.normalize(_at_least_fp32(self.clip.encode_image(images)), dim=-1)
        text_features = F.normalize(_at_least_fp32(self.clip.encode_text(texts)), dim=-1)
        if self.with_bias:  # inside the (DDP) forward, so the bias gets its gradient like the scale
            return image_features, text_features, torch.stack([self.clip.logit_scale, self.clip.logit_bias.reshape(())])
        return image_features, text_features, self.clip.logit_scale


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """The loss runs in fp32 (bf16 logits lose the ranking), or fp64 when the model is fp64."""
    return x if x.dtype == torch.float64 else x.float()


LossFn = Callable[..., torch.Tensor]


def _no_sync(module: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    if skip and hasattr(module, "no_sync"):
        return module.no_sync()
    return contextlib.nullcontext()


def plain_step(model: nn.Module, images: torch.Tensor, texts: torch.Tensor, loss_fn: LossFn,
               precision: Precision, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Forward, loss and backward on the whole batch; returns the detached loss."""
    with precision.autocast():
        image_features, text_features, logit_scale = model(images, texts)
    loss = loss_fn(image_features, text_features, logit_scale, groups)
    (precision.scaler.scale(loss) if precision.scaler else loss).backward()
    return loss.detach()


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def gradcache_step(model: nn.Module, images: torch.Tensor, texts: torch.Tensor, loss_fn: LossFn,
                   precision: Precision, micro_batch: int, groups: torch.Tensor | None = None) -> torch.Tensor:
    """GradCache accumulation (see module docstring); returns the detached full-batch loss."""
    if micro_batch <= 0:
        raise ValueError(f"micro_batch must be positive, got {micro_batch}")
    chunks = list(zip(images.split(micro_batch), texts.split(micro_batch), strict=True))
    device = images.device
    states, cached_img, cached_txt = [], [], []
    with torch.no_grad():
        for chunk_images, chunk_texts in chunks:
            states.append(_rng_state(device))
            with precision.autocast():
                image_features, text_features, logit_scale = model(chunk_images, chunk_texts)
            cached_img.append(image_features)
            cached_txt.append(text_features)
    all_img = torch.cat(cached_img).requires_grad_(True)
    all_txt = torch.cat(cached_txt).requires_grad_(True)
    scale_leaf = logit_scale.detach().clone().requires_grad_(True)
    loss = loss_fn(all_img, all_txt, scale_leaf, groups)
    # Scale through the GradScaler itself (it initialises its scale on first use), so the cached
    # feature gradients, hence the parameter gradients, carry the scale that `scaler.step` removes.
    (precision.scaler.scale(loss) if precision.scaler else loss).backward()
    img_grads, txt_grads = all_img.grad.split(micro_batch), all_txt.grad.split(micro_batch)
    after = _rng_state(device)
    for i, (chunk_images, chunk_texts) in enumerate(chunks):
        last = i == len(chunks) - 1
        _set_rng_state(states[i], device)
        with _no_sync(model, skip=not last):
            with precision.autocast():
                image_features, text_features, logit_scale = model(chunk_images, chunk_texts)
            # The logit scale's gradient rides on the last chunk so DDP averages it once.
            scale_grad = scale_leaf.grad if last else torch.zeros_like(scale_leaf.grad)
            # a locked tower's features need no gradient (lock_image: backward on them crashed, "element 0 of
            # tensors does not require grad"); each chunk still backpropagates to what trains
            pairs = [(out, grad) for out, grad in ((image_features, img_grads[i]), (text_features, txt_grads[i]),
                                                   (logit_scale, scale_grad.to(logit_scale.dtype)))
                     if out.requires_grad]
            torch.autograd.backward([out for out, _ in pairs], [grad for _, grad in pairs])
    _set_rng_state(after, device)
    return loss.detach()
