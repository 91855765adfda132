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

from clipforge.train.config import TrainConfig, TrainConfigError


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


_PROBED_SPLITS = ("train", "test", "val", "validation", "all")


def open_split(dataset: str, root: str, split: str, **kwargs: Any) -> Any:
    """`clipforge.data.open_dataset`, but a split with no samples lists the splits that have some."""
    from clipforge.data import DatasetFormatError, open_dataset

    try:
        opened = open_dataset(dataset, root, split, **kwargs)
        if len(opened) > 0:
            return opened
        failure: Exception | None = None
    except (DatasetFormatError, ValueError) as err:
        failure = err
    found = []
    for other in _PROBED_SPLITS:
        if other == split:
            continue
        try:
            count = len(open_dataset(dataset, root, other))
        except (ValueError, OSError):
            continue
        if count:
            found.append(f"{other} ({count} samples)")
    if not found:
        if failure is not None:
            raise failure
        raise TrainConfigError(f"{dataset} at {root} has no samples for split {split!r}")
    raise TrainConfigError(f"{dataset} at {root} has no samples for split {split!r}; splits with samples there: "
                           f"{', '.join(found)} (--split NAME, or --set val_split=NAME for the evaluation)")


def build_train_dataset(config: TrainConfig, image_size: int, context_length: int,
                        rank: int = 0, world_size: int = 1, preprocess: dict[str, Any] | None = None,
                        model_tokenizer: Any = None) -> Any:
    """The image-text dataset the config describes (map-style, or iterable for WebDataset), normalised
    with the weights' own mean/std (`preprocess`: `clipforge.train.build.preprocess_of(model)`);
    captions tokenized with `model_tokenizer` (a model family's own) or CLIP's BPE."""
    from clipforge.data import (
        CaptionCsvImageText,
        FolderCaptionImageText,
        LabelledImageText,
        Tokenizer,
        TrainTransform,
        WebDatasetImageText,
    )
    from clipforge.weights.preprocess_cfg import validate_preprocess
    from clipforge.zeroshot import get_templates

    check_fast_path(config)
    cfg = validate_preprocess(dict(preprocess or {}))
    transform = TrainTransform(image_size, scale=tuple(config.crop_scale), hflip=config.hflip, seed=config.seed,
                               mean=cfg["mean"], std=cfg["std"], interpolation=cfg["interpolation"])
    tokenizer = Tokenizer(context_length, model_tokenizer)
    if config.root is None:
        raise ValueError(f"data={config.data!r} needs a root (--root PATH)")
    if config.data == "labelled":
        if not config.dataset:
            raise TrainConfigError("data=labelled needs dataset=<registry name> (e.g. cub, cars, cifar10)"
                                   + _other_kind_hint(config.root))
        base = strided_subset(open_split(config.dataset, config.root, config.split), config.max_samples)
        from clipforge.zeroshot.captions import caption_table

        captions = caption_table(config.templates, config.dataset, base.classnames)  # ["cifar10", "zh-cifar10"]
        if captions is not None:
            if not config.in_memory:
                raise ValueError("templates given as a list of set names (one per language) need in_memory=true")
            return in_memory_batches(config, base, [], image_size, context_length, rank, cfg,
                                     captions=captions)
        templates = get_templates(config.templates)
        if config.in_memory:
            return in_memory_batches(config, base, templates, image_size, context_length, rank, cfg)
        return LabelledImageText(base, templates, random_template=config.random_template,
                                 transform=transform, tokenizer=tokenizer, seed=config.seed)
    if config.data == "csv":
        return CaptionCsvImageText(config.root, transform=transform, tokenizer=tokenizer, seed=config.seed)
    if config.data == "folder":
        return FolderCaptionImageText(config.root, transform=transform, tokenizer=tokenizer, seed=config.seed)
    if config.data == "webdataset":
        # samples_per_epoch is the job's (all ranks together, as the trainer counts its steps); each rank reads
        # its share: every rank reading the whole number left (N-1)/N of each rank's stream unread an epoch
        share = None if config.samples_per_epoch is None else -(-config.samples_per_epoch // world_size)
        return WebDatasetImageText(config.root, transform=transform, tokenizer=tokenizer,
                                   resampled=config.samples_per_epoch is not None, seed=config.seed,
                                   rank=rank, world_size=world_size, samples_per_epoch=share)
    raise ValueError(f"unknown data kind {config.data!r}; expected labelled, csv, folder or webdataset")


def _other_kind_hint(root: str) -> str:
    """What `--root` looks like when the data kind was left at its default (labelled): a caption CSV
    given as `--root captions.txt` was refused as "data=labelled needs dataset=...", not naming the flag
    that reads it."""
    from pathlib import Path

    path = Path(root)
    if path.is_file():
        return f"; --root {root} is a file: for a caption CSV (image,caption rows) add --set data=csv"
    if path.is_dir():
        return (f"; --root {root} is a folder: "
                f"for caption folders (ROOT/<caption>/*.jpg) add --set data=folder")
    return ""


FAST_PATH_ONLY = ("unique_captions", "templates_per_batch", "pad_crop", "label_positives")


def epoch_line(dataset: Any, root: str | None) -> str | None:
    """The run's start line for a caption CSV: its images and caption rows, and that an epoch is one sample per
    image (a caption drawn among its rows each epoch), where open_clip's CsvDataset takes one sample per row:
    Flickr8k's 5 captions an image make 5x fewer steps an epoch here. None for other data."""
    rows = getattr(dataset, "caption_rows", None)
    if rows is None:
        return None
    images = len(dataset)
    return (f"training data ({root}): {images:,} images, {rows:,} caption rows; an epoch is one sample per image "
            "with a caption drawn among its rows (open_clip's CsvDataset takes one sample per row)")


def check_fast_path(config: TrainConfig) -> None:
    """Options of the in-memory path are refused elsewhere instead of being silently ignored."""
    if config.in_memory and config.data != "labelled":
        raise ValueError(f"in_memory needs data=labelled (a labelled image set), not data={config.data!r}")
    for key in FAST_PATH_ONLY:
        if getattr(config, key) and not config.in_memory:
            raise ValueError(f"{key} is an option of the in-memory path: set in_memory=true (data=labelled)")
    if config.unique_captions and config.micro_batch:  # GradCache's chunks pair images and captions one to one
        raise ValueError("unique_captions (one caption row per distinct caption) and micro_batch (chunks of "
                         "images paired with their captions) do not go together yet: set micro_batch=null, or "
                         "unique_captions=false")


def strided_subset(dataset: Any, max_samples: int | None) -> Any:
    """At most `max_samples` samples, evenly strided over the (class-sorted) list: every class keeps
    its share, for quick runs on a slice of a real dataset."""
    import copy

    if max_samples is None or max_samples >= len(dataset):
        return dataset
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    subset = copy.copy(dataset)
    step = len(dataset) / max_samples
    subset.samples = [dataset.samples[int(i * step)] for i in range(max_samples)]
    return subset


def in_memory_batches(config: TrainConfig, dataset: Any, templates: list[str], image_size: int,
                      context_length: int, rank: int = 0, preprocess: dict[str, Any] | None = None,
                      captions: list[list[str]] | None = None) -> Any:
    """Decode `dataset` once and serve tensor-op batches (see `clipforge.train.fastdata`)."""
    from clipforge.train.fastdata import TensorBatches, decode_to_tensor

    images, classes, skipped = decode_to_tensor(dataset, workers=config.workers, progress=rank == 0)
    cfg = preprocess or {}
    batches = TensorBatches(images, classes, dataset.classnames, templates, context_length, image_size,
                         pad=config.pad_crop, hflip=config.hflip, templates_per_batch=config.templates_per_batch,
                         unique_captions=config.unique_captions, channels_last=config.channels_last,
                         seed=config.seed, rank=rank, mean=cfg.get("mean"), std=cfg.get("std"),
                         captions=captions)
    batches.skipped = skipped  # left out: what failed to decode, and (below) what the disk lacks
    batches.missing = list(getattr(dataset, "missing", None) or ())
    return batches
