"""The one files-to-embeddings path: reader (`clipforge.data.files`) + encoder (`BatchEncoder`).

Every command's embeddings must equal what the library functions give for the same files, and
a bad file must be the same `BadImage(path, reason)` wherever it turns up.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.api import load_model
from clipforge.data import BadImage, ImageFolder
from clipforge.data.files import DecodedFile, ImageFileReader, encode_files, read_image_bytes
from clipforge.image import Preprocess
from clipforge.inference.encoder import BatchEncoder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    out = {}
    for i, (name, size) in enumerate((("a.jpg", (900, 700)), ("b.png", (64, 48)), ("c.jpg", (300, 500)))):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        pixels[:, : size[0] // 2] //= 2 + i  # some structure so images differ beyond noise
        path = root / name
        Image.fromarray(pixels).save(path)
        out[name] = path
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_bytes(b"this is not an image")
    out["empty.jpg"], out["text.jpg"] = root / "empty.jpg", root / "text.jpg"
    return out


@pytest.fixture(scope="module")
def tiny():
    return load_model("test-vit-tiny", "cpu")


def test_reader_reads_once_hashes_and_crops(photos) -> None:
    preprocess = Preprocess(32)
    reader = ImageFileReader([photos["a.jpg"], photos["b.png"]], preprocess, hash=True)
    first = reader[0]
    assert isinstance(first, DecodedFile)
    assert first.sha256 == hashlib.sha256(photos["a.jpg"].read_bytes()).hexdigest()
    assert (first.width, first.height) == (900, 700)  # the picture's size, not the drafted decode's
    assert first.pixels.dtype == torch.uint8 and tuple(first.pixels.shape) == (32, 32, 3)
    assert torch.equal(first.pixels, torch.from_numpy(preprocess.pixels(photos["a.jpg"])))
    assert reader[1].sha256 is not None and torch.equal(reader[1].pixels,
                                                        torch.from_numpy(preprocess.pixels(photos["b.png"])))
    skipping = ImageFileReader([photos["a.jpg"]], preprocess, skip_shas=frozenset({first.sha256}))
    assert skipping[0].pixels is None and skipping[0].sha256 == first.sha256  # hashed, not decoded


def test_a_bad_file_is_one_badimage_shape_everywhere(photos, tmp_path) -> None:
    preprocess = Preprocess(32)
    reader = ImageFileReader([photos["empty.jpg"], photos["text.jpg"], tmp_path / "gone.jpg"], preprocess)
    bad = [reader[i] for i in range(3)]
    assert all(type(b) is BadImage for b in bad)
    assert [b.path for b in bad] == [str(photos["empty.jpg"]), str(photos["text.jpg"]), str(tmp_path / "gone.jpg")]
    assert bad[0].reason == "file is empty (0 bytes)"
    assert bad[2].reason.startswith("file not found")
    assert "not an image" in bad[1].reason or "cannot identify" in bad[1].reason
    # a labelled dataset over the same broken file says the same thing in the same shape
    folder = tmp_path / "ds" / "cls"
    folder.mkdir(parents=True)
    (folder / "text.jpg").write_bytes(photos["text.jpg"].read_bytes())
    (folder / "ok.png").write_bytes(photos["b.png"].read_bytes())
    dataset = ImageFolder(tmp_path / "ds", transform=preprocess, min_classes=1)
    from_dataset = next(dataset[i] for i in range(len(dataset)) if isinstance(dataset[i], BadImage))
    assert type(from_dataset) is BadImage and from_dataset.path.endswith("text.jpg")
    assert from_dataset.reason == bad[1].reason.replace(str(photos["text.jpg"]), from_dataset.path)
    # and an upload's bytes
    upload = read_image_bytes(b"this is not an image", preprocess, "upload.jpg")
    assert type(upload) is BadImage and upload.path == "upload.jpg"


def test_encode_files_keeps_input_order_and_sets_bad_files_aside(photos, tiny) -> None:
    encoder = BatchEncoder(tiny.model, "fp32")
    paths = [photos["c.jpg"], photos["text.jpg"], photos["a.jpg"], photos["b.png"]]
    out = encode_files(paths, encoder, batch_size=2, workers=0)
    assert out.paths == [str(photos["c.jpg"]), str(photos["a.jpg"]), str(photos["b.png"])]
    assert [b.path for b in out.bad] == [str(photos["text.jpg"])]
    with torch.no_grad():
        want = tiny.model.encode_image(tiny.preprocess.batch([photos["c.jpg"], photos["a.jpg"], photos["b.png"]]))
    want = torch.nn.functional.normalize(want, dim=-1).numpy()
    np.testing.assert_allclose(out.vectors, want, atol=1e-5)
    assert out.settings["draft"] is True


def test_embed_command_index_add_and_the_library_functions_agree(photos, tiny, tmp_path, capsys) -> None:
    """`clipforge embed` output == `index add` vectors == `encode_files` == `Encoder.encode_bytes`."""
    from clipforge.cli.main import main
    from clipforge.library import Library
    from clipforge.library.export import read_export

    files = [photos["a.jpg"], photos["b.png"], photos["c.jpg"]]
    folder = tmp_path / "in"
    folder.mkdir()
    for path in files:
        (folder / path.name).write_bytes(path.read_bytes())
    assert main(["embed", str(folder), "--model", "test-vit-tiny", "--out", str(tmp_path / "out"), "--float32",
                 "--quiet"]) == 0
    vectors, rows = read_export(tmp_path / "out")
    embedded = {Path(r["image_path"]).name: v for r, v in zip(rows, vectors, strict=True)}

    reference = encode_files(sorted(folder.iterdir()), BatchEncoder(tiny.model, "fp32"), workers=0)
    library_fn = {Path(p).name: v for p, v in zip(reference.paths, reference.vectors, strict=True)}
    assert sorted(embedded) == sorted(library_fn) == ["a.jpg", "b.png", "c.jpg"]
    for name in embedded:
        np.testing.assert_allclose(embedded[name], library_fn[name], atol=1e-6)

    assert main(["index", "add", str(folder), "--model", "test-vit-tiny", "--library", str(tmp_path / "lib"),
                 "--quiet"]) == 0
    capsys.readouterr()
    with Library(tmp_path / "lib", "test-vit-tiny") as library:
        records = library.list_images()
        store_vectors = library.store.vectors_for_shas(library.encoder.fingerprint, [r.sha256 for r in records])
        for record in records:
            np.testing.assert_allclose(store_vectors[record.sha256], library_fn[Path(record.path).name], atol=1e-6)
        upload = library.encoder.encode_bytes(files[0].read_bytes(), "a.jpg")
    np.testing.assert_allclose(upload, library_fn["a.jpg"], atol=1e-6)


def test_classify_probabilities_come_from_the_same_embeddings(photos, tiny, tmp_path) -> None:
    from clipforge.zeroshot import ZeroShotClassifier
    from clipforge.zeroshot.files import classify_files

    paths = [photos["a.jpg"], photos["text.jpg"], photos["c.jpg"]]
    out = classify_files(paths, ["red", "blue", "green"], "test-vit-tiny", templates="a photo of a {}.", top_k=3,
                         device="cpu", cache_dir=tmp_path, progress=False)
    assert [r["image"] for r in out["results"]] == [str(photos["a.jpg"]), str(photos["c.jpg"])]
    assert [e["image"] for e in out["errors"]] == [str(photos["text.jpg"])]
    assert out["precision"] == "fp32" and out["draft_decode"] is True
    encoded = encode_files([photos["a.jpg"], photos["c.jpg"]], BatchEncoder(tiny.model, "fp32"), workers=0)
    classifier = ZeroShotClassifier(tiny.model, ["red", "blue", "green"], "a photo of a {}.", use_cache=False,
                                    progress=False)
    probs = classifier.logits(torch.from_numpy(encoded.vectors)).softmax(dim=-1)
    for row, result in zip(probs, out["results"], strict=True):
        want = sorted(zip(row.tolist(), ["red", "blue", "green"], strict=True), reverse=True)
        assert result["labels"] == [label for _, label in want]
        np.testing.assert_allclose(result["probabilities"], [p for p, _ in want], atol=1e-6)


def test_exact_decode_is_reported_by_eval_and_changes_only_drafted_images(photos, tmp_path) -> None:
    from clipforge.evaluate.common import resolve_model

    draft = resolve_model("test-vit-tiny", "cpu")
    exact = resolve_model("test-vit-tiny", "cpu", exact_decode=True)
    assert draft.describe()["draft_decode"] is True and exact.describe()["draft_decode"] is False
    assert draft.describe()["precision"] == "fp32"
    big = Image.open(photos["a.jpg"])
    big.resize((1800, 1400)).save(tmp_path / "big.jpg", quality=95)
    a = encode_files([tmp_path / "big.jpg"], BatchEncoder(draft.model), preprocess=draft.preprocess, workers=0)
    b = encode_files([tmp_path / "big.jpg"], BatchEncoder(exact.model), preprocess=exact.preprocess, workers=0)
    cosine = float((a.vectors * b.vectors).sum())
    assert cosine >= 0.99 and not np.array_equal(a.vectors, b.vectors)  # drafted, and still close


def test_save_embeddings_writes_what_encode_image_files_returns(photos, tiny, tmp_path) -> None:
    from clipforge.data import encode_image_files, save_embeddings

    result = encode_image_files(tiny.model, [photos["b.png"], photos["empty.jpg"]], workers=0, progress=False)
    save_embeddings(result, tmp_path / "emb")
    meta = json.loads((tmp_path / "emb" / "embeddings.json").read_text())
    assert meta["failed"] == [{"path": str(photos["empty.jpg"]), "reason": "file is empty (0 bytes)"}]
    np.testing.assert_array_equal(np.load(tmp_path / "emb" / "embeddings.npy"), result.embeddings)


def test_training_eval_hook_encodes_through_the_fast_path_and_leaves_training_intact(photos, tmp_path) -> None:
    from clipforge.train.evalhook import ZeroShotEval

    model = load_model("test-vit-tiny", "cpu").model.train()
    for name, path in (("red", photos["a.jpg"]), ("blue", photos["c.jpg"])):
        (tmp_path / "ds" / name).mkdir(parents=True)
        (tmp_path / "ds" / name / path.name).write_bytes(path.read_bytes())
    (tmp_path / "ds" / "blue" / "broken.jpg").write_bytes(b"nope")
    dataset = ImageFolder(tmp_path / "ds", transform=Preprocess(int(model.visual.input_resolution)))
    hook = ZeroShotEval("tiny", dataset, ["blue", "red"], ["a photo of a {}."], batch_size=2)
    metrics = hook(model, torch.device("cpu"))
    assert metrics["tiny_samples"] == 2 and metrics["tiny_top1"] in (0.0, 0.5, 1.0)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert model.visual.transformer.resblocks[0].__dict__.get("_cf_cache")  # packed weights: the fast path ran


def test_index_add_takes_the_same_speed_flags_as_embed(photos, tiny, tmp_path, capsys) -> None:
    """`index add --exact-decode` stores what the exact reader gives (a.jpg is drafted otherwise), and
    `--precision bf16` is refused in one line where the CPU has no native bf16, as `embed` does."""
    from clipforge.cli.main import main
    from clipforge.inference import bf16_supported
    from clipforge.library import Library

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(photos["a.jpg"].read_bytes())
    exact = encode_files([folder / "a.jpg"], BatchEncoder(tiny.model, "fp32"), workers=0, draft=False).vectors[0]
    drafted = encode_files([folder / "a.jpg"], BatchEncoder(tiny.model, "fp32"), workers=0, draft=True).vectors[0]
    assert not np.allclose(exact, drafted, atol=1e-6)  # the flag must make a difference here
    assert main(["index", "add", str(folder), "--model", "test-vit-tiny", "--library", str(tmp_path / "lib"),
                 "--exact-decode", "--quiet"]) == 0
    with Library(tmp_path / "lib", "test-vit-tiny") as library:
        record = library.list_images()[0]
        stored = library.store.vectors_for_shas(library.encoder.fingerprint, [record.sha256])[record.sha256]
    np.testing.assert_allclose(stored, exact, atol=1e-6)
    capsys.readouterr()
    if not bf16_supported():
        code = main(["index", "add", str(folder), "--model", "test-vit-tiny", "--library", str(tmp_path / "lib2"),
                     "--precision", "bf16", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "no native bf16" in err, err
        assert not (tmp_path / "lib2").exists()


def test_a_query_photo_gives_the_vector_the_library_stored_for_it(photos, tiny, tmp_path) -> None:
    """Search by image reads the query through the same reader as `index add` (a.jpg is big enough
    to be draft-decoded): the query's vector is the stored one, and a FIFO query fails in one line."""
    import os

    from clipforge.image import ImageLoadError
    from clipforge.library import Library

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(photos["a.jpg"].read_bytes())
    with Library(tmp_path / "lib", "test-vit-tiny") as library:
        library.add([folder], workers=0, progress=False)
        record = library.list_images()[0]
        stored = library.store.vectors_for_shas(library.encoder.fingerprint, [record.sha256])[record.sha256]
        by_path = library.encoder.encode_images([folder / "a.jpg"])[0]
        by_bytes = library.encoder.encode_images([photos["a.jpg"].read_bytes()])[0]
        np.testing.assert_allclose(by_path, stored, atol=1e-6)
        np.testing.assert_allclose(by_bytes, stored, atol=1e-6)
        assert library.search(image=folder / "a.jpg", top_k=1)[0].id == record.id
        os.mkfifo(tmp_path / "q.jpg")
        with pytest.raises(ImageLoadError, match="not a regular file"):
            library.encoder.encode_images([tmp_path / "q.jpg"])


