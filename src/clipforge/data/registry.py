"""Dataset names -> adapters, so CLIs take `--dataset NAME --root PATH` and nothing else.

Each factory auto-detects its layout under `root`. `split` uses each dataset's own words;
"test" is accepted everywhere an evaluation split is meant (ImageNet's is "val").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import LabelledDataset

__all__ = ["available_datasets", "open_dataset", "register_dataset"]

Factory = Callable[..., LabelledDataset]


def _imagenet(root: Path, split: str, transform: Any, **kw: Any) -> LabelledDataset:
    from .imagenet import ImageNet

    return ImageNet(root, split, transform, **kw)


def _cub(root: Path, split: str, transform: Any, **kw: Any) -> LabelledDataset:
    from .cub import CUB

    return CUB(root, split, transform, **kw)


def _cars(root: Path, split: str, transform: Any, **kw: Any) -> LabelledDataset:
    from .cars import StanfordCars

    return StanfordCars(root, split, transform, **kw)


def _cifar(variant: str) -> Factory:
    def factory(root: Path, split: str, transform: Any, **kw: Any) -> LabelledDataset:
        from .cifar import open_cifar

        return open_cifar(root, split, transform, variant=variant, **kw)

    return factory


def _folder(root: Path, split: str, transform: Any, **kw: Any) -> LabelledDataset:
    from .folder import ImageFolder, ZipImageFolder

    if root.is_file() and root.suffix == ".zip":
        return ZipImageFolder(root, split, transform, **kw)
    return ImageFolder(root, split, transform, **kw)


def _lazy(module: str, cls: str) -> Factory:
    """A factory that imports `clipforge.data.<module>.<cls>` only when the dataset is opened."""
    def factory(root: Path, split: str, transform: Any, **kw: Any) -> LabelledDataset:
        import importlib

        return getattr(importlib.import_module(f"clipforge.data.{module}"), cls)(root, split, transform, **kw)

    return factory


# The native-layout adapters of the CLIP paper's datasets (catalogue keys; see catalog.json).
_NATIVE = {
    "food101": ("natural", "Food101"), "sun397": ("natural", "SUN397"), "dtd": ("natural", "DTD"),
    "pets": ("natural", "OxfordPets"), "caltech101": ("natural", "Caltech101"),
    "flowers102": ("natural", "Flowers102"), "fgvc_aircraft": ("natural", "FGVCAircraft"),
    "birdsnap": ("natural", "Birdsnap"),
    "mnist": ("arrays", "MNIST"), "stl10": ("arrays", "STL10"), "fer2013": ("arrays", "FER2013"),
    "pcam": ("arrays", "PCam"),
    "eurosat": ("scenes", "EuroSAT"), "resisc45": ("scenes", "RESISC45"), "gtsrb": ("scenes", "GTSRB"),
    "country211": ("scenes", "Country211"), "rendered_sst2": ("scenes", "RenderedSST2"),
    "clevr_counts": ("scenes", "CLEVRCounts"), "kitti_distance": ("scenes", "KITTIDistance"),
    "imagenetv2": ("imagenet_variants", "ImageNetV2"), "imagenet_sketch": ("imagenet_variants", "imagenet_sketch"),
    "imagenet_a": ("imagenet_variants", "imagenet_a"), "imagenet_r": ("imagenet_variants", "imagenet_r"),
    "objectnet": ("imagenet_variants", "ObjectNet"), "voc2007": ("imagenet_variants", "VOC2007"),
    "ucf101": ("frames", "UCF101Frames"), "kinetics700": ("frames", "Kinetics700Frames"),
    "hateful_memes": ("frames", "HatefulMemes"),
}

_REGISTRY: dict[str, Factory] = {
    "imagenet": _imagenet,
    "cub": _cub,
    "cars": _cars,
    "cifar10": _cifar("cifar10"),
    "cifar100": _cifar("cifar100"),
    "folder": _folder,
    **{name: _lazy(module, cls) for name, (module, cls) in _NATIVE.items()},
}
_ALIASES = {"imagenet1k": "imagenet", "ilsvrc2012": "imagenet", "cub200": "cub", "cub2002011": "cub",
            "stanfordcars": "cars", "imagefolder": "folder"}


def _key(name: str) -> str:
    from .catalog import canonical

    key = "".join(c for c in name.lower() if c.isalnum())
    if key in _ALIASES:
        return _ALIASES[key]
    return key if key in _REGISTRY else (canonical(name) or key)


def registered_name(name: str) -> str | None:
    """The registry's name for `name` (an alias or spelling it accepts: imagenet1k, CIFAR-10, stanford_cars ...), or
    None when no dataset answers to it."""
    key = _key(name)
    return key if key in _REGISTRY else None


def available_datasets() -> list[str]:
    return sorted(_REGISTRY)


def register_dataset(name: str, factory: Factory) -> None:
    """Add a dataset: `factory(root: Path, split: str, transform, **kwargs) -> LabelledDataset`."""
    _REGISTRY[_key(name)] = factory


def open_dataset(name: str, root: str | Path, split: str = "test", transform: Any = None, **kwargs: Any) -> LabelledDataset:
    """Open dataset `name` (imagenet, cub, cars, cifar10, cifar100, folder) from local files under `root`.

    Raises KeyError for an unknown name, DatasetLayoutError (naming the missing file and the
    expected layout) when `root` holds no recognisable layout.
    """
    factory = _REGISTRY.get(_key(name))
    if factory is None:
        from .catalog import UnknownDatasetError

        raise UnknownDatasetError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    return factory(Path(root), split, transform, **kwargs)
