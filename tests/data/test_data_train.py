"""Training data: augmentation, image-text datasets (captions, caption folders, templates), WebDataset shards."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.data import (
    BadImage,
    CaptionCsvImageText,
    FolderCaptionImageText,
    ImageFolder,
    LabelledImageText,
    RandomResizedCrop,
    Tokenizer,
    TrainTransform,
    WebDatasetImageText,
    make_loader,
)
from clipforge.image import build_preprocess
from clipforge.text import tokenize

CTX = 16


def _tok(text: str) -> torch.Tensor:
    return tokenize(text, context_length=CTX, truncate=True)[0]


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


# ---------------------------------------------------------------- augmentation


def test_random_resized_crop_respects_scale_and_ratio():
    crop = RandomResizedCrop(32)  # defaults: scale 0.9-1.0, ratio 3/4-4/3
    rng = random.Random(0)
    for _ in range(200):
        left, top, w, h = crop.params(120, 100, rng)
        assert 0 <= left <= 120 - w and 0 <= top <= 100 - h
        assert 0.9 * 12000 * 0.97 <= w * h <= 12000  # rounding of w, h costs < 3%
        assert 3 / 4 - 0.03 <= w / h <= 4 / 3 + 0.03
    # a 40:1 strip never fits the ratio range: centre crop clamped to 4/3
    assert crop.params(400, 10, rng) == ((400 - 13) // 2, 0, 13, 10)


def test_train_transform_is_reproducible_and_flip_off_by_default():
    image = _noise(60, 45)
    t = TrainTransform(24, scale=(0.5, 1.0))
    a, b = t(image, random.Random(7)), t(image, random.Random(7))
    assert a.shape == (3, 24, 24) and torch.equal(a, b)
    assert not torch.equal(a, t(image, random.Random(8)))
    # left half red, right half blue: without flips red always stays left
    halves = Image.new("RGB", (40, 40), (255, 0, 0))
    halves.paste((0, 0, 255), (20, 0, 40, 40))
    for seed in range(20):
        pixels = np.asarray(t.pixels(halves, random.Random(seed)))
        assert pixels[12, 1, 0] > 200 and pixels[12, -2, 2] > 200
    flipping = TrainTransform(24, hflip=True)
    flipped = [np.asarray(flipping.pixels(halves, random.Random(s)))[12, 1, 2] > 200 for s in range(20)]
    assert 0 < sum(flipped) < 20


def test_full_crop_equals_eval_preprocessing():
    image = _noise(16, 16, seed=3)
    t = TrainTransform(16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.equal(t(image, random.Random(0)), build_preprocess(16)(image))


# ---------------------------------------------------------------- image-text datasets


@pytest.fixture()
def caption_csv(tmp_path, make_image) -> Path:
    rows = ["image,caption"]
    for i in range(6):
        make_image(tmp_path / "images" / f"{i}.jpg", color=(40 * i, 10, 10), size=(20, 16))
        rows += [f"{i}.jpg,image {i} caption {c}" for c in range(5)]
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "captions.csv"


def test_caption_csv_random_caption_per_epoch_seeded(caption_csv):
    ds = CaptionCsvImageText(caption_csv, transform=TrainTransform(16), tokenizer=Tokenizer(CTX), seed=1)
    assert len(ds) == 6

    def captions(epoch: int, seed: int = 1) -> list[str]:
        ds.seed, ds.epoch = seed, epoch
        out = []
        for i in range(len(ds)):
            image, tokens = ds[i]
            assert image.shape == (3, 16, 16)
            match = [c for c in ds.captions[i] if torch.equal(tokens, _tok(c))]
            assert len(match) == 1
            out.append(match[0])
        return out

    first = captions(0)
    assert first == captions(0)
    assert first != captions(1) and first != captions(0, seed=2)
    assert all(c.startswith(f"image {i} ") for i, c in enumerate(first))


def test_workers_do_not_change_samples(caption_csv):
    ds = CaptionCsvImageText(caption_csv, transform=TrainTransform(16, scale=(0.3, 1.0)), tokenizer=Tokenizer(CTX))
    ds.set_epoch(3)

    def run(workers: int):
        batches = list(make_loader(ds, batch_size=4, workers=workers, shuffle=True, seed=5))
        return torch.cat([b.images for b in batches]), torch.cat([b.labels for b in batches])

    images0, tokens0 = run(0)
    images2, tokens2 = run(2)
    assert torch.equal(images0, images2) and torch.equal(tokens0, tokens2)


def test_folder_per_caption(tmp_path, make_image):
    make_image(tmp_path / "It is photo with cup" / "1.jpg")
    make_image(tmp_path / "a_red_car" / "1.png")
    make_image(tmp_path / "a_red_car" / "2.png")
    ds = FolderCaptionImageText(tmp_path, transform=build_preprocess(8), tokenizer=Tokenizer(CTX))
    assert ds.texts == ["It is photo with cup", "a red car", "a red car"]
    assert torch.equal(ds[0][1], _tok("It is photo with cup"))


def test_labelled_dataset_as_captions(tmp_path, make_image):
    for cls in ("Black_footed_Albatross", "Sooty_Albatross"):
        for i in range(4):
            make_image(tmp_path / cls / f"{i}.jpg")
    base = ImageFolder(tmp_path)
    fixed = LabelledImageText(base, transform=build_preprocess(8), tokenizer=Tokenizer(CTX))
    assert torch.equal(fixed[5][1], _tok("A photo of a Sooty Albatross."))
    templates = ["a photo of a {}.", "a bird: {}."]
    rand = LabelledImageText(base, templates, random_template=True, transform=build_preprocess(8),
                             tokenizer=Tokenizer(CTX), seed=4)
    chosen = [[t for t in templates if torch.equal(rand[i][1], _tok(t.format(base.classnames[base.targets[i]])))]
              for i in range(len(rand))]
    assert all(len(c) == 1 for c in chosen) and {c[0] for c in chosen} == set(templates)
    again = LabelledImageText(base, templates, random_template=True, tokenizer=Tokenizer(CTX), seed=4)
    assert all(torch.equal(rand[i][1], again[i][1]) for i in range(len(rand)))  # seeded, not stateful
    with pytest.raises(ValueError, match="contain"):
        LabelledImageText(base, ["no placeholder"])


def test_image_text_bad_image_is_a_bad_sample(tmp_path, make_image):
    make_image(tmp_path / "ok caption" / "1.jpg")
    (tmp_path / "ok caption" / "2.jpg").write_bytes(b"garbage")
    ds = FolderCaptionImageText(tmp_path, transform=build_preprocess(8), tokenizer=Tokenizer(CTX))
    assert isinstance(ds[1], BadImage) and ds[1].source.endswith("2.jpg")


# ---------------------------------------------------------------- WebDataset shards


def _write_shards(folder: Path, n_shards: int = 4, per_shard: int = 3) -> list[str]:
    captions = []
    for s in range(n_shards):
        with tarfile.open(folder / f"shard-{s:03d}.tar", "w") as tar:
            for k in range(per_shard):
                key, caption = f"s{s}_{k:04d}", f"sample {s} {k}"
                buf = io.BytesIO()
                Image.new("RGB", (20, 20), (s * 50, k * 40, 90)).save(buf, "JPEG")
                for suffix, data in (("jpg", buf.getvalue()), ("txt", caption.encode())):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                captions.append(caption)
    return captions


def _captions_of(batches, all_captions) -> list[str]:
    lookup = {tuple(_tok(c).tolist()): c for c in all_captions}
    return [lookup[tuple(row.tolist())] for b in batches for row in b.labels]


def test_webdataset_split_across_two_ranks_is_disjoint_and_complete(tmp_path):
    captions = _write_shards(tmp_path)
    pattern = str(tmp_path / "shard-{000..003}.tar")
    seen = []
    for rank in (0, 1):
        ds = WebDatasetImageText(pattern, build_preprocess(16), Tokenizer(CTX), rank=rank, world_size=2,
                                 shuffle_buffer=4, seed=0)
        assert len(ds.shards_for(rank, 2)) == 2
        batches = list(make_loader(ds, batch_size=2, workers=2))
        assert all(b.images.shape[1:] == (3, 16, 16) for b in batches)
        seen.append(_captions_of(batches, captions))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(captions)


def test_webdataset_shuffle_seeded_and_epochs_differ(tmp_path):
    captions = _write_shards(tmp_path)
    ds = WebDatasetImageText(sorted(str(p) for p in tmp_path.glob("*.tar")), build_preprocess(16),
                             Tokenizer(CTX), rank=0, world_size=1, shuffle_buffer=5, seed=3)

    def order(epoch):
        ds.set_epoch(epoch)
        return _captions_of(make_loader(ds, batch_size=4), captions)

    assert order(0) == order(0) and sorted(order(0)) == sorted(captions) and order(0) != order(1)


def test_webdataset_resampled_and_bad_samples(tmp_path):
    captions = _write_shards(tmp_path, n_shards=2)
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        for name, data in (("broken.jpg", b"not a jpeg"), ("broken.txt", b"x"), ("lonely.jpg", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    urls = [str(tmp_path / "shard-000.tar"), str(tmp_path / "shard-001.tar"), str(tmp_path / "bad.tar")]
    plain = WebDatasetImageText(urls, build_preprocess(16), Tokenizer(CTX), rank=0, world_size=1, shuffle_buffer=0)
    errors = [e for b in make_loader(plain, batch_size=4) for e in b.errors]
    assert sorted(e.source.rsplit("::", 1)[1] for e in errors) == ["broken", "lonely"]
    assert any("no caption" in e.reason for e in errors)
    resampled = WebDatasetImageText(urls[:2], build_preprocess(16), Tokenizer(CTX), resampled=True,
                                    samples_per_epoch=10, rank=1, world_size=2)
    batches = list(make_loader(resampled, batch_size=4, workers=2))
    got = _captions_of(batches, captions)
    assert len(got) == 10 and set(got) <= set(captions)
    with pytest.raises(FileNotFoundError, match="missing shard file"):
        WebDatasetImageText(str(tmp_path / "nope-{0..1}.tar"))
