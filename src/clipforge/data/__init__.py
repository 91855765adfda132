"""Dataset adapters over local files, image-text training data, and DataLoader helpers.

Evaluation datasets (`open_dataset(name, root, split, transform)`) yield `(image, label)` and
share one interface (`LabelledDataset`: classnames, samples, name, split, missing).
Training datasets yield `(image, token_ids)`. Bad images never crash a loader: they come back
as `BadImage` and `make_loader`'s `skip_bad_collate` drops and reports them per batch
(`Batch(images, labels, indices, errors)`); `BadSampleLog` tallies them for reports.
"""

from .base import (
    IMAGE_EXTENSIONS,
    BadImage,
    BadSample,
    DatasetFormatError,
    DatasetLayoutError,
    LabelledDataset,
)
from .captions import CaptionDataset, CaptionTable, read_caption_csv
from .cars import StanfordCars
from .cifar import CIFARPickle, open_cifar
from .classnames import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    IMAGENET_CLASSNAME_FILES,
    clean_cub_name,
    imagenet_classnames,
    imagenet_wnids,
)
from .collate import BadSampleLog, Batch, skip_bad_collate
from .cub import CUB
from .folder import ImageFolder, ZipImageFolder
from .imagenet import ImageNet, detect_imagenet_layout
from .imagetext import (
    DEFAULT_TEMPLATE,
    CaptionCsvImageText,
    FolderCaptionImageText,
    ImageTextDataset,
    LabelledImageText,
    Tokenizer,
)
from .inmemory import ArrayDataset, decode_all
from .loader import make_loader
from .pipeline import EncodeResult, encode_image_files, save_embeddings
from .registry import available_datasets, open_dataset, register_dataset
from .transforms import RandomResizedCrop, TrainTransform, build_train_transform
from .webdata import WebDatasetImageText

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "CUB",
    "DEFAULT_TEMPLATE",
    "IMAGENET_CLASSNAME_FILES",
    "IMAGE_EXTENSIONS",
    "ArrayDataset",
    "BadImage",
    "BadSample",
    "BadSampleLog",
    "Batch",
    "CIFARPickle",
    "CaptionCsvImageText",
    "CaptionDataset",
    "CaptionTable",
    "DatasetFormatError",
    "DatasetLayoutError",
    "EncodeResult",
    "FolderCaptionImageText",
    "ImageFolder",
    "ImageNet",
    "ImageTextDataset",
    "LabelledDataset",
    "LabelledImageText",
    "RandomResizedCrop",
    "StanfordCars",
    "Tokenizer",
    "TrainTransform",
    "WebDatasetImageText",
    "ZipImageFolder",
    "available_datasets",
    "build_train_transform",
    "clean_cub_name",
    "decode_all",
    "detect_imagenet_layout",
    "encode_image_files",
    "imagenet_classnames",
    "imagenet_wnids",
    "make_loader",
    "open_cifar",
    "open_dataset",
    "read_caption_csv",
    "register_dataset",
    "save_embeddings",
    "skip_bad_collate",
]