@pytest.mark.timeout(30)
def test_the_reader_never_blocks_on_a_fifo(photos, tiny, tmp_path) -> None:
    """A FIFO named like a photo (or swapped in after a scan) is one BadImage, not a hung reader."""
    import os

    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    item = ImageFileReader([fifo], None)[0]
    assert isinstance(item, BadImage) and item.reason == "not a regular file (a FIFO)"
    out = encode_files([photos["b.png"], fifo], BatchEncoder(tiny.model, "fp32"), workers=0)
    assert out.paths == [str(photos["b.png"])] and [(b.path, b.reason) for b in out.bad] == [
        (str(fifo), "not a regular file (a FIFO)")]


def test_embed_exports_a_photo_whose_name_is_not_utf8(photos, tmp_path, capsys) -> None:
    """parquet and JSON hold UTF-8 only: such a name is written as ``b64:`` + its bytes (lossless: the \\xNN escapes
    written before could name two files alike and open neither), not a crash after the whole partition was
    embedded."""
    import os

    from clipforge.cli.main import main
    from clipforge.library.export import read_export

    folder = tmp_path / "in"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), "wb") as handle:
        handle.write(photos["b.png"].read_bytes())
    assert main(["embed", str(folder), "--model", "test-vit-tiny", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    vectors, rows = read_export(tmp_path / "out")
    from clipforge.library.dbfile import text_path

    assert len(vectors) == 1 and rows[0]["image_path"].startswith("b64:")
    assert os.fsencode(text_path(rows[0]["image_path"])) == os.path.join(os.fsencode(folder), b"caf\xe9.png")


def test_with_workers_the_first_batch_is_short_and_every_file_comes_once_in_order(photos) -> None:
    """The model starts after `FIRST_BATCH` decoded files instead of a whole batch (one worker on two
    cores left the main process idle until the first 64 were decoded); the rest keep their batch size."""
    from clipforge.data.files import FIRST_BATCH, read_batches
    from clipforge.data.loader import RampBatches

    paths = [str(p) for p in photos.values()] * 4  # more files than the first batch and one full batch
    reader = ImageFileReader(paths, Preprocess(32))
    batch = FIRST_BATCH + 3
    sizes, order = [], []
    for got in read_batches(reader, batch_size=batch, workers=1):
        sizes.append(len(got.files) + len(got.bad))
        order += [f.path for f in got.files] + [b.path for b in got.bad]
    assert sizes[0] == FIRST_BATCH < batch and sizes[1] == batch - FIRST_BATCH
    assert all(s == batch for s in sizes[2:-1]) and sum(sizes) == len(paths)
    assert sorted(order) == sorted(paths) and len(order) == len(paths)
    assert [len(got.files) + len(got.bad) for got in read_batches(reader, batch_size=batch, workers=0)][0] == batch
    for n, first, size, want in [(300, 8, 64, [8, 56, 64, 64, 64, 44]), (5, 8, 64, [5]), (64, 8, 64, [8, 56]),
                                 (10, 8, 4, [4, 4, 2]), (0, 8, 4, [])]:
        ramp = RampBatches(n, first, size)
        assert [len(b) for b in ramp] == want and len(ramp) == len(want)
        assert [i for b in ramp for i in b] == list(range(n))
