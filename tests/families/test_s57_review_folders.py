"""Review of the transformers SigLIP folder reading (audit 57, families findings 1-3).

1. google/siglip-so400m-patch14-384 and siglip2-so400m-patch14-384: 384 / 14 = 27.4, so the 27 x 27 position grid
   covers 378 px and the patch convolution drops the last 6; transformers, open_clip and the registry's
   ViT-SO400M-14-SigLIP-384 feed 384. Such a folder was refused ("cover 378 pixels"); it loads at 384 now, pixels
   and features equal transformers'.
2. A SigLIP 2 folder's Gemma tokenizer.json (256,000 rows) was parsed twice per load (a `tokenizers.Tokenizer` built
   only to count its ids, then the text tokenizer's): once now, the vocabulary check reads the file's vocabulary.
3. A NaFlex SigLIP 2 folder (Siglip2Model) was refused with "expected a CLIPModel (model_type 'clip')", as if no
   SiglipModel folder loaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from clipforge.api import load_model
from clipforge.weights import CheckpointFormatError

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


def _siglip(folder: Path, image_size: int | None, processor_size: int | None, vocab: int = 400,
            patch: int = 14) -> Path:
    """A tiny SiglipModel folder as transformers saves it, by default of so400m-patch14-384's vision geometry
    (patch 14, 27 x 27 positions); `image_size` None: config.json without ``vision_config.image_size``."""
    import logging

    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    config = transformers.SiglipConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size or 384, patch_size=patch))
    transformers.SiglipModel(config).eval().save_pretrained(folder)
    if processor_size is not None:
        transformers.SiglipImageProcessor(size={"height": processor_size, "width": processor_size}).save_pretrained(
            folder)
    data = json.loads((folder / "config.json").read_text())
    if image_size is None:
        data["vision_config"].pop("image_size")
    else:
        data["vision_config"]["image_size"] = image_size
    (folder / "config.json").write_text(json.dumps(data))
    return folder


def _images() -> list:
    """Noise images of a photo's shapes (landscape, portrait, small): resizing differences show in every pixel."""
    from PIL import Image

    generator = torch.Generator().manual_seed(1)
    return [Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8).numpy())
            for w, h in ((500, 333), (333, 500), (200, 156))]


@pytest.fixture(scope="module")
def so400m(tmp_path_factory) -> Path:
    """so400m-patch14-384's geometry as the hub has it: config.json and preprocessor_config.json say 384, with a
    SiglipTokenizer (spiece.model)."""
    from family_fixtures import train_spiece

    root = tmp_path_factory.mktemp("so400m")
    folder = _siglip(root / "so400m_384", 384, 384)
    transformers.SiglipTokenizer(str(train_spiece(root / "sp")), model_max_length=16).save_pretrained(folder)
    return folder


def _check_like_transformers(folder: Path, side: int) -> None:
    loaded = load_model(folder, "cpu")
    assert loaded.model.image_size == side and loaded.preprocess.n_px == side
    processor = transformers.AutoImageProcessor.from_pretrained(str(folder))
    reference = transformers.SiglipModel.from_pretrained(str(folder)).eval()
    for image in _images():
        ours = loaded.preprocess(image)
        theirs = torch.as_tensor(processor(images=image, return_tensors="pt")["pixel_values"][0])
        assert ours.shape == theirs.shape == (3, side, side)
        assert (ours - theirs).abs().max().item() < 1e-5, image.size
        with torch.no_grad():
            got = loaded.model.encode_image(ours[None])
            want = reference.get_image_features(pixel_values=theirs[None])
        want = want if isinstance(want, torch.Tensor) else want.pooler_output
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


# finding 1 -------------------------------------------------------------------------------------------------------
def test_so400m_patch14_384_loads_at_384_as_transformers_feeds_it(so400m) -> None:
    """config.json and preprocessor_config.json say 384: built at 384 (27 x 27 patches of 14, the last 6 pixels
    unread), pixels and image features equal SiglipImageProcessor's and SiglipModel's."""
    assert transformers.SiglipModel.from_pretrained(str(so400m)).config.vision_config.image_size == 384
    _check_like_transformers(so400m, 384)


