"""Retrieval datasets in their published forms: Flickr30k and MSCOCO with Karpathy's splits, Flickr8k.

Karpathy's `dataset_flickr30k.json` / `dataset_coco.json` (caption_datasets.zip) list every image
with its split and sentences; the CLIP paper's retrieval numbers use the "test" split (1,000
Flickr30k images, 5,000 COCO images) with 5 captions per image (COCO images with more keep the
first five, as is standard). Flickr8k comes as Kaggle's `captions.txt` CSV (or our CSV form) or as
its authors' `Flickr8k.token.txt` with the split lists (see `flickr_text`); without a split list every
captioned image is read and the dataset's split is "all", whatever split was asked for (`retrieval_split`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import DatasetFormatError, DatasetLayoutError
from .captions import CaptionDataset, CaptionTable, default_images_dir, read_caption_csv
from .flickr_text import find_split_list, read_split_list

__all__ = ["KARPATHY_LAYOUT", "open_karpathy_json", "open_retrieval_dataset", "read_karpathy", "retrieval_split"]

KARPATHY_LAYOUT = """\
  flickr30k: ROOT/dataset_flickr30k.json + ROOT/flickr30k-images/<filename>   (or ROOT/images/)
  mscoco:    ROOT/dataset_coco.json + ROOT/<filepath>/<filename> (val2014/COCO_val2014_*.jpg; or ROOT/images/)
  flickr8k:  ROOT/captions.txt (CSV image,caption) + ROOT/Images/ (or images/), or the original
             ROOT/Flickr8k_text/{Flickr8k.token.txt, Flickr_8k.testImages.txt} + ROOT/Flicker8k_Dataset/"""

_JSON = {"flickr30k": "dataset_flickr30k.json", "mscoco": "dataset_coco.json"}
_SPLITS = {"test": ("test",), "val": ("val",), "train": ("train", "restval")}


_FILE = '{"images": [{"filename": ..., "split": ..., "sentences": [...]}, ...]}'
_ENTRY = '{"filename": ..., "split": ..., "sentences": [{"raw": ...}, ...]}'


def read_karpathy(path: Path, split: str, captions_per_image: int = 5) -> tuple[CaptionTable, list[str]]:
    """(captions of `split`, each image's folder relative to the JSON's folder: COCO's filepath).

    A file that is not UTF-8 JSON, or an entry that is not {filename, split, sentences} (audit 62: a KeyError or
    AttributeError traceback, `failed: 'filename'` in a suite), is one `DatasetFormatError` line naming the file,
    the entry's number and what was expected. An entry of the split with no sentence is a bad row, counted.
    """
    if not path.is_file():
        raise DatasetLayoutError(f"missing file {path}\nexpected layout:\n{KARPATHY_LAYOUT}")
    if split not in _SPLITS:
        raise ValueError(f"Karpathy splits are {', '.join(_SPLITS)}; got {split!r}")
    from clipforge.text.labels import TextFileError, parse_json_file, read_text_file

    try:
        data = parse_json_file(read_text_file(path, "Karpathy split file", _FILE), path, _FILE)
    except TextFileError as exc:
        raise DatasetFormatError(str(exc)) from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DatasetFormatError(f"{path}: expected {_FILE}")
    table, folders = CaptionTable(path), []
    for number, entry in enumerate(images, 1):
        if _entry_split(entry, path, number) not in _SPLITS[split]:
            continue
        folder, name, sentences = _entry(entry, path, number)
        name = f"{folder}/{name}".lstrip("/")
        sentences = [s for s in sentences if s][:captions_per_image]
        if not sentences:
            table.bad_rows.append((len(table.images), f"{name}: no sentences"))
            continue
        table.images.append(name)
        folders.append(folder)
        for sentence in sentences:
            table.captions.append(sentence)
            table.caption_image.append(len(table.images) - 1)
    if not table.images:
        raise DatasetFormatError(f"{path}: no image of split {split!r}")
    return table, folders


def _kind(value: object) -> str:
    """What a JSON value is, in JSON's words ("a string", "null")."""
    if value is None:
        return "null"
    kinds = ((bool, "a boolean"), (int | float, "a number"), (str, "a string"), (list, "a list"), (dict, "an object"))
    return next(name for kind, name in kinds if isinstance(value, kind))


def _entry_error(path: Path, where: str, problem: str) -> DatasetFormatError:
    return DatasetFormatError(f'{path}: "images" entry {where}{problem}; expected {_ENTRY}')


def _entry_split(entry: object, path: Path, number: int) -> object:
    """The split of entry `number` (from 1), which must be an object with a split, whichever split is read."""
    if not isinstance(entry, dict):
        raise _entry_error(path, f"{number}", f" is {_kind(entry)}, not an object")
    if "split" not in entry:
        named = f" ({entry['filename']})" if isinstance(entry.get("filename"), str) else ""
        raise _entry_error(path, f"{number}{named}", " has no 'split'")
    return entry["split"]


def _entry(entry: dict, path: Path, number: int) -> tuple[str, str, list[str]]:
    """(filepath, filename, stripped sentences) of entry `number`, each checked for its type."""
    if "filename" not in entry:
        raise _entry_error(path, f"{number}", " has no 'filename'")
    name = entry["filename"]
    if not isinstance(name, str):
        raise _entry_error(path, f"{number}", f": 'filename' is {_kind(name)}, not a string")
    where = f"{number} ({name})"
    folder = entry.get("filepath", "")
    if not isinstance(folder, str):
        raise _entry_error(path, where, f": 'filepath' is {_kind(folder)}, not a string")
    sentences = entry.get("sentences", [])
    if not isinstance(sentences, list):
        raise _entry_error(path, where, f": 'sentences' is {_kind(sentences)}, not a list")
    out = []
    for i, sentence in enumerate(sentences, 1):
        if not isinstance(sentence, dict):
            raise _entry_error(path, f"{where} sentence {i}", f" is {_kind(sentence)}, not an object")
        if "raw" in sentence:
            raw = sentence["raw"]
            if not isinstance(raw, str):
                raise _entry_error(path, f"{where} sentence {i}", f": 'raw' is {_kind(raw)}, not a string")
            out.append(raw.strip())
            continue
        tokens = sentence.get("tokens", [])
        odd = [t for t in tokens if not isinstance(t, str)] if isinstance(tokens, list) else [tokens]
        if odd:
            what = f"holds {_kind(odd[0])}" if isinstance(tokens, list) else f"is {_kind(tokens)}"
            raise _entry_error(path, f"{where} sentence {i}", f": 'tokens' {what}, not a list of strings")
        out.append(" ".join(tokens).strip())
    return folder, name, out


def open_karpathy_json(path: str | Path, images_dir: str | Path | None = None, split: str = "test",
                       transform: Callable | None = None) -> CaptionDataset:
    """A Karpathy split file (`dataset_flickr30k.json`, `dataset_coco.json`, ...) with its images:
    `images_dir`, else `flickr30k-images/` or `images/` beside the file, else the file's folder."""
    path = Path(path)
    table, _ = read_karpathy(path, split)
    if images_dir is None:
        candidates = [path.parent / "flickr30k-images", path.parent / "images", path.parent]
        images_dir = next((c for c in candidates if (c / table.images[0]).exists()), path.parent)
    name = path.stem.removeprefix("dataset_")
    return CaptionDataset.from_table(table, images_dir, transform, name=name, split=split, layout=f"karpathy-{name}")


def open_retrieval_dataset(key: str, root: str | Path, split: str = "test",
                           transform: Callable | None = None) -> CaptionDataset:
    """The caption dataset of catalogue key `key` (flickr30k, mscoco, flickr8k, or any caption CSV)."""
    root = Path(root)
    if key in _JSON:
        table, _ = read_karpathy(root / _JSON[key], split)
        images = root / "flickr30k-images" if key == "flickr30k" else root
        if not images.is_dir() or not (images / table.images[0]).exists():
            images = root / "images" if (root / "images").is_dir() else images
        return CaptionDataset.from_table(table, images, transform, name=key, split=split, layout=f"karpathy-{key}")
    return _open_flickr8k(key, root, split, transform)


_FLICKR8K_CAPTIONS = ("captions.txt", "captions.csv", "Flickr8k.token.txt", "Flickr8k_text/Flickr8k.token.txt")


def _open_flickr8k(key: str, root: Path, split: str, transform: Callable | None) -> CaptionDataset:
    """Kaggle's `captions.txt` + `Images/`, or the original `Flickr8k.token.txt` + `Flicker8k_Dataset/`.

    Where Flickr8k's own split list is there (`Flickr_8k.testImages.txt`, 1,000 images), the split
    is read from it; Kaggle's copy has none, so every image is evaluated and the layout says so.
    """
    csv = root if root.is_file() else next((root / n for n in _FLICKR8K_CAPTIONS if (root / n).is_file()), None)
    if csv is None:
        raise DatasetLayoutError(f"missing file {root / 'captions.txt'}\nexpected layout:\n{KARPATHY_LAYOUT}")
    table = read_caption_csv(csv)
    listing = find_split_list(csv.parent, split)
    if listing is not None:
        keep = read_split_list(listing)
        table = _only(table, keep)
        if not table.images:
            raise DatasetFormatError(f"{listing}: none of its {len(keep)} images has a caption in {csv}")
        layout = f"{key} ({listing.name})"
    else:  # every image, whatever split was asked for: the dataset says so (split "all"), never "test"
        layout, split = f"{key} (no split list: every captioned image)", "all"
    images = default_images_dir(csv, table.images[0] if table.images else None)
    return CaptionDataset.from_table(table, images, transform, name=key, split=split, layout=layout)


def retrieval_split(key: str, root: str | Path, split: str = "test") -> str:
    """The split a retrieval dataset of catalogue key `key` under `root` gives when `split` is asked for, read from
    which files are there (no image, no caption): `split` for Karpathy's JSON (Flickr30k, MSCOCO) and for Flickr8k
    with its split list (`Flickr_8k.testImages.txt`: the 1,000 test images, Karpathy's Flickr8k test split); "all"
    for a Flickr8k without one (Kaggle's `captions.txt`), which `_open_flickr8k` reads whole. The suite names its
    cell by it: a cell of every image is not CLIP_benchmark's ``flickr8k`` (the Karpathy 1k test split)."""
    root = Path(root)
    if key in _JSON:
        return split
    csv = root if root.is_file() else next((root / n for n in _FLICKR8K_CAPTIONS if (root / n).is_file()), None)
    if csv is None:
        return split  # opening it says what is missing
    return split if find_split_list(csv.parent, split) is not None else "all"


def _only(table: CaptionTable, names: set[str]) -> CaptionTable:
    """The part of `table` whose images are in `names`, re-indexed."""
    out = CaptionTable(table.path, bad_rows=table.bad_rows)
    index: dict[int, int] = {}
    for caption, old in zip(table.captions, table.caption_image, strict=True):
        if table.images[old] not in names:
            continue
        if old not in index:
            index[old] = len(out.images)
            out.images.append(table.images[old])
        out.captions.append(caption)
        out.caption_image.append(index[old])
    return out
