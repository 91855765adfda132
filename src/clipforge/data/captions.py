"""Caption CSVs (`image,caption`, several rows per image) and the retrieval dataset over them.

Retrieval metrics need the grouping, not just rows: an image query hits when ANY of its
captions ranks in the top k, and a caption query hits when its own image does. So the CSV is
turned into unique images + captions + both index maps. Malformed rows are reported with their
CSV line number (skipped by default, fatal with strict=True); images missing on disk are
dropped together with their captions so the two sides stay consistent.

A path that is no caption CSV is refused in one line naming it and what it is instead: a folder
(with the caption files it holds that would do, e.g. Flickr8k's `captions.txt`), an image or other
binary file, text that is not UTF-8 (with the line), never a bare codec error or "missing file"
for a folder that exists.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clipforge.regular_file import special_kind

from .base import DatasetFormatError, DatasetLayoutError, LabelledDataset
from .flickr_text import FLICKR8K_IMAGE_DIRS, is_token_file, read_token_file

__all__ = ["CAPTION_LAYOUT", "MAX_CAPTION", "CaptionDataset", "CaptionTable", "read_caption_csv"]

# The longest caption read: characters of a CSV field (csv's own field limit, which refuses a longer one, most often
# an unbalanced quote that made the rest of the file one field) or of a token file's line, bytes of a WebDataset
# shard's caption member. Training reads at most a context's tokens of a caption (77 for CLIP), a few hundred
# characters: a longer "caption" is no caption, and read whole it cost 115x its size (audit 62 #6).
MAX_CAPTION = 131_072

CAPTION_LAYOUT = """\
  captions.csv with a header row naming an image column and a caption column:
      image,caption
      1000268201_693b08cb0e.jpg,A child in a pink dress is climbing up a set of stairs .
      1000268201_693b08cb0e.jpg,A girl going into a wooden building .
  (the header may be split by tab, | or ; instead: image_name| comment_number| comment)
  or Flickr's own caption file (Flickr8k.token.txt), no header: <image>#<n><TAB><caption>
  images in IMAGES_DIR, paths relative to it (default: the first of images/, Images/, Flicker8k_Dataset/,
  flickr30k_images/ beside the CSV that holds its first image, else the CSV's folder)"""

_IMAGE_COLUMNS = ("image", "image_name", "filename", "file", "filepath", "path")
_CAPTION_COLUMNS = ("caption", "comment", "text", "title")


@dataclass
class CaptionTable:
    path: Path
    images: list[str] = field(default_factory=list)       # unique, first-appearance order
    captions: list[str] = field(default_factory=list)
    caption_image: list[int] = field(default_factory=list)  # caption index -> image index
    bad_rows: list[tuple[int, str]] = field(default_factory=list)  # (CSV line number, reason)


def _column(header: list[str], wanted: str | None, aliases: tuple[str, ...], path: Path) -> int:
    lowered = [h.strip().lower() for h in header]
    for name in ([wanted.lower()] if wanted else list(aliases)):
        if name in lowered:
            return lowered.index(name)
    raise DatasetFormatError(
        f"{path}: header {header} has no {wanted or aliases[0]!r} column (accepted: {wanted or list(aliases)})\n"
        f"expected layout:\n{CAPTION_LAYOUT}"
    )


_EXPECTED = "expected a UTF-8 CSV file of image,caption rows (e.g. captions.csv)"
_CANDIDATE_SUFFIXES = (".csv", ".tsv", ".txt")
_SIGNATURES = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
               (b"RIFF", "a RIFF file (WebP image?)"), (b"BM", "a BMP image"), (b"PK\x03\x04", "a zip archive"),
               (b"\x1f\x8b", "a gzip file"), (b"%PDF", "a PDF file"), (b"\xff\xfe", "UTF-16 text"),
               (b"\xfe\xff", "UTF-16 text"))


_DELIMITERS = (",", "\t", "|", ";")  # Kaggle's Flickr30k `results.csv` is `image_name| comment_number| comment`


