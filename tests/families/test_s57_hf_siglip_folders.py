"""transformers SigLIP / SigLIP 2 folders as transformers 5 writes them (audit 57, findings 1-5, 8, 10).

The folders are built here by the venv's transformers (`SiglipModel.save_pretrained`, `SiglipProcessor`,
`GemmaTokenizerFast`), tiny (32-wide, one layer), from a 400-piece SentencePiece model: what a user who fine-tunes
and re-saves a SigLIP has. Before: the first text was an IndexError traceback (config.json's unused
``eos_token_id`` 49407 read as the end id), pixels were resized shortest-side + cropped (and normalised with
OpenAI's mean/std when only ``processor_config.json`` was there), a Gemma-tokenizer folder was "trained for en
only", an extra tensor or a contradicting config.json loaded silently.
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
pytest.importorskip("sentencepiece")
pytest.importorskip("tokenizers")

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PHOTOS = [DATA / "imagenet_sample/images/n01440764_tench.JPEG", DATA / "imagenet_sample/images/n01443537_goldfish.JPEG",
          DATA / "flickr8k_1k/images/1000268201_693b08cb0e.jpg"]
PROMPTS = ["a photo of a cat", "A DOG, running!", "一只猫的照片", "a " * 40]
CONTEXT = 16


def _siglip_config(vocab: int) -> object:
    return transformers.SiglipConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=CONTEXT),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """{"hf": SiglipModel + SiglipProcessor as transformers 5 saves them (processor_config.json only, config.json
    with eos_token_id 49407), "hub": the same with preprocessor_config.json, "gemma": a SigLIP 2-style folder
    (GemmaTokenizerFast tokenizer.json, tokenizer_class GemmaTokenizer)}."""
    import logging

    from family_fixtures import CORPUS, EXTRA, train_spiece

    logging.getLogger("transformers").setLevel(logging.ERROR)
    root = tmp_path_factory.mktemp("s57_siglip")
    spiece = train_spiece(root / "sp")
    torch.manual_seed(0)
    hf = root / "hf"
    transformers.SiglipModel(_siglip_config(400)).eval().save_pretrained(hf)
    processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    transformers.SiglipProcessor(image_processor=processor, tokenizer=transformers.SiglipTokenizer(
        str(spiece), model_max_length=CONTEXT)).save_pretrained(hf)
    hub = root / "hub"
    shutil.copytree(hf, hub)
    processor.save_pretrained(hub)

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", "merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.train_from_iterator([t for t in CORPUS + EXTRA if t.strip()] * 5, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"]))
    gemma = root / "gemma"
    transformers.GemmaTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                    unk_token="<unk>", add_bos_token=False, add_eos_token=True,
                                    model_max_length=CONTEXT).save_pretrained(gemma)
    vocab = Tokenizer.from_file(str(gemma / "tokenizer.json")).get_vocab_size(with_added_tokens=True)  # + <mask>
    transformers.SiglipModel(_siglip_config(vocab)).eval().save_pretrained(gemma)
    processor.save_pretrained(gemma)
    return {"hf": hf, "hub": hub, "gemma": gemma}


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _text_features(model, ids: torch.Tensor) -> torch.Tensor:
    out = model.get_text_features(input_ids=ids)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


# finding 1 -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["hf", "hub"])
def test_a_folder_transformers_saved_tokenizes_and_encodes_as_transformers(folders, layout) -> None:
    """config.json says eos_token_id 49407 (transformers 5 writes SiglipTextConfig's unused defaults): the ids
    come from the tokenizer files, equal to transformers' SiglipTokenizer, and the text tower runs on them."""
    folder = folders[layout]
    assert json.loads((folder / "config.json").read_text())["text_config"]["eos_token_id"] == 49407
    loaded = load_model(folder, "cpu")
    reference = transformers.AutoTokenizer.from_pretrained(str(folder))
    ids = loaded.tokenize(PROMPTS)
    expected = reference(PROMPTS, padding="max_length", max_length=CONTEXT, truncation=True)["input_ids"]
    assert ids.tolist() == expected
    assert loaded.model.tokenizer_cfg["eos_id"] == loaded.model.tokenizer_cfg["pad_id"] == 1
    model = transformers.SiglipModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        ours, theirs = loaded.model.encode_text(ids), _text_features(model, ids)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4)


def test_a_tokenizer_with_more_ids_than_the_text_tower_is_one_line(folders, tmp_path) -> None:
    import sentencepiece as spm
    from safetensors.torch import load_file, save_file

    folder = _copy(folders["hub"], tmp_path)
    pieces = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model")).get_piece_size()
    weights = load_file(str(folder / "model.safetensors"))
    name = "text_model.embeddings.token_embedding.weight"
    weights[name] = weights[name][:100].contiguous()
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _edit_json(folder / "config.json", lambda c: c["text_config"].update(vocab_size=100))
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(folder, "cpu")
    assert pieces > 100 and str(raised.value) == (
        f"{folder}: its tokenizer spiece.model has {pieces} tokens, but the text tower has 100 token embeddings "
        "(config.json field 'text_config.vocab_size' and the token_embedding tensor): ids past 99 would not fit; "
        "the folder's tokenizer is not this model's")


