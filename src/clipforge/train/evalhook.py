"""Per-epoch zero-shot evaluation: is the model still (or now) good at the task?

The primary set measures what fine-tuning aims at; an optional second set watches for
forgetting (robust fine-tuning work, e.g. WiSE-FT, shows fine-tuning on one distribution
can cost zero-shot accuracy elsewhere). Uses `clipforge.zeroshot.ZeroShotClassifier` with the
cache off: the weights change every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from clipforge.data.bad import BadImage
from clipforge.train.skipped import SkippedImages, known_bad


@dataclass
class ZeroShotEval:
    """Top-1 over `dataset` (a `clipforge.data.LabelledDataset`, images preprocessed for the model)."""

    name: str
    dataset: torch.utils.data.Dataset
    classnames: Sequence[str]
    templates: Sequence[str]
    batch_size: int = 64
    workers: int = 0
    max_samples: int | None = None
    known_bad: list[BadImage] = field(default_factory=list)  # missing / undecodable before evaluating

    def __post_init__(self) -> None:
        # the set's images it could not score (each file once over the run), for the trainer's summary
        self.skipped = SkippedImages(f"{self.name} data")
        self.skipped.add(self.known_bad or known_bad(self.dataset))

    @torch.no_grad()
    def __call__(self, model: nn.Module, device: torch.device, autocast=None) -> dict[str, float]:
        from clipforge.data import make_loader
        from clipforge.inference.encoder import BatchEncoder
        from clipforge.zeroshot import ZeroShotClassifier

        was_training = model.training
        model.eval()
        # the one encoder; fp32 gives the model its packed eval forward in place (parameters,
        # requires_grad and the training forward untouched), repacked after each optimizer step
        encoder = BatchEncoder(model, "fp32")
        classifier = ZeroShotClassifier(model, list(self.classnames), list(self.templates), device=device,
                                        use_cache=False, progress=False)
        dataset = self.dataset
        if self.max_samples is not None and self.max_samples < len(dataset):
            dataset = torch.utils.data.Subset(dataset, range(self.max_samples))
        correct = total = skipped = 0
        for batch in make_loader(dataset, self.batch_size, workers=self.workers):
            skipped += len(batch.errors)
            self.skipped.add(batch.errors)
            if len(batch.indices) == 0:
                continue
            if autocast is not None:
                with autocast():
                    features = encoder.image_features(batch.images)
            else:
                features = encoder.image_features(batch.images)
            pred = classifier.logits(features).argmax(dim=-1).cpu()
            correct += int((pred == batch.labels).sum())
            total += len(pred)
        model.train(was_training)
        if total == 0:
            raise RuntimeError(f"evaluation set {self.name!r} yielded no readable images ({skipped} skipped)")
        return {f"{self.name}_top1": correct / total, f"{self.name}_samples": total}