def _header_delimiter(path: Path) -> str | None:
    """The delimiter by which the first line of `path` names an image column and a caption column."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            first = f.readline(4096)
    except (OSError, UnicodeDecodeError):
        return None
    for delimiter in _DELIMITERS:
        names = {h.strip().lower() for h in first.strip().split(delimiter)}
        if names & set(_IMAGE_COLUMNS) and names & set(_CAPTION_COLUMNS):
            return delimiter
    return None


def _header_fits(path: Path) -> bool:
    """Whether the first line of `path` names an image column and a caption column."""
    return _header_delimiter(path) is not None or is_token_file(path)


def _caption_files_in(folder: Path) -> list[Path]:
    """Regular files in `folder` whose header would do as a caption CSV (at most 3, `caption*` first)."""
    try:
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if e.name.lower().endswith(_CANDIDATE_SUFFIXES)
                           and not e.name.startswith(".") and e.is_file())
    except OSError:
        return []
    names.sort(key=lambda n: "caption" not in n.lower())
    return [folder / n for n in names[:50] if _header_fits(folder / n)][:3]


def _not_a_caption_file(path: Path) -> DatasetFormatError | DatasetLayoutError | None:
    """The error for a `path` that cannot be a caption CSV at all (absent, a folder, a FIFO), else None."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if os.path.lexists(path):  # a dangling or looping link, a folder that cannot be entered
            return DatasetLayoutError(f"{path} cannot be opened ({exc.strerror}): {_EXPECTED}")
        return DatasetLayoutError(f"missing file {path}\nexpected layout:\n{CAPTION_LAYOUT}")
    if os.path.isdir(path):
        found = _caption_files_in(path)
        hint = f"; it holds {', '.join(f.name for f in found)}: did you mean {found[0]}?" if found else ""
        return DatasetLayoutError(f"{path} is a folder, not a caption file: {_EXPECTED}{hint}")
    kind = special_kind(info.st_mode)
    if kind is not None:
        return DatasetFormatError(f"{path} is {kind}, not a caption file: {_EXPECTED}")
    return None


def _binary_kind(path: Path) -> str | None:
    """What `path` is when its first bytes say it is no text file ("a PNG image"), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    return "a binary file" if b"\0" in head else None


def _first_bad_utf8_line(path: Path) -> int:
    """The 1-based number of the first line of `path` that is not UTF-8 (0 when none is)."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def read_caption_csv(
    path: str | Path,
    image_column: str | None = None,
    caption_column: str | None = None,
    strict: bool = False,
    delimiter: str = ",",
) -> CaptionTable:
    path = Path(path)
    refusal = _not_a_caption_file(path)
    if refusal is not None:
        raise refusal
    binary = _binary_kind(path)
    if binary is not None:
        raise DatasetFormatError(f"{path} is {binary}, not a caption file: {_EXPECTED}")
    table = CaptionTable(path)
    index: dict[str, int] = {}
    try:
        if image_column is None and caption_column is None and is_token_file(path):
            rows, table.bad_rows = read_token_file(path, MAX_CAPTION)  # Flickr8k.token.txt: `<image>#<n><TAB><caption>`
            for image, caption in rows:
                index.setdefault(image, len(index))
                if index[image] == len(table.images):
                    table.images.append(image)
                table.captions.append(caption)
                table.caption_image.append(index[image])
            return _checked(table, strict)
        if delimiter == "," and image_column is None and caption_column is None:
            delimiter = _header_delimiter(path) or delimiter  # a header split by "|", tab or ";" says so
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if not header:
                raise DatasetFormatError(f"{path} is empty\nexpected layout:\n{CAPTION_LAYOUT}")
            img_col = _column(header, image_column, _IMAGE_COLUMNS, path)
            cap_col = _column(header, caption_column, _CAPTION_COLUMNS, path)
            start = reader.line_num + 1
            for row in reader:
                lineno, start = start, reader.line_num + 1
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) <= max(img_col, cap_col):
                    table.bad_rows.append((lineno, f"{len(row)} fields, expected {len(header)}"))
                    continue
                image, caption = row[img_col].strip(), row[cap_col].strip()
                if len(row) > len(header) and cap_col == len(header) - 1:
                    caption = delimiter.join(row[cap_col:]).strip()  # unquoted commas in the last column
                if not image or not caption:
                    table.bad_rows.append((lineno, "empty image" if not image else "empty caption"))
                    continue
                if image not in index:
                    index[image] = len(table.images)
                    table.images.append(image)
                table.captions.append(caption)
                table.caption_image.append(index[image])
    except UnicodeDecodeError as exc:
        from clipforge.text.labels import gb18030_advice

        with open(path, "rb") as handle:  # Excel on Chinese Windows saves a CSV in GBK/GB18030: said so
            advice = gb18030_advice(Path(path), handle.read((1 << 20) + 1))
        looks, how = (f" but {advice[0]}", f"; {advice[1]}") if advice else ("", "")
        raise DatasetFormatError(f"{path}: line {_first_bad_utf8_line(path)} is not UTF-8 text (byte "
                                 f"0x{exc.object[exc.start]:02x}){looks}: {_EXPECTED}{how}") from exc
    except csv.Error as exc:
        raise DatasetFormatError(f"{path}: not readable as CSV ({exc}): {_EXPECTED}") from exc
    return _checked(table, strict)


