"""Image features for a whole dataset through a DataLoader, with honest timing.

Time is split the way people need it to find the bottleneck: decode + preprocess (measured
inside the workers, per image, so it is CPU time spent whether or not it overlapped with the
model), time the main process waited for data, and model time (with CUDA synchronised so
asynchronous kernels are not under-counted). Bad images are counted, never fatal.

Which features (`FEATURE_KINDS`, the one loop for both): ``"embedding"`` is ``encode_image``, the joint
embedding space (what openai/CLIP's README probe and CLIP_benchmark fit; CLIP_benchmark L2-normalises it
first, we do not); ``"pre-projection"`` is the image tower's own feature before its projection ``visual.proj``
(the CLIP paper's appendix A.3 probe of CLIP-ViT models, I_f of its Figure 3): ``ln_post`` of the class token for
OpenAI's ViTs, width 768 for ViT-B/32. It runs the model's own forward (the fast path included) on a shallow
copy of the tower whose ``proj`` is the identity matrix, so no second encoder exists to drift from the first: a
product with an identity matrix is exact (each output is one input times 1 plus zeros), in fp32 and bf16. A
tower whose projection is not a separate matrix (a ResNet's attention pooling ends in its own ``c_proj``) or
that has none (SigLIP's) is refused in one line (`describe_image_features`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from clipforge.data.base import DatasetFormatError
from clipforge.inference.encoder import check_finite

__all__ = ["FEATURE_KINDS", "FeatureResult", "NoReadableImagesError", "TimedDataset", "check_feature_kind",
           "describe_image_features", "extract_image_features", "image_encoder", "subset_indices"]

FEATURE_KINDS: tuple[str, ...] = ("embedding", "pre-projection")


class NoReadableImagesError(DatasetFormatError, RuntimeError):
    """Not one image of the dataset decoded: the user's data, so one line at the CLI (it was a bare
    RuntimeError and a traceback); still a RuntimeError for callers that catch that."""


class Timed(NamedTuple):
    item: Any
    seconds: float


class TimedDataset(Dataset):
    """Wraps a dataset so each item carries the seconds its decode + transform took."""

    def __init__(self, dataset: Dataset, indices: Sequence[int] | None = None) -> None:
        self.dataset = dataset
        self.indices = list(indices) if indices is not None else None

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Timed:
        start = time.perf_counter()
        item = self.dataset[self.indices[index] if self.indices is not None else index]
        return Timed(item, time.perf_counter() - start)


class _TimedCollate:
    """Strip the timings, collate the rest with `skip_bad_collate`, return (batch, seconds)."""

    def __call__(self, items: Sequence[Any]):
        from clipforge.data import skip_bad_collate
        from clipforge.data.collate import Indexed

        seconds = 0.0
        plain = []
        for entry in items:
            index = None
            if isinstance(entry, Indexed):
                index, entry = entry
            seconds += entry.seconds
            plain.append(Indexed(index, entry.item) if index is not None else entry.item)
        return skip_bad_collate(plain), seconds


def subset_indices(n: int, limit: int | None, seed: int = 0) -> list[int] | None:
    """A fixed pseudo-random subset of `limit` indices, sorted; None means all.

    Datasets are usually stored class by class, so "the first N" would be a few classes only;
    a seeded random subset keeps the class mix and is the same on every run.
    """
    if limit is None or limit >= n:
        return None
    if limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=limit, replace=False))


def check_feature_kind(kind: str, flag: str = "--probe-features") -> str:
    """`kind` if it is one of `FEATURE_KINDS`, else ValueError in one line naming `flag` and the choices."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"{flag} {kind!r}: expected one of {', '.join(FEATURE_KINDS)}")
    return kind


def _pooled(visual: torch.nn.Module) -> str | None:
    """Which row(s) a ViT tower reads before its projection, or None for a tower that is no ViT we know."""
    from clipforge.models.family import MapVisionTransformer
    from clipforge.models.family_clipa import AvgPoolVisionTransformer
    from clipforge.models.vit import VisionTransformer

    if isinstance(visual, VisionTransformer):
        return "visual.ln_post of the class token"
    if isinstance(visual, AvgPoolVisionTransformer):
        return "visual.ln_post of the mean of the patch tokens"
    if isinstance(visual, MapVisionTransformer):
        return "visual.attn_pool (attention-pool head) of visual.ln_post"
    return None


def _projection(visual: torch.nn.Module) -> torch.Tensor | None:
    proj = getattr(visual, "proj", None)
    return proj if isinstance(proj, torch.Tensor) and proj.dim() == 2 else None


def _tower_name(visual: torch.nn.Module) -> str:
    """The tower's model class (``MapVisionTransformer``), not the fast path's subclass of it."""
    return next((c.__name__ for c in type(visual).__mro__ if c.__module__.startswith("clipforge.models.")),
                type(visual).__name__)


