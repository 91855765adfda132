"""Bad images through a real multi-worker DataLoader, zip reading across workers, collate details."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipforge.data import BadSample, BadSampleLog, ImageFolder, ZipImageFolder, make_loader, skip_bad_collate
from clipforge.image import build_preprocess


def _folder_with_bad_images(root: Path, make_image) -> set[str]:
    for i in range(4):
        make_image(root / "a" / f"good{i}.jpg", color=(10 * i, 0, 0))
        make_image(root / "b" / f"good{i}.png", color=(0, 10 * i, 0))
    full = (root / "a" / "good0.jpg").read_bytes()
    (root / "a" / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "b" / "text.jpg").write_text("this is not an image")
    (root / "b" / "empty.png").write_bytes(b"")
    return {"truncated.jpg", "text.jpg", "empty.png"}


def test_bad_images_skipped_and_counted_with_two_workers(tmp_path, make_image):
    bad_names = _folder_with_bad_images(tmp_path, make_image)
    ds = ImageFolder(tmp_path, transform=build_preprocess(16))
    assert len(ds) == 11
    log = BadSampleLog()
    seen_indices, seen_labels = [], []
    for batch in make_loader(ds, batch_size=4, workers=2):
        log.add(batch.errors)
        assert batch.images.shape[1:] == (3, 16, 16) or len(batch.indices) == 0
        seen_indices += batch.indices.tolist()
        seen_labels += batch.labels.tolist()
    good = [i for i, (p, _) in enumerate(ds.samples) if Path(p).name not in bad_names]
    assert seen_indices == good  # every good sample exactly once, in order
    assert seen_labels == [ds.targets[i] for i in good]
    assert log.count == 3
    assert {Path(e.source).name for e in log.examples} == bad_names
    report = log.as_dict()
    assert report["skipped"] == 3 and sum(report["reasons"].values()) == 3
    assert any("empty" in reason for reason in report["reasons"])
    assert log.summary().startswith("3 bad images skipped (")


def test_zip_members_read_in_two_workers_match_direct_decoding(tmp_path):
    path = tmp_path / "imgs.zip"
    colors = {}
    with zipfile.ZipFile(path, "w") as z:
        for cls in ("x", "y"):
            for i in range(5):
                color = (i * 40, 100 if cls == "x" else 200, 7 * i)
                buf = io.BytesIO()
                Image.new("RGB", (16, 16), color).save(buf, "PNG")
                z.writestr(f"{cls}/{i}.png", buf.getvalue())
                colors[f"{cls}/{i}.png"] = color
    ds = ZipImageFolder(path, transform=build_preprocess(16))
    ds.load_image(0)  # open the handle in the parent first: workers must not share it
    expected = torch.stack([build_preprocess(16)(Image.new("RGB", (16, 16), colors[m])) for m, _ in ds.samples])
    got = torch.zeros_like(expected)
    for batch in make_loader(ds, batch_size=3, workers=2):
        assert not batch.errors
        got[batch.indices] = batch.images
    assert torch.equal(got, expected)


def test_shuffle_is_seeded(tmp_path, make_image):
    for i in range(12):
        make_image(tmp_path / "c" / f"{i:02d}.png")
    ds = ImageFolder(tmp_path, transform=build_preprocess(8), min_classes=1)

    def order(seed):
        return [i for b in make_loader(ds, 5, shuffle=True, seed=seed) for i in b.indices.tolist()]

    assert order(3) == order(3) and sorted(order(3)) == list(range(12)) and order(3) != order(4)


def test_collate_all_bad_and_plain_items():
    errors = [BadSample(0, "a.jpg", "empty"), BadSample(1, "b.jpg", "empty")]
    batch = skip_bad_collate(errors)
    assert len(batch.indices) == 0 and batch.errors == errors
    plain = skip_bad_collate([(torch.ones(2), 1), errors[0], (torch.zeros(2), 0)])
    assert plain.labels.tolist() == [1, 0] and plain.indices.tolist() == [-1, -1]
    assert np.array_equal(plain.images.numpy(), np.array([[1.0, 1.0], [0.0, 0.0]]))


def test_zip_reader_reopens_after_fork_and_pickles_without_handle(tmp_path, monkeypatch):
    import os
    import pickle

    from clipforge.data._decode import ZipReader

    path = tmp_path / "one.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a/x.txt", b"hello")
    reader = ZipReader(path)
    first = reader.handle
    assert reader.handle is first and reader.read("a/x.txt") == b"hello"
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._handle is None and clone.read("a/x.txt") == b"hello"
    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)  # as seen from a forked worker
    assert reader.handle is not first and reader.read("a/x.txt") == b"hello"


def test_registry_names():
    import pytest

    from clipforge.data import available_datasets, open_dataset

    assert {"cars", "cifar10", "cifar100", "cub", "folder", "imagenet", "mnist", "voc2007"} <= set(available_datasets())
    with pytest.raises(KeyError, match="unknown dataset 'nope'; available: birdsnap, caltech101, cars"):
        open_dataset("nope", ".", "test")


def test_decode_all_into_memory_then_train_pairs(tmp_path, make_image):
    from clipforge.data import ArrayDataset, LabelledImageText, Tokenizer, TrainTransform, decode_all

    for cls in ("cat", "dog"):
        for i in range(3):
            make_image(tmp_path / cls / f"{i}.png", color=(50 * i, 100 if cls == "cat" else 10, 0), size=(8, 8))
    (tmp_path / "dog" / "bad.png").write_bytes(b"nope")
    folder = ImageFolder(tmp_path)
    memory = decode_all(folder, workers=2, batch_size=2, progress=False)
    assert isinstance(memory, ArrayDataset) and memory.images.shape == (6, 8, 8, 3)
    assert memory.targets == [0, 0, 0, 1, 1, 1] and memory.classnames == ["cat", "dog"]
    assert [Path(e.source).name for e in memory.skipped] == ["bad.png"]
    for i, (path, _) in enumerate(memory.samples):
        assert np.array_equal(memory.images[i], np.asarray(Image.open(path).convert("RGB")))
    resized = decode_all(folder, size=4, progress=False)
    assert resized.images.shape == (6, 4, 4, 3)
    pairs = LabelledImageText(memory, transform=TrainTransform(8), tokenizer=Tokenizer(16))
    image, tokens = pairs[4]
    assert image.shape == (3, 8, 8) and tokens.shape == (16,)


def test_datasets_survive_pickling_for_spawned_workers(tmp_path):
    import pickle

    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w") as z:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
        z.writestr("c/0.png", buf.getvalue())
    ds = ZipImageFolder(path, transform=build_preprocess(8), min_classes=1)
    ds.load_image(0)
    wrapped = make_loader(ds, batch_size=1).dataset
    clone = pickle.loads(pickle.dumps(wrapped))
    assert torch.equal(clone[0].item[0], ds[0][0]) and clone.classnames == ["c"]


def test_distributed_sampler_splits_map_style_data(tmp_path, make_image):
    from torch.utils.data.distributed import DistributedSampler

    for i in range(7):
        make_image(tmp_path / "k" / f"{i}.png")
    ds = ImageFolder(tmp_path, transform=build_preprocess(8), min_classes=1)
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=1, drop_last=True)
        seen.append([i for b in make_loader(ds, 2, sampler=sampler) for i in b.indices.tolist()])
    assert len(seen[0]) == len(seen[1]) == 3 and not set(seen[0]) & set(seen[1])