def test_the_processor_size_decides_when_it_fits_the_grid(so400m, tmp_path) -> None:
    """config.json without image_size (the processor's 384 decides), and config 384 with a processor of 378
    (transformers feeds 378 to the same 27 x 27 grid: so does clipforge)."""
    bare = Path(shutil.copytree(so400m, tmp_path / "bare"))
    data = json.loads((bare / "config.json").read_text())
    data["vision_config"].pop("image_size")
    (bare / "config.json").write_text(json.dumps(data))
    assert load_model(bare, "cpu").model.image_size == 384
    at_378 = Path(shutil.copytree(so400m, tmp_path / "at_378"))
    transformers.SiglipImageProcessor(size={"height": 378, "width": 378}).save_pretrained(at_378)
    _check_like_transformers(at_378, 378)


def test_sizes_of_another_grid_are_still_refused(so400m, tmp_path) -> None:
    folder = Path(shutil.copytree(so400m, tmp_path / "bad"))
    data = json.loads((folder / "config.json").read_text())
    data["vision_config"]["image_size"] = 392  # 392 // 14 = 28: a 28 x 28 grid
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(folder, "cpu")
    assert str(raised.value) == (f"{folder}: config.json field 'vision_config.image_size' = 392 contradicts the "
                                 "tensors: the 729 position embeddings of patch 14 cover 378 pixels")
    data["vision_config"]["image_size"] = 384
    (folder / "config.json").write_text(json.dumps(data))
    transformers.SiglipImageProcessor(size={"height": 364, "width": 364}).save_pretrained(folder)  # 26 x 26
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(folder, "cpu")
    assert str(raised.value) == (f"{folder / 'preprocessor_config.json'} is not a usable image processor config: "
                                 "field 'size' gives 364 x 364 images, but the model takes 384 x 384")


def test_save_hf_of_the_384_model_keeps_384(so400m, tmp_path) -> None:
    from clipforge.weights.hf import save_hf

    loaded = load_model(so400m, "cpu")
    folder = save_hf(loaded.model, tmp_path / "saved")
    saved = json.loads((folder / "config.json").read_text())["vision_config"]
    assert (saved["image_size"], saved["patch_size"]) == (384, 14)
    assert json.loads((folder / "preprocessor_config.json").read_text())["size"] == {"height": 384, "width": 384}
    assert load_model(folder, "cpu").model.image_size == 384


# finding 2 -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gemma(tmp_path_factory) -> Path:
    """A SigLIP 2-style folder: GemmaTokenizerFast's tokenizer.json (BPE, <pad> 0), SiglipModel of its vocabulary."""
    from family_fixtures import build_gemma_like_tokenizer
    from tokenizers import Tokenizer

    root = tmp_path_factory.mktemp("gemma")
    tok = Tokenizer.from_file(str(build_gemma_like_tokenizer(root / "tok", vocab_size=300)))
    folder = root / "gemma"
    transformers.GemmaTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                    unk_token="<unk>", add_bos_token=False, add_eos_token=True,
                                    padding_side="right", model_max_length=16).save_pretrained(folder)
    vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    _siglip(folder, 32, 32, vocab=vocab, patch=16)  # a geometry HEAD read too: only the parse count differs
    return folder


def test_a_siglip2_folder_parses_its_tokenizer_json_once(gemma, monkeypatch) -> None:
    """load + first text: one `Tokenizer.from_file` (two before: 0.6 s more per load on a 256,000-row file)."""
    import tokenizers

    reference = transformers.AutoTokenizer.from_pretrained(str(gemma))
    calls: list[str] = []
    original = tokenizers.Tokenizer.from_file

    def counted(path: str, *args, **kwargs):
        calls.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(tokenizers.Tokenizer, "from_file", counted)
    loaded = load_model(gemma, "cpu")
    texts = ["a photo of a cat", "a red square"]
    ids = loaded.tokenize(texts)
    assert calls == [str(gemma / "tokenizer.json")]
    assert loaded.model.tokenizer_cfg["pad_id"] == 0
    expected = reference(texts, padding="max_length", max_length=16, truncation=True)["input_ids"]
    assert ids.tolist() == expected


