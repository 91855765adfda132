"""How a model turns image-text similarities into scores: softmax (CLIP) or sigmoid (SigLIP).

CLIP was trained with a softmax over the batch, so its probabilities are a distribution over
the labels offered (they sum to 1). SigLIP was trained with a per-pair sigmoid loss: each
(image, label) pair gets its own probability ``sigmoid(scale·cos + bias)``, independent of the
other labels, and they do not sum to 1. Tasks ask the model's `Scoring` instead of assuming.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SIGMOID_NOTE", "Scoring", "scoring_of"]

SIGMOID_NOTE = ("sigmoid scores (SigLIP): each label's probability is independent of the others; "
                "probabilities do not sum to 1")


@dataclass(frozen=True)
class Scoring:
    """`kind` is ``"softmax"`` or ``"sigmoid"``; `scale` = exp(logit_scale), `bias` the logit bias (sigmoid)."""

    kind: str
    scale: float
    bias: float = 0.0

    @property
    def sums_to_one(self) -> bool:
        return self.kind == "softmax"

    @property
    def note(self) -> str | None:
        """What to tell users beside the numbers (None for softmax)."""
        return None if self.sums_to_one else SIGMOID_NOTE

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Logits of unit features, image rows by text columns."""
        return self.scale * image_features @ text_features.t() + self.bias

    def probabilities(self, logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Softmax over `dim` (CLIP) or an element-wise sigmoid (SigLIP)."""
        return logits.softmax(dim=dim) if self.sums_to_one else torch.sigmoid(logits)


def scoring_of(model: torch.nn.Module) -> Scoring:
    """The model's scoring, read from its parameters now (fine-tuning changes scale and bias)."""
    kind = str(getattr(model, "scoring", "softmax"))
    scale_param = getattr(model, "logit_scale", None)
    scale = float(scale_param.detach().float().exp()) if scale_param is not None else 100.0
    bias_param = getattr(model, "logit_bias", None)
    bias = float(bias_param.detach().float().reshape(-1)[0]) if bias_param is not None else 0.0
    return Scoring(kind, scale, bias if kind == "sigmoid" else 0.0)
