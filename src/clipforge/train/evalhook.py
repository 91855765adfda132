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
    def __call__(self, model: nn.Module, device: torch.device, precision: str | None = None) -> dict[str, float]:
        """Top-1 of `model` as `clipforge eval zeroshot --precision P` scores its saved weights.

        `precision` ("fp32" or "bf16"; `eval_precision` of the run's training precision) is applied as that
        command applies it (`clipforge.evaluate.common.resolve_model`): fp32 runs the model itself on the
        inference fast path; bf16 runs a copy whose weights are cast to bf16, class embeddings and image
        features alike. Before, the image features were taken under the training autocast and the class
        embeddings in fp32: a mixed number `eval zeroshot` gives in neither precision (1-2 images of 250 on
        the CUB mini set), written into checkpoint names and best.json. Every module's train/eval mode is
        restored afterwards (not `model.train(was_training)`, which put a locked tower back in train mode).
        """
        from clipforge.data import make_loader
        from clipforge.inference.encoder import fast_model
        from clipforge.zeroshot import ZeroShotClassifier

        modes = {module: module.training for module in model.modules()}
        model.eval()
        try:
            # fp32: the packed eval forward given in place (parameters, requires_grad and the training forward
            # untouched, repacked after each optimizer step); bf16: a cast copy, as the eval command loads one
            net = fast_model(model, "bf16" if precision == "bf16" else "fp32", copy_model=True)
            classifier = ZeroShotClassifier(net, list(self.classnames), list(self.templates), device=device,
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
                # as `clipforge.evaluate.features.extract_image_features` encodes them
                features = net.encode_image(batch.images.to(device, non_blocking=True)).float()
                pred = classifier.logits(features).argmax(dim=-1).cpu()
                correct += int((pred == torch.as_tensor(batch.labels)).sum())
                total += len(pred)
        finally:
            for module, training in modes.items():
                module.training = training
        if total == 0:
            raise RuntimeError(f"evaluation set {self.name!r} yielded no readable images ({skipped} skipped)")
        return {f"{self.name}_top1": correct / total, f"{self.name}_samples": total}


def eval_precision(dtype: torch.dtype | None, device: torch.device | str = "cpu") -> str:
    """The `eval zeroshot --precision` a run's evaluations use: bf16 for a run that computes in bf16 (its
    autocast dtype) where the command takes bf16 (CUDA, or a CPU multiplying it natively), else fp32 (fp32 runs,
    fp16 ones: the command has no fp16; and a CPU emulating bf16, where the command refuses it: the hook raised
    that refusal at the first epoch end, losing the epoch before its checkpoint)."""
    if dtype != torch.bfloat16:
        return "fp32"
    from clipforge.inference.cpu import bf16_supported

    return "bf16" if torch.device(device).type == "cuda" or bf16_supported() else "fp32"
