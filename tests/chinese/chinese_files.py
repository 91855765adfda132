"""Files a Chinese-writing user's tests share: small solid photos under Chinese names, and a class-folder dataset
with its Chinese class-name file."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

COLOURS = ((220, 20, 20), (20, 200, 40), (30, 60, 230))


def write_photos(folder: Path, names: list[str]) -> list[Path]:
    """32x32 photos of red, green and blue in turn, at `folder / name` (subfolders made)."""
    paths = []
    for name, colour in zip(names, COLOURS * 4, strict=False):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), colour).save(path)
        paths.append(path)
    return paths


def folder_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """A class-folder dataset of three classes (two photos each) and its Chinese class-name file."""
    root = tmp_path / "数据集"
    for name in ("bird", "cat", "dog"):
        write_photos(root / name, ["0.png", "1.png"])
    names = tmp_path / "类名.txt"
    names.write_text("鸟\n猫\n狗\n", encoding="utf-8")
    return root, names
