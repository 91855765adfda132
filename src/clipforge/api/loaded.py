"""What `clipforge.api.load_model` returns: a model with its preprocessing, tokenizer, scoring and identity.

Split from the loader so the result type reads on its own; `clipforge.api` imports both names back, and
that is where callers take them from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from clipforge.image import Preprocess
from clipforge.models import CLIP

if TYPE_CHECKING:
    from clipforge.models.scoring import Scoring
    from clipforge.text.families import ModelTokenizer

__all__ = ["LoadedModel", "tokenizer_for", "unwrap_model"]


@dataclass
class LoadedModel:
    """A model with its preprocessing, tokenizer, scoring and identity, as every command and task
    receives it: tasks take these as they are and never re-derive them.

    `weights` says where the numbers came from ("random (seed 0)", a resolved checkpoint path, or
    the registry name), so reports never pass random weights off as real ones. `tokenizer`
    (`clipforge.text.families.ModelTokenizer`) turns texts into the ids this model's text tower
    takes (OpenAI's BPE, SigLIP's SentencePiece, a tokenizers JSON); `scoring` says whether
    probabilities are a softmax over the labels or independent sigmoids (SigLIP).
    """

    model: CLIP
    preprocess: Preprocess
    name: str
    weights: str
    known_fingerprint: str | None = field(default=None, repr=False)
    tokenizer: ModelTokenizer | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.tokenizer is None:
            self.tokenizer = tokenizer_for(self.model)

    @property
    def scoring(self) -> Scoring:
        """Softmax or sigmoid (with bias), read from the model's current parameters."""
        from clipforge.models.scoring import scoring_of

        return scoring_of(self.model)

    def tokenize(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """Texts -> the id tensor this model's text tower takes (long texts truncated)."""
        assert self.tokenizer is not None
        return self.tokenizer(texts, context_length)

    @property
    def fingerprint(self) -> str:
        """`clipforge.weights.model_fingerprint` of the weights now: remembered per weights file, so only a
        file's first load pays the pass over every tensor (`clipforge.weights.fingerprint`), and asked again each
        time, so an edit of the weights after loading is seen (its memo is checked against the tensors' stamp;
        this property kept its first answer for good: review 65). A `known_fingerprint` given is taken as is."""
        if self.known_fingerprint is not None:
            return self.known_fingerprint
        from clipforge.weights import model_fingerprint

        return str(model_fingerprint(self.model))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def tokenizer_for(model: torch.nn.Module, search: Sequence[str | os.PathLike[str]] = ()) -> ModelTokenizer:
    """The tokenizer a model's config names (`clipforge.text.families.tokenizer_of`)."""
    from clipforge.text.families import tokenizer_of

    return tokenizer_of(model, search)


def unwrap_model(model: Any, preprocess: Any = None) -> tuple[Any, Any]:
    """(model, preprocess) of what a task was given as its model: a `LoadedModel` (what `load_model` returns) or a
    (model, preprocess) pair gives both (a `preprocess` passed beside it wins); anything else passes as it is, for
    the task's own forms (a name, a path, a module, an Encoder). The one reading of those two forms for
    `ZeroShotClassifier` and `Library` (review 65: each had its own, neither took a `LoadedModel`)."""
    if isinstance(model, LoadedModel):
        return model.model, preprocess if preprocess is not None else model.preprocess
    if isinstance(model, tuple) and len(model) == 2:
        return model[0], preprocess if preprocess is not None else model[1]
    return model, preprocess
