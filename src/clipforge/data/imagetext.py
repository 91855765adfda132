"""Image-text training data: `(image_tensor, token_ids)` pairs from captions, caption folders, or
labelled datasets phrased through templates.

Every random choice (which caption, which template, which crop) is drawn from a
`random.Random` seeded by (seed, epoch, sample index): the same sample gets the same caption and
crop whatever worker loads it, so runs are reproducible and resume exactly. Call
`set_epoch(e)` before each epoch (with persistent workers off, as `make_loader` sets, the new
epoch reaches the workers).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .base import (
    DECODE_ERRORS,
    IMAGE_EXTENSIONS,
    BadImage,
    DatasetLayoutError,
    LabelledDataset,
    error_reason,
)
from .captions import CAPTION_LAYOUT, default_images_dir, read_caption_csv

__all__ = [
    "CaptionCsvImageText", "FolderCaptionImageText", "ImageTextDataset", "LabelledImageText", "Tokenizer",
    "DEFAULT_TEMPLATE",
]

DEFAULT_TEMPLATE = "A photo of a {}."


class Tokenizer:
    """Picklable `str -> LongTensor[context_length]` (CLIP BPE, truncating over-long captions)."""

    def __init__(self, context_length: int = 77, model_tokenizer: Any = None) -> None:
        self.context_length = int(context_length)
        self.model_tokenizer = model_tokenizer  # a model family's own (`clipforge.text.ModelTokenizer`)

    def __call__(self, text: str) -> torch.Tensor:
        if self.model_tokenizer is not None:
            return self.model_tokenizer([text], self.context_length)[0]
        from clipforge.text import tokenize

        return tokenize(text, context_length=self.context_length, truncate=True)[0]

    def __repr__(self) -> str:
        return f"Tokenizer(context_length={self.context_length})"


def sample_rng(seed: int, epoch: int, key: Any) -> random.Random:
    """The random stream of one sample in one epoch (string seeds hash deterministically)."""
    return random.Random(f"{seed}:{epoch}:{key}")


def apply_transform(transform: Callable | None, image: Image.Image, rng: random.Random) -> Any:
    if transform is None:
        return image
    if getattr(transform, "accepts_rng", False):
        return transform(image, rng)
    return transform(image)


class ImageTextDataset(torch.utils.data.Dataset):
    """Base: subclasses set `self.sources` and implement `caption(index, rng)`."""

    sources: list[str]

    def __init__(self, transform: Callable | None, tokenizer: Callable[[str], torch.Tensor] | None,
                 seed: int, root: str | Path) -> None:
        self.transform = transform
        self.tokenizer = tokenizer if tokenizer is not None else Tokenizer()
        self.seed = int(seed)
        self.epoch = 0
        self.root = Path(root)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sources)

    def caption(self, index: int, rng: random.Random) -> str:
        raise NotImplementedError

    def load_image(self, index: int) -> Image.Image:
        from ._decode import load_path

        return load_path(self.sources[index])

    def source_name(self, index: int) -> str:
        return str(self.sources[index])

    def __getitem__(self, index: int):
        rng = sample_rng(self.seed, self.epoch, index)
        text = self.caption(index, rng)  # drawn first, so the crop stream does not depend on it
        try:
            image = apply_transform(self.transform, self.load_image(index), rng)
        except DECODE_ERRORS as exc:
            return BadImage(self.source_name(index), error_reason(exc), index)
        return image, self.tokenizer(text)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(root='{self.root}', samples={len(self)}, seed={self.seed}, epoch={self.epoch})"


class CaptionCsvImageText(ImageTextDataset):
    """One sample per image of an `image,caption` CSV; each epoch picks one of its captions.

    open_clip's CsvDataset takes one sample per *row*: an epoch of Flickr8k's captions.txt (5 rows an image)
    is 5x longer there. `caption_rows` (the rows of the usable images) lets the trainer say so at the start."""

    def __init__(self, csv_path: str | Path, images_dir: str | Path | None = None, transform: Callable | None = None,
                 tokenizer: Callable | None = None, seed: int = 0, strict: bool = False) -> None:
        csv_path = Path(csv_path)
        table = read_caption_csv(csv_path, strict=strict)
        folder = (
            Path(images_dir)
            if images_dir is not None
            else default_images_dir(csv_path, table.images[0] if table.images else None)
        )
        if not folder.is_dir():
            raise DatasetLayoutError(f"missing folder {folder} (images of {csv_path})\nexpected layout:\n{CAPTION_LAYOUT}")
        grouped: list[list[str]] = [[] for _ in table.images]
        for caption, image in zip(table.captions, table.caption_image, strict=True):
            grouped[image].append(caption)
        super().__init__(transform, tokenizer, seed, folder)
        self.sources, self.captions, self.missing = [], [], []
        for name, captions in zip(table.images, grouped, strict=True):
            path = folder / name
            if path.is_file():
                self.sources.append(str(path))
                self.captions.append(captions)
            else:
                self.missing.append(str(path))
        self.bad_rows = table.bad_rows
        self.caption_rows = sum(len(captions) for captions in self.captions)
        if not self.sources:
            raise DatasetLayoutError(f"none of the {len(table.images)} images of {csv_path} exist in {folder}")

    def caption(self, index: int, rng: random.Random) -> str:
        return rng.choice(self.captions[index])


class FolderCaptionImageText(ImageTextDataset):
    """`root/<caption>/*.jpg`: the folder name is the caption (underscores read as spaces)."""

    def __init__(self, root: str | Path, transform: Callable | None = None, tokenizer: Callable | None = None,
                 seed: int = 0) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetLayoutError(f"missing folder {root}\nexpected layout:\n  ROOT/<caption text>/*.jpg")
        super().__init__(transform, tokenizer, seed, root)
        self.sources, self.texts = [], []
        for entry in sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")):
            caption = " ".join(folder_caption(root, entry).replace("_", " ").split())
            for name in sorted(os.listdir(root / entry)):
                if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                    self.sources.append(str(root / entry / name))
                    self.texts.append(caption)
        if not self.sources:
            raise DatasetLayoutError(f"no images in caption folders under {root}\n"
                                     "expected layout:\n  ROOT/<caption text>/*.jpg")

    def caption(self, index: int, rng: random.Random) -> str:
        return self.texts[index]


def folder_caption(root: Path, name: str) -> str:
    r"""A caption folder's name as its caption text. A name that is not UTF-8 (Python spells its bytes as
    surrogates, which the tokenizer read as U+FFFD: `caf\udce9_table` trained as "caf \ufffd table") is
    decoded as Latin-1 (one character a byte: "café_table") and said in one warning line naming the folder
    with its bytes as \xNN escapes."""
    import warnings

    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    raw = os.fsencode(name)
    decoded = raw.decode("latin-1")
    shown = os.fsencode(str(root / name)).decode("utf-8", "backslashreplace")
    warnings.warn(f"caption folder {shown}: its name is not UTF-8; its caption was decoded as Latin-1: "
                  f"{' '.join(decoded.replace('_', ' ').split())!r}", stacklevel=3)
    return decoded


class LabelledImageText(ImageTextDataset):
    """A labelled dataset as image-text pairs: caption = template.format(classname).

    With `random_template`, each sample draws one of `templates` per epoch; otherwise the first
    template is used (default "A photo of a {}.", the fine-tuning recipe of the source reports).
    """

    def __init__(self, dataset: LabelledDataset, templates: str | Sequence[str] = DEFAULT_TEMPLATE,
                 random_template: bool = False, transform: Callable | None = None,
                 tokenizer: Callable | None = None, seed: int = 0) -> None:
        self.templates = [templates] if isinstance(templates, str) else list(templates)
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError(f"templates must be non-empty and each contain '{{}}', got {self.templates}")
        super().__init__(transform, tokenizer, seed, dataset.root)
        self.dataset = dataset
        self.random_template = bool(random_template)
        self.classnames = dataset.classnames
        self.sources = [str(s) for s, _ in dataset.samples]
        self.targets = dataset.targets

    def load_image(self, index: int) -> Image.Image:
        return self.dataset.load_image(index)

    def source_name(self, index: int) -> str:
        return self.dataset.source_name(index)

    def caption(self, index: int, rng: random.Random) -> str:
        template = rng.choice(self.templates) if self.random_template else self.templates[0]
        return template.format(self.classnames[self.targets[index]])
