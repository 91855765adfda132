"""The model side of a library: one object that turns images and texts into unit vectors.

A library stores vectors of exactly one model, identified by the fingerprint of its weights
(not its name: two checkpoints both called "ViT-B/32" can differ). `resolve_encoder` accepts
whatever a caller has - a name or checkpoint path for `clipforge.load`, a loaded CLIP, a
`(model, preprocess)` pair, or an `Encoder` - so the CLI, the Python API and a web server
all end up with the same thing. Zero-shot class embeddings are made here too (and only
here), through `clipforge.zeroshot.ZeroShotClassifier`.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clipforge.errors import Notice

if TYPE_CHECKING:
    from clipforge.models.scoring import Scoring


__all__ = ["ENCODE_IMAGES_BATCH", "Encoder", "default_model_name", "model_fingerprint", "resolve_encoder"]

ENCODE_IMAGES_BATCH = 32
"""Images `Encoder.encode_images` decodes before one forward pass: a list of photos was encoded one at a time
(batch 1: ~29 images/s of tiny JPEGs with clipforge-tiny, where `index add` reads 220-450 files/s, audit 66
memory), and 32 decoded crops stay a few MB."""

log = logging.getLogger(__name__)


def model_fingerprint(model: torch.nn.Module) -> str:
    """Stable hex id of the weights (`clipforge.weights.model_fingerprint`): what a library is keyed by."""
    from clipforge.weights import model_fingerprint as core_fingerprint

    return str(core_fingerprint(model))


def _ready(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether `model` can be encoded with as it is: every module in eval mode and every tensor on `device`."""
    tensors = [*model.parameters(), *model.buffers()]
    return not any(m.training for m in model.modules()) and all(_same_device(t.device, device) for t in tensors)


def _same_device(have: torch.device, want: torch.device) -> bool:
    """Whether a tensor on `have` is on the device asked for (`want`: "cuda" is the current GPU, as `.to` reads it)."""
    if have.type != want.type:
        return False
    if want.index is None and want.type == "cuda":
        return have.index == torch.cuda.current_device()  # where `.to("cuda")` puts it
    return want.index is None or have.index == want.index