def describe_image_features(model: torch.nn.Module, kind: str = "embedding", name: str | None = None) -> dict[str, Any]:
    """What `kind` features of `model` are, for a report: ``kind``, ``layer``, ``dim`` and ``l2_normalized``
    (False: the features are the tower's output as it is; the probe's C sweep sees their scale).

    ValueError in one line naming the model (`name`) for ``"pre-projection"`` on a tower with no separate
    projection matrix: a ResNet (its attention pooling ends in its own output projection, ``attnpool.c_proj``,
    so nothing comes "before the projection" but the pooling's inputs) or a ViT without ``visual.proj``
    (SigLIP's: its ``encode_image`` already is the tower's own feature). Called before any image is read."""
    check_feature_kind(kind)
    visual = model.visual
    proj, pooled = _projection(visual), _pooled(visual)
    if kind == "embedding":
        dim = int(proj.shape[1]) if proj is not None else int(getattr(visual, "output_dim", 0) or model.embed_dim)
        if proj is not None and pooled is not None:
            layer = f"encode_image: {pooled} @ visual.proj (the joint embedding space)"
        elif hasattr(visual, "attnpool"):
            layer = "encode_image: visual.attnpool (attention pooling ending in its c_proj; the joint embedding space)"
        else:
            layer = f"encode_image: {pooled or _tower_name(visual)} (the tower has no separate projection)"
        return {"kind": kind, "layer": layer, "dim": dim, "l2_normalized": False}
    who = name or type(model).__name__
    if proj is None or pooled is None:
        if hasattr(visual, "attnpool"):
            why = ("its image tower is a ResNet whose attention pooling ends in its own output projection "
                   "(visual.attnpool.c_proj), so there is no separate projection to stop before")
        elif pooled is not None:
            why = (f"its image tower ({_tower_name(visual)}) has no projection (visual.proj is None): "
                   "encode_image is already the tower's own feature")
        else:
            why = f"its image tower ({_tower_name(visual)}) has no separate projection matrix visual.proj"
        raise ValueError(f"--probe-features pre-projection: {who}: {why}; use --probe-features embedding")
    return {"kind": kind, "layer": f"{pooled}, before visual.proj", "dim": int(proj.shape[0]), "l2_normalized": False}


class _PreProjection:
    """``encode_image`` stopped before ``visual.proj``: the model's own tower (reference or fast forward) run on a
    shallow copy whose ``proj`` is the identity. The copy shares every submodule and weight with the model (the
    model itself is never changed, so a server or a training loop holding it sees nothing) and drops only the
    tower's own packed patch weights (`InferenceModule.__getstate__`), rebuilt once on its first call."""

    def __init__(self, model: torch.nn.Module) -> None:
        visual = model.visual
        proj = _projection(visual)
        if proj is None or _pooled(visual) is None:
            describe_image_features(model, "pre-projection")  # raises, naming why
        self.model = model
        self.tower = copy.copy(visual)
        params = dict(visual._parameters)
        params["proj"] = torch.nn.Parameter(torch.eye(proj.shape[0], dtype=proj.dtype, device=proj.device),
                                            requires_grad=False)
        object.__setattr__(self.tower, "_parameters", params)  # this copy's own dict: the model's keeps its proj

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from clipforge.models.tensor_checks import check_image_batch

        check_image_batch(images)  # as encode_image checks
        return self.tower(images.to(self.model.dtype))


def image_encoder(model: torch.nn.Module, kind: str = "embedding") -> Callable[[torch.Tensor], torch.Tensor]:
    """Images [N, 3, R, R] -> `kind` features [N, D] (module docstring): ``model.encode_image`` or `_PreProjection`."""
    check_feature_kind(kind)
    return model.encode_image if kind == "embedding" else _PreProjection(model)


@dataclass
class FeatureResult:
    features: torch.Tensor  # [N, D] float32, unnormalised, CPU
    labels: torch.Tensor  # [N] long
    indices: torch.Tensor  # [N] dataset indices of the kept samples
    bad: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def extract_image_features(model: torch.nn.Module, dataset: Dataset, *, batch_size: int = 64,
                           workers: int = 0, device: torch.device | str = "cpu",
                           indices: Sequence[int] | None = None, progress: bool = True,
                           desc: str = "images", features: str = "embedding") -> FeatureResult:
    """Encode every (or every listed) image of a `LabelledDataset`; returns `features` (`FEATURE_KINDS`) on CPU."""
    from clipforge.data import make_loader
    from clipforge.data.collate import BadSampleLog

    device = torch.device(device)
    encode = image_encoder(model, features)
    timed = TimedDataset(dataset, indices)
    loader = make_loader(timed, batch_size=batch_size, workers=workers, collate_fn=_TimedCollate())
    bad = BadSampleLog()
    feats, labels, kept = [], [], []
    decode_s = wait_s = model_s = 0.0
    start = time.perf_counter()
    tick = start
    # leave=None: kept at the top (a single command's bar), cleared when nested under the suite's cell bar
    with tqdm(total=len(timed), unit="img", desc=desc, disable=not progress, leave=None) as bar:
        for batch, seconds in loader:
            got = time.perf_counter()
            wait_s += got - tick
            decode_s += seconds
            bad.add(batch.errors)
            if len(batch.indices):
                m0 = time.perf_counter()
                # NaN weights: refused naming the model, before a metric ranks NaN or the feature cache keeps it
                out = check_finite(encode(batch.images.to(device, non_blocking=True)).float(), model)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                model_s += time.perf_counter() - m0
                feats.append(out.cpu())
                labels.append(torch.as_tensor(batch.labels).long())
                local = batch.indices
                kept.append(torch.as_tensor([timed.indices[i] for i in local.tolist()])
                            if timed.indices is not None else local)
            bar.update(len(batch.indices) + len(batch.errors))
            tick = time.perf_counter()
    total_s = time.perf_counter() - start
    n = int(sum(len(f) for f in feats))
    if n == 0:
        raise NoReadableImagesError(f"no image of {getattr(dataset, 'root', 'the dataset')} could be read: "
                                    f"{bad.summary()}")
    timing = {
        "images": n, "total_s": round(total_s, 4), "images_per_s": round(n / total_s, 3),
        "decode_preprocess_s": round(decode_s, 4), "decode_preprocess_ms_per_image": round(1000 * decode_s / n, 3),
        "data_wait_s": round(wait_s, 4), "model_s": round(model_s, 4),
        "model_ms_per_image": round(1000 * model_s / n, 3), "batch_size": batch_size, "workers": workers,
    }
    return FeatureResult(torch.cat(feats), torch.cat(labels), torch.cat(kept), bad.as_dict(), timing)