def _variants(folder: Path) -> dict[str, Path]:
    """tokenizers JSON files of other shapes: Unigram (a list vocabulary), an added token past the vocabulary,
    indented, and the model before added_tokens."""
    from family_fixtures import build_json_tokenizer
    from tokenizers import Tokenizer

    out = {"unigram": build_json_tokenizer(folder / "unigram")}
    tok = Tokenizer.from_file(str(out["unigram"]))
    tok.add_special_tokens(["<extra_0>", "<extra_1>"])
    out["added"] = folder / "added.json"
    tok.save(str(out["added"]), pretty=True)
    data = json.loads(out["added"].read_text())
    out["model_first"] = folder / "model_first.json"
    out["model_first"].write_text(json.dumps({"model": data.pop("model"), **data}))
    return out


def test_the_vocabulary_reader_agrees_with_the_tokenizers_library(gemma, tmp_path) -> None:
    from tokenizers import Tokenizer

    from clipforge.weights.hf_siglip_folder import _json_token_ids

    files = {"gemma": gemma / "tokenizer.json", **_variants(tmp_path)}
    for name, path in files.items():
        tok = Tokenizer.from_file(str(path))
        count, token_to_id = _json_token_ids(path)
        assert count == tok.get_vocab_size(with_added_tokens=True), name
        for token in [*tok.get_vocab(with_added_tokens=True), "<nope>", ""]:
            assert token_to_id(token) == tok.token_to_id(token), (name, token)


def test_tokenizer_json_refusals_are_one_line(gemma, tmp_path) -> None:
    folder = Path(shutil.copytree(gemma, tmp_path / "pad"))
    data = json.loads((folder / "tokenizer_config.json").read_text())
    data["pad_token"] = "<nope>"
    (folder / "tokenizer_config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(folder, "cpu")
    assert str(raised.value) == (f"{folder / 'tokenizer_config.json'} field 'pad_token' = '<nope>' is not a token "
                                 "of tokenizer.json")
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, "merg')
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(folder, "cpu")
    assert str(raised.value).startswith(f"{folder / 'tokenizer.json'} is not a tokenizers JSON file: ")
    more = Path(shutil.copytree(gemma, tmp_path / "more"))
    tok = json.loads((more / "tokenizer.json").read_text())
    count = json.loads((more / "config.json").read_text())["text_config"]["vocab_size"]
    tok["added_tokens"].append({"id": count + 9, "content": "<far>", "single_word": False, "lstrip": False,
                                "rstrip": False, "normalized": False, "special": True})
    (more / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(more, "cpu")
    assert str(raised.value) == (
        f"{more}: its tokenizer tokenizer.json has {count + 10:,} tokens, but the text tower has {count:,} token "
        "embeddings (config.json field 'text_config.vocab_size' and the token_embedding tensor): ids past "
        f"{count - 1:,} would not fit; the folder's tokenizer is not this model's")


# finding 3 -------------------------------------------------------------------------------------------------------
def test_a_naflex_siglip2_folder_is_refused_saying_what_loads(tmp_path) -> None:
    folder = tmp_path / "naflex"
    config = transformers.Siglip2Config(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           num_patches=16, patch_size=16))
    transformers.Siglip2Model(config).save_pretrained(folder)
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(folder, "cpu")
    assert str(raised.value) == (
        f"{folder / 'config.json'} describes a 'siglip2' model (Siglip2Model: SigLIP 2 NaFlex, variable resolution), "
        "which clipforge does not run; the fixed-resolution SigLIP 2 folders (SiglipModel, model_type 'siglip', "
        "e.g. google/siglip2-base-patch16-224) load, as do CLIPModel and ChineseCLIPModel folders")


def test_another_model_type_is_refused_saying_what_loads(so400m, tmp_path) -> None:
    folder = Path(shutil.copytree(so400m, tmp_path / "blip"))
    data = json.loads((folder / "config.json").read_text())
    data["model_type"] = "blip"
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(folder, "cpu")
    assert str(raised.value) == (
        f"{folder / 'config.json'} describes a 'blip' model, which clipforge does not run: it reads CLIPModel "
        "(model_type 'clip'), SiglipModel ('siglip': SigLIP, and SigLIP 2 at a fixed resolution) and "
        "ChineseCLIPModel ('chinese_clip')")
