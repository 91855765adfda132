"""Video datasets through given frames, and Hateful Memes: the CLIP paper's remaining zero-shot sets.

clipforge decodes no video. The paper scored UCF101 on each video's middle frame and Kinetics-700
on frames too; these adapters read one frame per video that the user extracted (e.g.
``ffmpeg -ss <middle> -i v.avi -frames:v 1 v.jpg``), named after the video, beside the official
split files. Hateful Memes is read from its jsonl files; the paper scores it by ROC AUC on the
500 images of ``dev_seen.jsonl`` (the test labels are not public).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

from .base import DatasetFormatError, DatasetLayoutError, LabelledDataset
from .native import find_base, read_lines, split_choice

__all__ = ["UCF101Frames", "Kinetics700Frames", "HatefulMemes"]

UCF_LAYOUT = "  ROOT/ucf101/ucfTrainTestlist/{classInd.txt, testlist01.txt, trainlist01.txt}\n" \
             "  ROOT/ucf101/frames/<Class>/<video name without .avi>.jpg   (one frame per video, e.g. the middle one)"
KINETICS_LAYOUT = "  ROOT/kinetics700/annotations/{train,validate}.csv (label,youtube_id,time_start,time_end,split)\n" \
                  "  ROOT/kinetics700/frames/<label>/<youtube_id>_<start:06d>_<end:06d>.jpg"
MEMES_LAYOUT = "  ROOT/hateful_memes/{train,dev_seen}.jsonl ({\"id\", \"img\": \"img/NNNNN.png\", \"label\"}), img/*.png"

_FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _frame(folder: Path, stem: str) -> Path | None:
    for ext in _FRAME_EXTENSIONS:
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    return None


class UCF101Frames(LabelledDataset):
    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "test": "test"}, "ucf101")
        base = find_base(root, ["ucf101", "UCF101"], "ucfTrainTestlist", UCF_LAYOUT)
        lists = base / "ucfTrainTestlist"
        classes = []
        for line in read_lines(lists / "classInd.txt", UCF_LAYOUT):
            number, _, name = line.partition(" ")
            if not number.isdigit() or int(number) != len(classes) + 1:
                raise DatasetFormatError(f"{lists / 'classInd.txt'}: {line!r} breaks the 1..101 numbering")
            classes.append(name.strip())
        index = {c: i for i, c in enumerate(classes)}
        samples, missing = [], []
        for line in read_lines(lists / f"{split}list01.txt", UCF_LAYOUT):
            video = line.split()[0]
            cls, _, name = video.partition("/")
            if cls not in index:
                raise DatasetFormatError(f"{lists / f'{split}list01.txt'}: {video!r} names no class of classInd.txt")
            frame = _frame(base / "frames" / cls, os.path.splitext(name)[0])
            if frame is None:
                missing.append(str(base / "frames" / cls / (os.path.splitext(name)[0] + ".jpg")))
            else:
                samples.append((str(frame), index[cls]))
        super().__init__(samples, classes, name="ucf101", split=split, root=base, transform=transform,
                         missing=missing, layout="ucf101-frames")


class Kinetics700Frames(LabelledDataset):
    """Classes: the sorted labels of the annotation files (train and validate together)."""

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "val": "validate", "test": "validate",
                                     "validate": "validate"}, "kinetics700")
        base = find_base(root, ["kinetics700", "kinetics-700"], "annotations", KINETICS_LAYOUT)
        rows: dict[str, list[dict[str, str]]] = {}
        for name in ("train", "validate"):
            path = base / "annotations" / f"{name}.csv"
            if path.is_file():
                with open(path, newline="", encoding="utf-8") as f:
                    rows[name] = list(csv.DictReader(f))
        if split not in rows:
            raise DatasetLayoutError(f"missing file {base / 'annotations' / f'{split}.csv'}\n"
                                     f"expected layout:\n{KINETICS_LAYOUT}")
        classes = sorted({r["label"] for table in rows.values() for r in table})
        index = {c: i for i, c in enumerate(classes)}
        samples, missing = [], []
        for r in rows[split]:
            stem = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
            frame = _frame(base / "frames" / r["label"], stem)
            if frame is None:
                missing.append(str(base / "frames" / r["label"] / f"{stem}.jpg"))
            else:
                samples.append((str(frame), index[r["label"]]))
        super().__init__(samples, classes, name="kinetics700", split=split, root=base, transform=transform,
                         missing=missing, layout="kinetics-frames")


class HatefulMemes(LabelledDataset):
    CLASSES = ["not hateful", "hateful"]

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "test": "dev_seen", "val": "dev_seen",
                                     "dev_seen": "dev_seen", "dev_unseen": "dev_unseen"}, "hateful_memes")
        base = find_base(root, ["hateful_memes", "data"], f"{split}.jsonl", MEMES_LAYOUT)
        samples, missing = [], []
        for lineno, line in enumerate(read_lines(base / f"{split}.jsonl", MEMES_LAYOUT), 1):
            try:
                entry = json.loads(line)
                rel, label = str(entry["img"]), int(entry["label"])
            except (ValueError, KeyError, TypeError) as exc:
                raise DatasetFormatError(f"{base / f'{split}.jsonl'} line {lineno}: expected "
                                         f"{{\"img\", \"label\"}} ({exc})") from exc
            path = base / rel
            (samples if path.is_file() else missing).append((str(path), label))
        super().__init__(samples, self.CLASSES, name="hateful_memes", split=split, root=base, transform=transform,
                         missing=[p for p, _ in missing], layout="hateful-memes-jsonl")
