"""One embedding loop (`clipforge.data.files.embed_files`) feeding pluggable writers; one bad-image record."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from clipforge.data.base import BadImage
from clipforge.data.files import CollectingWriter, ImageFileReader, embed_files, encode_files
from clipforge.library import Library
from clipforge.library.export import export_embeddings

SRC = Path(__file__).resolve().parents[2] / "src" / "clipforge"


def test_no_loop_over_the_reader_outside_data_files() -> None:
    """`read_batches` is driven by `embed_files` alone: every writer goes through the one loop."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path == SRC / "data" / "files.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name == "read_batches":
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []


class _Counting(CollectingWriter):
    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.batches = 0

    def write(self, batch) -> None:
        self.batches += 1
        super().write(batch)


def test_dedupe_embeds_repeated_bytes_once_and_skips_held(tmp_path, tiny_encoder, images_factory) -> None:
    photos = images_factory(tmp_path / "p", 3)
    twin = tmp_path / "p" / "twin.png"
    twin.write_bytes(photos[0].read_bytes())
    calls: list[int] = []

    def encode(pixels):
        calls.append(len(pixels))
        return tiny_encoder.encode_pixels(pixels)

    reader = ImageFileReader([*photos, twin], tiny_encoder.preprocess, hash=True)
    writer = _Counting(tiny_encoder.embed_dim)
    embed_files(reader, encode, writer, dim=tiny_encoder.embed_dim, batch_size=8, workers=0)
    assert calls == [3] and len(writer.files) == 3  # the twin's bytes were embedded once
    held = {writer.files[1].sha256}
    calls.clear()
    again = _Counting(tiny_encoder.embed_dim)
    embed_files(ImageFileReader(photos, tiny_encoder.preprocess, hash=True), encode, again,
                dim=tiny_encoder.embed_dim, batch_size=8, workers=0, held=held)
    assert calls == [2] and {f.sha256 for f in again.files} == {f.sha256 for f in writer.files} - held


def test_bad_image_has_one_record_shape_everywhere(tmp_path, tiny_encoder, images_factory,
                                                   bad_files_factory) -> None:
    photos = images_factory(tmp_path / "photos", 2, formats=("jpg",))
    bad_files_factory(tmp_path / "photos", photos[0])
    files = sorted(str(p) for p in (tmp_path / "photos").iterdir())
    encoded = encode_files(files, tiny_encoder.batch_encoder, workers=0)
    with Library(tmp_path / "lib", tiny_encoder) as library:
        added = library.add(tmp_path / "photos", workers=0, progress=False)
        stats = library.stats()
    exported = export_embeddings([tmp_path / "photos"], tmp_path / "out", tiny_encoder, workers=0, progress=False)
    assert all(isinstance(b, BadImage) for b in [*encoded.bad, *added.bad, *exported.bad])
    shapes = [sorted((d["path"], d["reason"]) for d in rows) for rows in (
        [b.to_dict() for b in encoded.bad], added.to_dict()["failures"], exported.to_dict()["failures"],
        stats["failures"])]
    assert len(shapes[0]) == 4 and all(shape == shapes[0] for shape in shapes)
    assert encoded.vectors.shape == (2, tiny_encoder.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(encoded.vectors, axis=1), 1.0, atol=1e-5)
