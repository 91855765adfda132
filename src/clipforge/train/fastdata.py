"""Training batches built by tensor ops from a labelled set held in memory (the CIFAR fast path).

For 32x32 images the model step is a few milliseconds per image, so anything per-image in
Python (JPEG decode, PIL augmentation, tokenising one caption per sample, a DataLoader's
collation) costs as much as the model itself. With `in_memory` the trainer instead:
- decodes the training set once into one uint8 tensor [N, 3, H, W] (`clipforge.data.decode_all`,
  seconds for CIFAR-10's 50,000 JPEGs);
- augments a whole batch as index arithmetic: random crop after `pad_crop` pixels of reflect
  padding and a horizontal flip, then normalises with the weights' mean/std (CLIP's by default) (channels_last if asked);
- tokenises every (template, class) caption once; each batch draws `templates_per_batch`
  templates (0: a template per sample), and with `unique_captions` the text tower runs once per
  *distinct* caption of the batch (at most templates x classes sequences instead of one per
  image). `caption_index` says which distinct caption belongs to each image and
  `caption_labels` the class of each distinct caption, for `unique_caption_loss`.
The augmentation and template draws come from a generator seeded by (seed, epoch, batch,
rank), so a resumed run rebuilds exactly the batches it missed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipforge.data.bad import BadImage


@dataclass
class TensorBatch:
    """What one training step consumes; `labels` holds the caption tokens (as the DataLoader's
    batches do), `caption_index`/`caption_labels` are set when captions were de-duplicated."""

    indices: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    classes: torch.Tensor
    caption_index: torch.Tensor | None = None
    caption_labels: torch.Tensor | None = None


def augment(batch: torch.Tensor, generator: torch.Generator, pad: int, hflip: bool) -> torch.Tensor:
    """Random crop of a reflect-padded uint8 batch [B, 3, H, W] plus optional horizontal flip."""
    n, _, h, w = batch.shape
    if pad <= 0 and not hflip:
        return batch
    padded = F.pad(batch.float(), (pad, pad, pad, pad), mode="reflect").to(torch.uint8) if pad > 0 else batch
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator)
    rows = (torch.arange(h).view(1, h, 1) + dy).expand(n, h, w)
    cols = torch.arange(w).view(1, 1, w) + dx
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        cols = torch.where(flip.view(n, 1, 1), cols.flip(-1), cols)
    cols = cols.expand(n, h, w)
    batch_idx = torch.arange(n).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch_idx, rows, cols].permute(0, 3, 1, 2)


class TensorBatches:
    """A labelled image set as one uint8 tensor, turned into `TensorBatch`es by index lists."""

    def __init__(self, images: torch.Tensor, classes: torch.Tensor, classnames: Sequence[str],
                 templates: Sequence[str], context_length: int, resolution: int, *, pad: int = 0,
                 hflip: bool = False, templates_per_batch: int = 0, unique_captions: bool = False,
                 channels_last: bool = False, seed: int = 0, rank: int = 0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 captions: Sequence[Sequence[str]] | None = None) -> None:
        from clipforge.image import MEAN, STD
        from clipforge.text import tokenize

        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        if not templates and not captions:
            raise ValueError("in_memory training needs at least one caption template")
        if captions is None:  # `captions`: a ready [template][class] table (several languages' sets)
            captions = [[t.format(c) for c in classnames] for t in templates]
        self.images, self.classes = images, classes.long()
        self.num_classes, self.num_templates = len(classnames), len(captions)
        flat = [c for row in captions for c in row]  # caption id = template * C + class
        self.tokens = tokenize(flat, context_length=context_length, truncate=True)
        self.resolution, self.pad, self.hflip = resolution, pad, hflip
        self.templates_per_batch, self.unique_captions = templates_per_batch, unique_captions
        self.channels_last, self.seed, self.rank = channels_last, seed, rank
        self.skipped: list[BadImage] = []  # images left out when decoding (set by the builder)
        self.mean = torch.tensor(tuple(mean or MEAN)).view(1, 3, 1, 1) * 255  # the weights' own (default OpenAI's)
        self.std = torch.tensor(tuple(std or STD)).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        return len(self.images)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> CLIP-normalised float at the model's resolution."""
        x = (pixels.float() - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if x.shape[-1] != self.resolution:  # bilinear: ~5x cheaper than bicubic on channels_last
            x = F.interpolate(x, size=self.resolution, mode="bilinear", align_corners=False)
        return x

    def batch(self, indices: torch.Tensor, epoch: int, number: int) -> TensorBatch:
        generator = torch.Generator().manual_seed(
            ((self.seed * 1_000_003 + epoch) * 1_000_003 + number) * 64 + self.rank)
        classes = self.classes[indices]
        images = self.normalise(augment(self.images[indices], generator, self.pad, self.hflip))
        n = len(indices)
        if self.templates_per_batch > 0:
            chosen = torch.randint(0, self.num_templates, (self.templates_per_batch,), generator=generator)
            template = chosen[torch.randint(0, self.templates_per_batch, (n,), generator=generator)]
        else:
            template = torch.randint(0, self.num_templates, (n,), generator=generator)
        caption_ids = template * self.num_classes + classes
        if not self.unique_captions:
            return TensorBatch(indices, images, self.tokens[caption_ids], classes)
        unique, inverse = torch.unique(caption_ids, return_inverse=True)
        return TensorBatch(indices, images, self.tokens[unique], classes, inverse, unique % self.num_classes)

    def epoch_batches(self, order: Sequence[int], batch_size: int, epoch: int,
                      start: int = 0) -> Iterator[TensorBatch]:
        """Batches `start`, `start + 1`, ... of one epoch whose sample order is `order`."""
        order_t = torch.as_tensor(list(order), dtype=torch.long)
        for number in range(start, len(order_t) // batch_size):
            yield self.batch(order_t[number * batch_size:(number + 1) * batch_size], epoch, number)


def decode_to_tensor(dataset, workers: int = 0,
                     progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[BadImage]]:
    """(uint8 [N, 3, H, W], labels [N], the images that could not be decoded) of a
    `clipforge.data.LabelledDataset`, decoded once. The bad images are returned, not printed: the
    trainer tells them in its one summary line per data set (`clipforge.train.skipped`)."""
    from clipforge.data.inmemory import decode_all

    decoded = decode_all(dataset, workers=workers, progress=progress)
    images = torch.from_numpy(decoded.images).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([label for _, label in decoded.samples])
    return images, labels, list(decoded.skipped)
