"""Glue from a `TrainConfig` to `clipforge.data` datasets, plus a sampler that resumes mid-epoch.

The datasets themselves (caption CSV, caption folders, templated labelled sets, WebDataset
shards, the augmentation) live in `clipforge.data`; this module only picks one and orders it.
`ResumableSampler` is what makes `--resume` exact: each epoch's order is a pure function of
(seed, epoch), every rank takes its interleaved share (as `DistributedSampler` does), and a
resumed run starts at the first batch the interrupted one had not consumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler

from clipforge.train.config import TrainConfig


class ResumableSampler(Sampler[int]):
    def __init__(self, length: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True) -> None:
        if length <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    @property
    def per_rank(self) -> int:
        return self.length // self.world_size  # drop the ragged tail so ranks stay in step

    @property
    def batches_per_epoch(self) -> int:
        return self.per_rank // self.batch_size

    def _order(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        return order[: self.per_rank * self.world_size][self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        order = self._order()[: self.batches_per_epoch * self.batch_size]
        return iter(order[self.start_batch * self.batch_size:])

    def __len__(self) -> int:
        return max(self.batches_per_epoch - self.start_batch, 0) * self.batch_size


def build_train_dataset(config: TrainConfig, image_size: int, context_length: int,
                        rank: int = 0, world_size: int = 1) -> Any:
    """The image-text dataset the config describes (map-style, or iterable for WebDataset)."""
    from clipforge.data import (
        CaptionCsvImageText,
        FolderCaptionImageText,
        LabelledImageText,
        Tokenizer,
        TrainTransform,
        WebDatasetImageText,
        open_dataset,
    )

    transform = TrainTransform(image_size, scale=tuple(config.crop_scale), hflip=config.hflip, seed=config.seed)
    tokenizer = Tokenizer(context_length)
    if config.root is None:
        raise ValueError(f"data={config.data!r} needs a root (--root PATH)")
    if config.data == "labelled":
        if not config.dataset:
            raise ValueError("data=labelled needs dataset=<registry name> (e.g. cub, cars, cifar10)")
        base = open_dataset(config.dataset, config.root, config.split)
        return LabelledImageText(base, config.templates, random_template=config.random_template,
                                 transform=transform, tokenizer=tokenizer, seed=config.seed)
    if config.data == "csv":
        return CaptionCsvImageText(config.root, transform=transform, tokenizer=tokenizer, seed=config.seed)
    if config.data == "folder":
        return FolderCaptionImageText(config.root, transform=transform, tokenizer=tokenizer, seed=config.seed)
    if config.data == "webdataset":
        return WebDatasetImageText(config.root, transform=transform, tokenizer=tokenizer,
                                   resampled=config.samples_per_epoch is not None, seed=config.seed,
                                   rank=rank, world_size=world_size,
                                   samples_per_epoch=config.samples_per_epoch)
    raise ValueError(f"unknown data kind {config.data!r}; expected labelled, csv, folder or webdataset")