class Encoder:
    """A CLIP model plus its preprocessing and identity; every output vector is L2-normalised.

    Inference goes through `clipforge.inference.encoder.BatchEncoder` in `precision` ("fp32":
    the model's packed fast forward; "bf16": weights cast once, where the CPU multiplies bf16
    natively). The fingerprint is taken from the fp32 weights before any cast, so a library
    indexed in bf16 is the same library as one indexed in fp32.
    """

    def __init__(self, model: torch.nn.Module, preprocess: Callable[[Any], torch.Tensor] | None = None,
                 name: str | None = None, device: str | torch.device | None = None, *,
                 precision: str = "fp32", fingerprint: str | None = None, draft: bool = True,
                 copy_model: bool = True) -> None:
        from clipforge.inference.encoder import BatchEncoder

        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if copy_model and not _ready(model, self.device):
            # The caller's model (`Library(path, (model, preprocess))`, `Encoder(model)`) in training mode or on
            # another device: `.eval()` and `.to()` on it switched its 23 training flags off (a training loop's
            # BatchNorm frozen from then on) and moved it. The encoder gets its own copy, in eval mode, on its
            # device (one copy of the weights, only then; a model already in eval on the device, as every loaded
            # one is, is shared as before). Not `eval_mode` around each call: a server's threads encoding at once
            # would restore training mode under each other's forward passes (`clipforge.models.modes`).
            model, copy_model = copy.deepcopy(model), False  # copied once: bf16 need not copy again
        model = model.eval()  # (the library's own model, or the copy)
        model.to(self.device)
        if preprocess is None:
            from clipforge.weights.preprocessing import preprocess_for

            preprocess = preprocess_for(model, draft=draft)
        self.preprocess = preprocess
        self.name = name
        self.fingerprint = fingerprint or model_fingerprint(model)
        self.batch_encoder = BatchEncoder(model, precision, normalizer=preprocess, copy_model=copy_model)
        self.model = self.batch_encoder.model
        self.precision = self.batch_encoder.precision
        self.embed_dim = int(model.embed_dim)
        self.context_length = int(getattr(model, "context_length", 77))
        self._classifiers: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{self.name or type(self.model).__name__} (fingerprint {self.fingerprint[:12]})"

    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """[N, 3, R, R] preprocessed batch (or uint8 [N, R, R, 3] crops) -> [N, D] unit float32 vectors."""
        return self.batch_encoder.images(pixels)

    def encode_images(self, images: Any, max_pixels: int | None = None) -> np.ndarray:
        """PIL images, paths or raw bytes -> [N, D] unit vectors (decoding errors raise ImageLoadError).

        Paths and bytes (search-by-image queries) go through the same reader as indexed files, so a
        query photo and the same photo in the library give the same vector. One path, one bytes object or
        one PIL image is one image ([1, D]), as `encode_texts("a cat")` is one text: a str was read one
        character per file ("1: file not found"), a Path was "'PosixPath' object is not iterable" (audit 65
        citizen #7). An item of another type is a TypeError naming its position. A list is encoded
        `ENCODE_IMAGES_BATCH` images per forward pass (the first bad one raises, before any later one is read).
        """
        from clipforge.data.files import with_max_pixels

        if isinstance(images, (str, os.PathLike, bytes, bytearray)) or hasattr(images, "convert"):
            images = [images]
        elif not isinstance(images, Iterable):
            raise TypeError(f"images must be a path, image bytes, a PIL image or a list of those, got "
                            f"{type(images).__name__}")
        preprocess = with_max_pixels(self.preprocess, max_pixels)
        rows: list[np.ndarray] = []
        pending: list[torch.Tensor] = []  # decoded, not yet encoded: one kind (uint8 crops or float tensors)

        def flush() -> None:
            if pending:
                rows.extend(self.encode_pixels(torch.stack(pending)))
                pending.clear()

        for i, item in enumerate(images):
            if hasattr(item, "convert"):  # already a PIL image
                pixels = preprocess(item)
            elif isinstance(item, bytes | bytearray):
                from clipforge.data.files import read_image_bytes

                pixels = self._pixels(read_image_bytes(bytes(item), preprocess, "<image bytes>"))
            elif isinstance(item, (str, os.PathLike)):  # a path: the one file reader, as `index add` reads it
                from clipforge.data.files import ImageFileReader

                pixels = self._pixels(ImageFileReader([item], preprocess)[0])
            else:
                raise TypeError(f"images[{i}] must be a path, image bytes or a PIL image, got {type(item).__name__}")
            if pending and (pixels.dtype != pending[0].dtype or pixels.shape != pending[0].shape):
                flush()
            pending.append(pixels)
            if len(pending) == ENCODE_IMAGES_BATCH:
                flush()
        flush()
        return np.stack(rows) if rows else np.zeros((0, self.embed_dim), np.float32)

    def encode_bytes(self, data: bytes, label: str = "<upload>") -> np.ndarray:
        """One uploaded image's bytes -> [D] unit vector, through the same reader as files.

        Raises `clipforge.image.ImageLoadError` (a ValueError) naming `label` and the reason; a TypeError for
        data that is no bytes (a str was hashlib's "Strings must be encoded before hashing").
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):  # bytes-like, as before (review 65)
            raise TypeError(f"encode_bytes takes an image file's bytes, got {type(data).__name__} (a path: "
                            "encode_images([path]))")
        return self._encode_one(bytes(data), label, self.preprocess)

    def _encode_one(self, data: bytes, label: str, preprocess: Any) -> np.ndarray:
        from clipforge.data.files import read_image_bytes

        return self._encoded(read_image_bytes(data, preprocess, label))

    def _encoded(self, item: Any) -> np.ndarray:
        """A reader's DecodedFile -> [D] unit vector; a BadImage raises ImageLoadError naming it."""
        return self.encode_pixels(self._pixels(item).unsqueeze(0))[0]

    @staticmethod
    def _pixels(item: Any) -> torch.Tensor:
        """A reader's DecodedFile -> its uint8 crop; a BadImage raises ImageLoadError naming it."""
        from clipforge.image import ImageLoadError

        if getattr(item, "pixels", None) is None:  # a BadImage
            raise ImageLoadError(f"{item.path}: {item.reason}", path=item.path, reason=item.reason)
        return item.pixels

    def encode_texts(self, texts: str | Sequence[str]) -> np.ndarray:
        """[N, D] unit vectors of `texts`; one string is one text ([1, D], as `clipforge.tokenize` reads it), never
        one text per character."""
        from clipforge.text import tokenize_for
        from clipforge.zeroshot.inputs import text_list

        tokens = tokenize_for(self.model, text_list(texts), self.context_length)  # the model's own tokenizer
        return self.batch_encoder.texts(tokens)

    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.exp().item()) if scale is not None else 100.0

    def scoring(self) -> Scoring:
        """The model's scoring (softmax, or SigLIP's sigmoid with its bias), read from its parameters now."""
        from clipforge.models.scoring import scoring_of

        return scoring_of(self.model)

    def class_embeddings(self, labels: str | Sequence[str], templates: str | Sequence[str] = "imagenet",
                         cache_dir: str | Path | None = None, progress: bool = False) -> np.ndarray:
        """[L, D] zero-shot class vectors (prompt ensemble), via ZeroShotClassifier, memoised. `labels`: a list, or
        one string of comma-separated labels (``"cat,dog"``, as `Library.classify` reads it)."""
        from clipforge.zeroshot.inputs import class_names

        labels = class_names(labels, "labels")
        key = (tuple(labels), templates if isinstance(templates, str) else tuple(templates))
        with self._lock:
            classifier = self._classifiers.get(key)
            if classifier is None:
                from clipforge.zeroshot import ZeroShotClassifier

                classifier = ZeroShotClassifier(self.model, list(labels), templates, preprocess=self.preprocess,
                                                device=self.device, cache_dir=cache_dir,
                                                use_cache=cache_dir is not None, progress=progress)
                self._classifiers = {key: classifier}  # keep only the latest label set
        return classifier.class_embeddings.detach().float().cpu().numpy()


