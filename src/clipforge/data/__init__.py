"""Dataset adapters over local files, image-text training data, and DataLoader helpers.

Evaluation datasets (`open_dataset(name, root, split, transform)`) yield `(image, label)` and
share one interface (`LabelledDataset`: classnames, samples, name, split, missing).
Training datasets yield `(image, token_ids)`. Bad images never crash a loader: they come back
as `BadImage` and `make_loader`'s `skip_bad_collate` drops and reports them per batch
(`Batch(images, labels, indices, errors)`); `BadSampleLog` tallies them for reports.

The names below are imported on first use (PEP 562), so ``import clipforge.data.prefetch``
does not load torch: a command's decoding starts while torch is still importing.
"""

from __future__ import annotations

from clipforge._lazy import lazy_exports

_SOURCES: dict[str, str] = {
    "CIFAR10_CLASSES": "classnames",
    "CIFAR100_CLASSES": "classnames",
    "CUB": "cub",
    "DEFAULT_TEMPLATE": "imagetext",
    "IMAGENET_CLASSNAME_FILES": "classnames",
    "IMAGE_EXTENSIONS": "base",
    "ArrayDataset": "inmemory",
    "BadImage": "base",
    "BadSample": "base",
    "BadSampleLog": "collate",
    "Batch": "collate",
    "CIFARPickle": "cifar",
    "CaptionCsvImageText": "imagetext",
    "CaptionDataset": "captions",
    "CaptionTable": "captions",
    "DatasetFormatError": "base",
    "DatasetLayoutError": "base",
    "EncodeResult": "pipeline",
    "FolderCaptionImageText": "imagetext",
    "ImageFolder": "folder",
    "ImageNet": "imagenet",
    "ImageTextDataset": "imagetext",
    "LabelledDataset": "base",
    "LabelledImageText": "imagetext",
    "RandomResizedCrop": "transforms",
    "StanfordCars": "cars",
    "Tokenizer": "imagetext",
    "TrainTransform": "transforms",
    "WebDatasetImageText": "webdata",
    "ZipImageFolder": "folder",
    "available_datasets": "registry",
    "build_train_transform": "transforms",
    "clean_cub_name": "classnames",
    "decode_all": "inmemory",
    "detect_imagenet_layout": "imagenet",
    "encode_image_files": "pipeline",
    "imagenet_classnames": "classnames",
    "imagenet_wnids": "classnames",
    "make_loader": "loader",
    "open_cifar": "cifar",
    "open_dataset": "registry",
    "read_caption_csv": "captions",
    "register_dataset": "registry",
    "save_embeddings": "pipeline",
    "skip_bad_collate": "collate",
}

__all__ = sorted(_SOURCES)


__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