def _checked(table: CaptionTable, strict: bool) -> CaptionTable:
    """`table` once its bad rows are told (fatal with `strict`) and it has a caption at all."""
    path = table.path
    if table.bad_rows:
        listing = "; ".join(f"line {n}: {why}" for n, why in table.bad_rows[:10])
        message = f"{path}: {len(table.bad_rows)} bad rows ({listing})"
        if strict:
            raise DatasetFormatError(message)
        warnings.warn(message + " - skipped", stacklevel=2)
    if not table.captions:
        raise DatasetFormatError(f"{path}: no usable caption rows\nexpected layout:\n{CAPTION_LAYOUT}")
    return table


def default_images_dir(csv_path: Path, first_image: str | None = None) -> Path:
    """`images/` beside the captions, else Flickr8k's own folders (Kaggle's `Images/`, the original
    `Flicker8k_Dataset/` beside the captions or beside their `Flickr8k_text/`) or Kaggle's Flickr30k
    `flickr30k_images/` (beside its `results.csv`), else their folder. Given the table's `first_image`, the
    first of these that holds it: a CSV naming `Images/x.jpg` beside an `Images/` folder is relative to its
    own folder (every image was "missing" as `Images/Images/x.jpg`)."""
    here = csv_path.parent
    candidates = [
        base / name
        for base in (here, here.parent)
        for name in ("images", *FLICKR8K_IMAGE_DIRS, "flickr30k_images", "flickr30k-images")
        if (base / name).is_dir() and (base is here or here.name == "Flickr8k_text")
    ]
    if first_image is not None:
        holding = next((folder for folder in (*candidates, here) if (folder / first_image).is_file()), None)
        if holding is not None:
            return holding
    return candidates[0] if candidates else here


def _first(table: CaptionTable) -> str | None:
    return table.images[0] if table.images else None


class CaptionDataset(LabelledDataset):
    """Unique images of a caption CSV, yielding `(image, image_index)`, plus their captions.

    `captions[j]` belongs to image `text_to_image[j]`; `image_to_text[i]` lists caption indices
    of image `i`; `images[i]` is the image path (also `samples[i][0]`).
    """

    def __init__(
        self,
        csv_path: str | Path,
        images_dir: str | Path | None = None,
        transform: Callable | None = None,
        strict: bool = False,
        image_column: str | None = None,
        caption_column: str | None = None,
    ) -> None:
        csv_path = Path(csv_path)
        table = read_caption_csv(csv_path, image_column, caption_column, strict=strict)
        folder = Path(images_dir) if images_dir is not None else default_images_dir(csv_path, _first(table))
        self._build(table, folder, transform, source=str(csv_path))
        self.csv_path = csv_path

    @classmethod
    def from_table(cls, table: CaptionTable, images_dir: str | Path, transform: Callable | None = None,
                   name: str = "captions", split: str = "all", layout: str = "captions") -> CaptionDataset:
        """A retrieval dataset from captions read elsewhere (Karpathy's JSON splits, say)."""
        self = cls.__new__(cls)
        self._build(table, Path(images_dir), transform, source=str(table.path), name=name, split=split,
                    layout=layout)
        self.csv_path = table.path
        return self

    def _build(self, table: CaptionTable, folder: Path, transform: Callable | None, *, source: str,
               name: str = "captions", split: str = "all", layout: str = "caption-csv") -> None:
        if not folder.is_dir():
            raise DatasetLayoutError(f"missing folder {folder} (images of {source})\nexpected layout:\n{CAPTION_LAYOUT}")
        keep: dict[int, int] = {}
        missing = []
        for i, image in enumerate(table.images):
            if (folder / image).is_file():
                keep[i] = len(keep)
            else:
                missing.append(str(folder / image))
        self.images = [str(folder / table.images[i]) for i in keep]
        self.captions: list[str] = []
        self.text_to_image: list[int] = []
        self.image_to_text: list[list[int]] = [[] for _ in keep]
        for caption, old in zip(table.captions, table.caption_image, strict=True):
            if old in keep:
                self.image_to_text[keep[old]].append(len(self.captions))
                self.text_to_image.append(keep[old])
                self.captions.append(caption)
        self.bad_rows = table.bad_rows
        LabelledDataset.__init__(self, [(p, i) for i, p in enumerate(self.images)],
                                 [Path(p).name for p in self.images], name=name, split=split, root=folder,
                                 transform=transform, missing=missing, layout=layout)
