"""CLIP's contrastive loss, on one process or spread over many.

The loss is the paper's symmetric cross-entropy over the scaled cosine-similarity matrix:
image i must pick caption i among all captions of the batch and caption i must pick image i.
Its quality grows with the number of negatives, so in distributed training every rank
all-gathers the features of the others and the batch is the *global* batch.

Gradient bookkeeping (why `gather_with_grad` matters). DDP averages parameter gradients over
the W ranks. `gather_with_grad` all-gathers with an autograd function whose backward
all-reduces (sums) the incoming gradient, so rank r's features receive the gradient of *every*
rank's loss term that used them. With `local_loss` each rank computes its own rows L_r (a mean
over its rows) against the global columns; the global loss is L = mean_r L_r, so the sum of
all ranks' gradients is d(sum_r L_r) = W dL and DDP's average is exactly dL: the gradient of
one process on the full batch, no rescaling needed (the 2-process test checks this to 1e-6).
Without `local_loss` each rank computes the whole matrix, the summed gradients are W dL again
and the average is again exact. Without `gather_with_grad` the gathered features are constants:
only the rank's own slice carries gradient, so the cross-rank negatives contribute nothing to
the other ranks' towers; that is open_clip's cheaper approximation and is *not* the full-batch
gradient (the feature gradients come out 1/W too small relative to `logit_scale`'s).
All ranks must use the same local batch size (all_gather needs equal shapes).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums every rank's gradient for our slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' rows concatenated in rank order, differentiable w.r.t. every rank's input."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' rows; only this rank's own slice keeps its autograd history."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[dist.get_rank()] = tensor
    return torch.cat(parts, dim=0)


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
              groups: torch.Tensor | None = None) -> torch.Tensor:
    """Single-process symmetric loss on L2-normalised features (row i of each is a pair).

    `logit_scale` is the model's parameter: the log of the temperature's inverse.

    `groups` (one id per pair) makes every pair sharing an id a positive, with the target
    spread evenly over them (UniCL's label-aware target when the ids are class labels).
    Note: for captions that are *exactly* identical this changes nothing. The plain loss seems
    to ask image i to prefer caption i over an identical copy j, but both copies get the same
    probability, so -log p_i equals the soft-target loss and the gradients coincide; duplicates
    only raise the loss floor (to log of the number of copies). What they do waste is text-
    tower compute, which `unique_caption_loss` saves.
    """
    return ClipLoss()(image_features, text_features, logit_scale, groups)


class ClipLoss(nn.Module):
    """Symmetric contrastive loss; distributed over the default process group when one exists.

    local_loss: each rank scores only its own rows against the global batch (memory and
    compute O(n * N) instead of O(N^2) per rank). gather_with_grad: see the module docstring.
    """

    def __init__(self, local_loss: bool = False, gather_with_grad: bool = True) -> None:
        super().__init__()
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                groups: torch.Tensor | None = None) -> torch.Tensor:
        if image_features.shape != text_features.shape:
            raise ValueError(f"image features {tuple(image_features.shape)} and text features "
                             f"{tuple(text_features.shape)} must have the same shape (one row per pair)")
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        rank = dist.get_rank() if distributed else 0
        n = image_features.shape[0]
        gather = gather_with_grad if self.gather_with_grad else gather_no_grad
        all_image = gather(image_features) if distributed else image_features
        all_text = gather(text_features) if distributed else text_features
        all_groups = groups
        if distributed and groups is not None:
            parts = [torch.empty_like(groups) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, groups.contiguous())
            all_groups = torch.cat(parts)

        scale = logit_scale.exp()
        if self.local_loss:
            rows = slice(rank * n, (rank + 1) * n)
            logits_per_image = scale * image_features @ all_text.t()
            logits_per_text = scale * text_features @ all_image.t()
            row_groups = None if groups is None else groups
        else:
            rows = slice(0, all_image.shape[0])
            logits_per_image = scale * all_image @ all_text.t()
            logits_per_text = logits_per_image.t()
            row_groups = all_groups

        if groups is None:
            labels = torch.arange(rows.start, rows.stop, device=image_features.device)
            return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
        same = (row_groups[:, None] == all_groups[None, :]).to(logits_per_image.dtype)
        targets = same / same.sum(dim=1, keepdim=True)
        return (_soft_cross_entropy(logits_per_image, targets) + _soft_cross_entropy(logits_per_text, targets)) / 2


def unique_caption_loss(image_features: torch.Tensor, caption_features: torch.Tensor,
                        logit_scale: torch.Tensor, caption_index: torch.Tensor,
                        caption_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric loss when the batch's captions were de-duplicated before the text tower.

    image_features [B, D], caption_features [U, D] (the U distinct captions of the batch),
    caption_index [B] (which caption belongs to each image). Image -> text is a plain
    cross-entropy over the distinct captions; text -> image treats every image of the caption
    as a positive (UniCL's target). Its image->text gradient equals the plain loss's on the
    duplicated batch; the text->image term weights each distinct caption once instead of once
    per copy. It runs the text tower U times instead of B times.

    caption_labels [U] (a class per caption) makes the target label-aware in both directions:
    "a photo of a cat." and "a blurry photo of the cat." in one batch are both positives for
    every cat image (the target is spread evenly over them), not negatives of each other.
    """
    scale = logit_scale.exp()
    logits_per_image = scale * image_features @ caption_features.t()
    if caption_labels is None:
        loss_i2t = F.cross_entropy(logits_per_image, caption_index)
        positives = F.one_hot(caption_index, caption_features.shape[0]).t().to(logits_per_image.dtype)  # [U, B]
    else:
        image_labels = caption_labels[caption_index]
        positives = (caption_labels[:, None] == image_labels[None, :]).to(logits_per_image.dtype)  # [U, B]
        per_image = positives.t() / positives.t().sum(dim=1, keepdim=True)
        loss_i2t = _soft_cross_entropy(logits_per_image, per_image)
    present = positives.sum(dim=1) > 0
    targets = positives[present] / positives[present].sum(dim=1, keepdim=True)
    loss_t2i = _soft_cross_entropy(logits_per_image.t()[present], targets)
    return (loss_i2t + loss_t2i) / 2


class SigLipLoss(nn.Module):
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023), distributed as open_clip's `SigLipLoss`.

    Every (image, text) pair of the global batch is its own binary problem: label +1 on the
    diagonal, -1 elsewhere, loss ``-log sigmoid(label * (scale·cos + bias))`` summed and divided
    by the local batch size. open_clip passes text features around the ring of ranks (each rank
    adds its own images against every other rank's texts as negatives, gradients flowing back);
    here each rank gathers every rank's texts with `gather_with_grad` and scores its own images
    against all of them, positives on its own block: the same sum of terms and, through the
    gather's summed backward, the same gradients.

    `groups` (one id per pair, e.g. the class with `label_positives`) makes every (image, text) pair
    that shares an id a positive (+1), all others -1: SigLIP's loss with a multi-positive label
    matrix. Without it, class-name captions that are identical ("a photo of a cat." twice in a
    batch) are each other's negatives, a contradiction the sigmoid loss cannot resolve (each pair
    is scored on its own, unlike the softmax, where identical copies share their probability).

    `logit_params` is what the training forward returns for a model with a bias: the stacked
    ``(logit_scale, logit_bias)`` (log scale; exp taken here) - or a bare ``logit_scale`` with
    `bias` given.
    """

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_params: torch.Tensor,
                groups: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
        logit_scale, bias = _scale_and_bias(logit_params, bias)
        rows = image_features.shape[0]
        if text_features.shape[0] != rows:  # was an IndexError from the label matrix
            raise ValueError(f"the sigmoid loss takes one text per image: {rows} images, {text_features.shape[0]} "
                             "texts (de-duplicated captions go through unique_caption_sigmoid_loss)")
        texts = gather_with_grad(text_features)
        logits = logit_scale.exp() * image_features @ texts.t() + bias
        if groups is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            labels = -torch.ones_like(logits)
            diagonal = torch.arange(rows, device=logits.device)
            labels[diagonal, rank * rows + diagonal] = 1
        else:
            same = groups[:, None] == _gather_ids(groups)[None, :]
            labels = torch.where(same, 1.0, -1.0).to(logits.dtype)
        return -F.logsigmoid(labels * logits).sum() / rows


def unique_caption_sigmoid_loss(image_features: torch.Tensor, caption_features: torch.Tensor,
                                logit_params: torch.Tensor, caption_index: torch.Tensor,
                                caption_labels: torch.Tensor | None = None,
                                bias: torch.Tensor | None = None) -> torch.Tensor:
    """`SigLipLoss` when the batch's captions were de-duplicated before the text tower.

    image_features [B, D], caption_features [U, D] (the U distinct captions), caption_index [B]
    (each image's caption), caption_labels [U] (a class per caption: `label_positives`). A pair is a
    positive when the caption is the image's own (or, with labels, of the image's class); each
    distinct caption's terms count once per copy it stands for, so the value (and gradient) equals
    `SigLipLoss` on the duplicated batch with groups = the caption (or class) of each pair, at the
    text tower's cost of U sequences instead of B. One process's own batch, as `unique_caption_loss`.
    """
    logit_scale, bias = _scale_and_bias(logit_params, bias)
    logits = logit_scale.exp() * image_features @ caption_features.t() + bias  # [B, U]
    captions = torch.arange(caption_features.shape[0], device=logits.device)
    if caption_labels is None:
        same = caption_index[:, None] == captions[None, :]
    else:
        same = caption_labels[caption_index][:, None] == caption_labels[None, :]
    labels = torch.where(same, 1.0, -1.0).to(logits.dtype)
    copies = torch.bincount(caption_index, minlength=caption_features.shape[0]).to(logits.dtype)
    return -(F.logsigmoid(labels * logits) * copies[None, :]).sum() / image_features.shape[0]


def _scale_and_bias(logit_params: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log scale, bias) from the stacked pair the training forward returns, or a bare scale and `bias`."""
    if logit_params.dim() == 1 and logit_params.numel() == 2:
        return logit_params[0], logit_params[1]
    if bias is None:
        raise ValueError("the sigmoid loss needs the model's logit_bias (a SigLIP model)")
    return logit_params, bias


def _gather_ids(ids: torch.Tensor) -> torch.Tensor:
    """Every rank's ids (group labels) in rank order; no gradient (they are integers)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ids
    parts = [torch.empty_like(ids) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, ids.contiguous())
    return torch.cat(parts)


def siglip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """`SigLipLoss` as a function (unit features, log scale, bias, optional groups)."""
    return SigLipLoss()(image_features, text_features, logit_scale, groups, bias=logit_bias)