def test_an_end_token_the_spiece_model_lacks_is_one_line(folders, tmp_path) -> None:
    folder = _copy(folders["hub"], tmp_path)
    _edit_json(folder / "tokenizer_config.json", lambda c: c.update(eos_token="<nope>"))
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(folder, "cpu")
    assert str(raised.value) == (f"{folder / 'tokenizer_config.json'} field 'eos_token' = '<nope>' is not a piece "
                                 "of spiece.model")


# findings 2 + 3 --------------------------------------------------------------------------------------------------
def _photos() -> list:
    from PIL import Image

    if not all(p.is_file() for p in PHOTOS):
        pytest.skip(f"real photos not found under {DATA}")
    return [Image.open(p).convert("RGB") for p in PHOTOS]


def _same_pixels(folder: Path, reference) -> None:
    loaded = load_model(folder, "cpu")
    for image in _photos():
        ours = loaded.preprocess(image)
        theirs = torch.as_tensor(reference(images=image, return_tensors="pt")["pixel_values"][0])
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max().item() < 1e-5, (folder.name, image.size)


@pytest.mark.parametrize("layout", ["hf", "hub", "gemma"])
def test_siglip_folders_squash_as_siglip_image_processor(folders, layout) -> None:
    """preprocessor_config.json (hub, gemma) or only processor_config.json (hf): size {height, width} is a
    squash straight to 32 x 32 with mean/std 0.5, pixel for pixel transformers' (was shortest + crop, and
    OpenAI's mean/std for processor_config.json)."""
    folder = folders[layout]
    assert (folder / "preprocessor_config.json").is_file() == (layout != "hf")
    _same_pixels(folder, transformers.AutoImageProcessor.from_pretrained(str(folder)))
    assert load_model(folder, "cpu").model.preprocess_cfg == {
        "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "resize_mode": "squash"}


def _clip_folder(tmp_path: Path, squash: bool) -> Path:
    """A CLIPModel folder (clipforge's save_hf), its image processor replaced by one transformers 5's
    CLIPProcessor writes (processor_config.json only): mean/std 0.5, bilinear; squash or shortest + crop."""
    from clipforge.weights.hf import save_hf

    folder = save_hf(load_model("random:test-vit-tiny", "cpu").model, tmp_path / ("squash" if squash else "crop"))
    (folder / "preprocessor_config.json").unlink()
    size = {"height": 32, "width": 32} if squash else {"shortest_edge": 32}
    image = transformers.CLIPImageProcessor(size=size, crop_size={"height": 32, "width": 32}, do_center_crop=not squash,
                                            image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=2)
    transformers.CLIPProcessor(image_processor=image, tokenizer=transformers.CLIPTokenizer.from_pretrained(
        str(folder))).save_pretrained(folder)
    assert not (folder / "preprocessor_config.json").exists() and (folder / "processor_config.json").is_file()
    return folder


@pytest.mark.parametrize("squash", [False, True])
def test_clip_folders_with_processor_config_json_preprocess_as_clip_image_processor(tmp_path, squash) -> None:
    folder = _clip_folder(tmp_path, squash)
    _same_pixels(folder, transformers.AutoImageProcessor.from_pretrained(str(folder)))
    assert load_model(folder, "cpu").model.preprocess_cfg == {
        "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear",
        "resize_mode": "squash" if squash else "shortest", **({} if squash else {"crop_offset": "floor"})}


def test_save_hf_of_a_squash_model_round_trips(family_checkpoints, tmp_path) -> None:
    """A SigLIP (squash) and a CLIP given a squash preprocessing: save_hf -> load keeps it (it fell back to
    shortest + crop), and transformers' processor reads the written folder the same way."""
    from clipforge.weights.hf import save_hf
    from clipforge.weights.preprocessing import preprocess_for

    siglip = load_model(family_checkpoints["siglip"], "cpu")
    clip = load_model("random:test-vit-tiny", "cpu")
    clip.model.preprocess_cfg = {"mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "bicubic",
                                 "resize_mode": "squash"}
    for name, loaded in (("siglip", siglip), ("clip", clip)):
        assert loaded.model.preprocess_cfg["resize_mode"] == "squash"
        folder = save_hf(loaded.model, tmp_path / name)
        again = load_model(folder, "cpu")
        assert again.model.preprocess_cfg == loaded.model.preprocess_cfg, name
        _same_pixels(folder, transformers.AutoImageProcessor.from_pretrained(str(folder)))
        before = preprocess_for(loaded.model)  # (the clip's LoadedModel was built before its cfg was set)
        for image in _photos():
            assert torch.equal(again.preprocess(image), before(image)), name


def test_what_clipforge_cannot_reproduce_is_refused_naming_the_field(folders, tmp_path) -> None:
    folder = _copy(folders["hub"], tmp_path)
    _edit_json(folder / "preprocessor_config.json", lambda c: c.update(size={"height": 48, "width": 48}))
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(folder, "cpu")
    assert str(raised.value) == (f"{folder / 'preprocessor_config.json'} is not a usable image processor config: "
                                 "field 'size' gives 48 x 48 images, but the model takes 32 x 32")
    (folder / "preprocessor_config.json").unlink()
    _edit_json(folder / "processor_config.json", lambda c: c["image_processor"].update(size={"height": 32, "width": 16}))
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(folder, "cpu")
    assert str(raised.value) == (
        f"{folder / 'processor_config.json'} is not a usable image processor config: field 'image_processor.size' = "
        "{'height': 32, 'width': 16} is not a square size: clipforge's models take square images "
        '({"height": n, "width": n})')


# finding 4 + 10 --------------------------------------------------------------------------------------------------
def test_a_gemma_tokenizer_folder_is_multilingual(folders) -> None:
    from clipforge.zeroshot.languages import model_languages, text_notices

    loaded = load_model(folders["gemma"], "cpu")
    assert loaded.model.tokenizer_cfg["kind"] == "hf-json"
    assert model_languages(loaded) == ("en", "multilingual")
    assert not any("trained for" in n for n in text_notices(["一条鱼", "海边的日落"], loaded, "gemma"))
    english = load_model(folders["hub"], "cpu")  # SigLIP 1's English SentencePiece: still told
    assert model_languages(english) == ("en",)


def test_siglip2_and_i18n_vocabularies_are_multilingual(tmp_path) -> None:
    from clipforge.weights.hf_siglip_folder import folder_languages

    assert folder_languages(tmp_path, 256_000) == ["en", "multilingual"]  # SigLIP 2's Gemma
    assert folder_languages(tmp_path, 250_000) == ["en", "multilingual"]  # SigLIP i18n
    assert folder_languages(tmp_path, 32_000) is None


def test_a_gemma_folder_without_tokenizer_json_names_that_file(folders, tmp_path) -> None:
    from clipforge.text.families import TokenizerUnavailableError

    folder = _copy(folders["gemma"], tmp_path)
    (folder / "tokenizer.json").unlink()
    loaded = load_model(folder, "cpu")  # images still embed
    assert loaded.model.tokenizer_cfg == {"kind": "hf-json", "file": "tokenizer.json", "clean": "canonicalize"}
    with pytest.raises(TokenizerUnavailableError) as raised:
        loaded.tokenize(["a cat"])
    assert "'tokenizer.json' was not found in" in str(raised.value) and str(folder) in str(raised.value)


# finding 5 + 8 ---------------------------------------------------------------------------------------------------
def test_an_extra_tensor_in_a_siglip_folder_is_refused(folders, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _copy(folders["hub"], tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    weights["text_model.lora_B.weight"] = torch.zeros(4, 32)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(folder, "cpu")
    assert str(raised.value) == (f"{folder}: unexpected tensor 'text_model.lora_B.weight' in a Hugging Face "
                                 "SiglipModel checkpoint")


@pytest.mark.parametrize(("label", "key", "value", "said"), [
    ("vision", "hidden_size", 128, "vision_model.embeddings.patch_embedding.weight has 32"),
    ("text", "num_hidden_layers", 6, "the weights have 1 text layers"),
    ("text", "vocab_size", 32000, "text_model.embeddings.token_embedding.weight has 400"),
    ("vision", "image_size", 224, "the 4 position embeddings of patch 16 cover 32 pixels"),
])
def test_a_config_json_contradicting_the_tensors_is_refused(folders, tmp_path, label, key, value, said) -> None:
    folder = _copy(folders["hub"], tmp_path)
    _edit_json(folder / "config.json", lambda c: c[f"{label}_config"].update({key: value}))
    with pytest.raises(CheckpointFormatError) as raised:
        load_model(folder, "cpu")
    assert str(raised.value) == (f"{folder}: config.json field '{label}_config.{key}' = {value} contradicts the "
                                 f"tensors: {said}")


def test_an_old_hub_clip_preprocessor_config_reads_as_clip_image_processor(tmp_path) -> None:
    """openai/clip-vit-* folders on the hub: ``feature_extractor_type``, bare-number ``size`` / ``crop_size``."""
    from clipforge.weights.hf import save_hf

    folder = save_hf(load_model("random:test-vit-tiny", "cpu").model, tmp_path / "old")
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 32, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 32}))
    assert load_model(folder, "cpu").model.preprocess_cfg["resize_mode"] == "shortest"
    _same_pixels(folder, transformers.CLIPImageProcessor.from_pretrained(str(folder)))