def default_model_name() -> str:
    """ViT-B/32 when its weights are cached, else the shipped offline model (with a `Notice` warning)."""
    from clipforge.api import default_model_spec as default_model

    name, notice = default_model()
    if notice:
        warnings.warn(notice, Notice, stacklevel=2)
    return name


def resolve_encoder(model: Any, preprocess: Any = None, device: str | torch.device | None = None,
                    name: str | None = None, *, precision: str = "fp32", draft: bool = True,
                    towers: Sequence[str] | None = None) -> Encoder:
    """Turn any accepted `model` argument into an `Encoder` (see module docstring).

    A name or path is loaded through `clipforge.api.load_model` (the one loader) and prepared in
    place; a model passed in is copied before a bf16 cast, so the caller's model stays fp32, and before it is put
    in eval mode or moved, so the caller's model keeps its training flags and its device (`Encoder`).
    `draft=False` decodes every JPEG pixel (no DCT-domain downscale). `towers=("text",)`: a name
    or path is loaded for text only where the weights allow it (`load_model`'s `towers`).
    """
    if isinstance(model, Encoder):
        return model
    from clipforge.api.loaded import unwrap_model

    model, preprocess = unwrap_model(model, preprocess)  # a LoadedModel or a (model, preprocess) pair
    if isinstance(model, (str, Path)):
        from clipforge.api import load_model

        loaded = load_model(str(model), device=device, towers=towers)  # device None: `api.default_device()`
        if preprocess is None and not draft:
            from clipforge.weights.preprocessing import preprocess_for

            preprocess = preprocess_for(loaded.model, draft=False)
        return Encoder(loaded.model, preprocess or loaded.preprocess, name=str(model), device=device,
                       precision=precision, copy_model=False)
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "encode_image"):
        raise TypeError(f"model must be a name, a checkpoint path, a CLIP module, what load_model returns, (model, "
                        f"preprocess) or an Encoder; got {type(model).__name__}")
    return Encoder(model, preprocess, name=name, device=device, precision=precision, draft=draft)
