"""Image features for a whole dataset through a DataLoader, with honest timing.

Time is split the way people need it to find the bottleneck: decode + preprocess (measured
inside the workers, per image, so it is CPU time spent whether or not it overlapped with the
model), time the main process waited for data, and model time (with CUDA synchronised so
asynchronous kernels are not under-counted). Bad images are counted, never fatal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from clipforge.data.base import DatasetFormatError

__all__ = ["FeatureResult", "NoReadableImagesError", "TimedDataset", "extract_image_features", "subset_indices"]


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
                           desc: str = "images") -> FeatureResult:
    """Encode every (or every listed) image of a `LabelledDataset`; returns features on CPU."""
    from clipforge.data import make_loader
    from clipforge.data.collate import BadSampleLog

    device = torch.device(device)
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
                out = model.encode_image(batch.images.to(device, non_blocking=True)).float()
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
