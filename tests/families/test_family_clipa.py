"""CLIPA-v2 (open_clip's ``ViT-{L,H,bigG}-14-CLIPA[-336]``): parity with open_clip's own ``CLIP`` on
identical random weights, the tokenizer against transformers' ``BertTokenizer`` and open_clip's
``HFTokenizer``, the registry, the listing and the one loader.

The reference is open_clip's ``model.py``/``transformer.py`` (open-clip-torch 3.3, imported without its
package ``__init__``, which needs torchvision: `test_zoo_parity._open_clip_model`), built from open_clip's
own ``model_configs/*-CLIPA*.json``. Full size on the meta device for names, shapes and the architecture
the loader infers; numbers at full width, heads, MLP and resolution with one block per tower (depth does
not change a block's arithmetic; bigG at full depth is 10 GB per fp32 copy), and the tiny config at full
depth. No bert-base-uncased here: the tokenizer is tested on a small ``vocab.txt`` written by the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_hf_tower_parity import _zoo_parity

import clipforge
from clipforge.models import build_model, config_from_state_dict, create_model_from_config, get_config
from clipforge.models.configs import ARCH_CONFIGS
from clipforge.models.family_configs import CLIPA_CONFIGS, CLIPA_PREPROCESS
from clipforge.text.families import build_tokenizer

NAMES = sorted(CLIPA_CONFIGS)
ATOL = 1e-5


def _open_clip(cfg: dict, device: str = "meta") -> torch.nn.Module:
    with torch.device(device):
        return (
            _zoo_parity()._open_clip_model().CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"]).eval()
        )


def _features(model: torch.nn.Module, config: dict) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    res, length = config["image_resolution"], config["context_length"]
    pixels = torch.randn(2, 3, res, res, generator=gen)
    text = torch.randint(1, config["vocab_size"], (3, length), generator=gen)
    text[0, 5:] = 0  # padded: the tower still reads the last position, bidirectionally
    text[1, 0] = 101
    with torch.inference_mode():
        return model.encode_image(pixels), model.encode_text(text)


def _tiny_open_clip_cfg(embed_dim: int) -> dict:
    """open_clip's JSON for clipforge's ``test-clipa-tiny`` (CLIPA's knobs on a 2-block, 64-wide model)."""
    vision = {
        "image_size": 32,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 8,
        "no_ln_pre": True,
        "pool_type": "avg",
        "final_ln_after_pool": True,
    }
    text = {
        "context_length": 16,
        "vocab_size": 512,
        "width": 64,
        "heads": 2,
        "layers": 2,
        "pool_type": "last",
        "no_causal_mask": True,
    }
    return {"embed_dim": embed_dim, "vision_cfg": vision, "text_cfg": text}


def test_the_family_is_open_clips_six_clipa_configs() -> None:
    expected = sorted(
        f"{s}{r}" for s in ("ViT-L-14-CLIPA", "ViT-H-14-CLIPA", "ViT-bigG-14-CLIPA") for r in ("", "-336")
    )
    assert expected == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_config_is_open_clips_json_and_the_loader_infers_it_from_open_clips_tensors(name: str) -> None:
    """Full size on the meta device: open_clip's state dict has exactly our names and shapes (so its parameter
    count is ours), and `config_from_state_dict` recognises the architecture from it (no `ln_pre`: avg pool)."""
    zoo = _zoo_parity()
    cfg, ours = zoo._open_clip_json(name), get_config(name)
    assert {
        k: ours.get(k) for k in ("vision_pool", "vision_ln_pre", "text_causal", "text_pool", "activation")
    } == {
        "vision_pool": "avg",
        "vision_ln_pre": False,
        "text_causal": False,
        "text_pool": "last",
        "activation": "gelu",
    }
    assert cfg["vision_cfg"]["no_ln_pre"] and cfg["vision_cfg"]["pool_type"] == "avg"
    assert cfg["vision_cfg"]["final_ln_after_pool"] and cfg["text_cfg"]["no_causal_mask"]
    assert cfg["text_cfg"]["pool_type"] == "last" and cfg["text_cfg"]["tokenizer_kwargs"]["strip_sep_token"]
    expected = zoo._ours_from_json(cfg)
    assert {k: ours[k] for k in expected} == expected
    theirs = _open_clip(cfg).state_dict()
    with torch.device("meta"):
        mine = create_model_from_config(ours).state_dict()
    assert {k: tuple(v.shape) for k, v in theirs.items()} == {k: tuple(v.shape) for k, v in mine.items()}
    assert config_from_state_dict(theirs) == ours


# Each 336 px twin differs from its 224 px one only in the position table: one of them (H) runs by default.
@pytest.mark.parametrize(
    "name",
    [
        "test-clipa-tiny",
        *(
            pytest.param(n, marks=pytest.mark.slow)
            if n in ("ViT-L-14-CLIPA-336", "ViT-bigG-14-CLIPA-336", "ViT-H-14-CLIPA")
            else n
            for n in NAMES
        ),
    ],
)
def test_features_match_open_clip_on_identical_weights(name: str) -> None:
    zoo = _zoo_parity()
    config = get_config(name)
    if name.startswith("test-"):
        cfg = _tiny_open_clip_cfg(config["embed_dim"])
    else:
        cfg = zoo._open_clip_json(name)
        cfg["vision_cfg"]["layers"] = cfg["text_cfg"]["layers"] = config["vision_layers"] = 1
        config["transformer_layers"] = 1
    theirs = _open_clip(cfg)
    state = zoo._random_state(theirs, seed=len(name))
    theirs.load_state_dict(state, strict=True, assign=True)
    ours = build_model(state, config=config)  # strict: open_clip's names are ours
    (our_image, our_text), (their_image, their_text) = _features(ours, config), _features(theirs, config)
    assert our_image.shape == their_image.shape == (2, config["embed_dim"])
    assert our_text.shape == their_text.shape == (3, config["embed_dim"])
    assert (our_image - their_image).abs().max().item() <= ATOL
    assert (our_text - their_text).abs().max().item() <= ATOL


def test_the_fast_path_gives_the_plain_models_numbers(monkeypatch) -> None:
    """The image tower runs the packed path (its patches one matmul, its batch split across the cores): the
    reference's strided convolution never runs; fp32 equals the plain model, bf16 stays >= 0.999 cosine."""
    import copy

    from clipforge.inference.cpu import bf16_supported
    from clipforge.inference.precision import prepare

    torch.manual_seed(0)
    model = create_model_from_config(get_config("test-clipa-tiny")).eval()
    plain = _features(model, model.arch_config)
    fast = prepare(copy.deepcopy(model), "fp32")

    def refuse(*_: object) -> None:
        raise AssertionError("the reference convolution ran")

    monkeypatch.setattr(fast.visual.conv1, "forward", refuse)
    for reference, packed in zip(plain, _features(fast, model.arch_config), strict=True):
        assert (reference - packed).abs().max().item() <= ATOL
    if bf16_supported():
        half = prepare(copy.deepcopy(model), "bf16")
        monkeypatch.setattr(half.visual.conv1, "forward", refuse)
        for reference, packed in zip(plain, _features(half, model.arch_config), strict=True):
            assert torch.nn.functional.cosine_similarity(reference, packed.float()).min().item() >= 0.999


def test_an_open_clip_layout_file_loads_through_the_one_loader(tmp_path: Path, monkeypatch) -> None:
    """A plain state dict as open_clip saves it: the loader tells CLIPA from its tensors (a class-token ViT
    without ``ln_pre``) and a registered shape, builds the avg-pool image tower and the bidirectional text
    tower read at the last position, with CLIPA's preprocessing, and gives open_clip's numbers."""
    small = {**get_config("test-clipa-tiny"), "embed_dim": 48}  # a shape of its own, registered as a real one
    monkeypatch.setitem(ARCH_CONFIGS, "ViT-T-8-CLIPA-probe", small)
    theirs = _open_clip(_tiny_open_clip_cfg(48))
    theirs.load_state_dict(_zoo_parity()._random_state(theirs, seed=7), strict=True, assign=True)
    path = tmp_path / "clipa_open_clip.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}}, path)
    with pytest.warns(
        UserWarning, match=r"assumed gelu \(shapes of ViT-T-8-CLIPA-probe\)"
    ):  # a plain file says
        model, _ = clipforge.load(str(path), device="cpu")  # no activation: the shapes' (CLIPA's: GELU)
    assert model.arch_config["vision_pool"] == "avg" and model.arch_config["text_pool"] == "last"
    assert model.arch_config["text_causal"] is False and model.preprocess_cfg == CLIPA_PREPROCESS
    for ours, ref in zip(_features(model, small), _features(theirs, small), strict=True):
        assert (ours - ref).abs().max().item() <= ATOL


# --- the tokenizer: bert-base-uncased's WordPiece, [SEP] stripped ------------------------------------------
_VOCAB = [
    "[PAD]",
    "[unused0]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *"abcdefghijklmnopqrstuvwxyz0123456789.,!?'()-:",
    *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"),
    "photo",
    "of",
    "the",
    "cat",
    "dog",
    "cafe",
    "naive",
    "resume",
    "##ing",
    "run",
    "一",
    "猫",
]
TEXTS = [
    "A Photo of the CAT!",
    "Café naïve RÉSUMÉ",
    "running dogs",
    "一只猫",
    "  spaces\tand\nnewlines ",
    "",
    "x" * 150,
    "a " * 40,
    "emoji 😀 done",
    "ﬁ ½ &amp; html",
]


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bert_vocab")
    (folder / "vocab.txt").write_text("\n".join(_VOCAB) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512})
    )
    return folder


def test_wordpiece_ids_are_bert_uncased_with_the_sep_stripped(vocab_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from test_family_tokenizers import _open_clip_tokenizer_module

    from clipforge.text.families import clean

    ours = build_tokenizer(get_config("ViT-L-14-CLIPA")["tokenizer"], 32, [vocab_dir])
    ids = ours(TEXTS)
    assert ids.shape == (len(TEXTS), 32) and not (ids == 4).any()  # [SEP] (id 4) is padding now
    reference = _open_clip_tokenizer_module().HFTokenizer(
        str(vocab_dir), context_length=32, strip_sep_token=True
    )
    assert torch.equal(ids, reference(TEXTS))
    bert = transformers.BertTokenizer(str(vocab_dir / "vocab.txt"), do_lower_case=True)
    plain = bert(
        [clean(t, "whitespace") for t in TEXTS],
        padding="max_length",
        truncation=True,
        max_length=32,
        return_tensors="pt",
    ).input_ids
    assert torch.equal(ids, plain.masked_fill(plain == bert.sep_token_id, 0))
    assert ids[1, :4].tolist() == [
        3,
        *(_VOCAB.index(w) for w in ("cafe", "naive", "resume")),
    ]  # accents stripped
    assert ids[6, :3].tolist() == [3, 2, 0]  # a word over 100 characters is one [UNK], as transformers' BERT
    assert ids[7, 30].item() == _VOCAB.index("a") and ids[7, 31].item() == 0  # 30 pieces kept, [SEP] stripped
    assert ours.encode("Cat") == [_VOCAB.index("cat")]


# --- registry, listing, offline message ---------------------------------------------------------------------
def test_the_registry_lists_open_clips_seven_clipa_weights_with_their_preprocessing() -> None:
    import importlib

    from test_family_tokenizers import _open_clip_tokenizer_module

    _open_clip_tokenizer_module()  # registers open_clip's folder as a package without its __init__
    reference = importlib.import_module("_open_clip_tok_reference.pretrained")
    pairs = sorted((a, t) for a, t in clipforge.list_pretrained() if "CLIPA" in a)
    assert pairs == sorted((a, t) for a, t in reference.list_pretrained() if "CLIPA" in a)
    assert pairs == sorted([(n, "datacomp1b") for n in NAMES] + [("ViT-H-14-CLIPA-336", "laion2b")])
    for arch, tag in pairs:
        ours, theirs = clipforge.get_pretrained_cfg(arch, tag), reference.get_pretrained_cfg(arch, tag)
        for key in ("hf_hub", "url", "mean", "std", "interpolation", "resize_mode"):
            assert ours[key] == theirs[key], (arch, tag, key)
        assert not ours["quick_gelu"] and (ours["interpolation"], ours["resize_mode"]) == (
            "bilinear",
            "squash",
        )


def test_models_command_lists_them(capsys, monkeypatch) -> None:
    import clipforge.models.summary as summary
    from clipforge.cli.main import main

    assert set(NAMES) <= set(summary.list_configs()) and set(NAMES) <= set(clipforge.list_models())
    monkeypatch.setattr(
        summary, "list_configs", lambda include_test=False: NAMES
    )  # (counting all takes 15 s)
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out) if "CLIPA" in r["name"]}
    assert sorted(rows) == NAMES
    assert (
        rows["ViT-L-14-CLIPA"]["params"] == 414_210_561 and rows["ViT-bigG-14-CLIPA-336"]["input_size"] == 336
    )
    assert {r["activation"] for r in rows.values()} == {"gelu"}


def test_unpinned_hub_weights_get_the_same_one_line_message_offline(tmp_path, monkeypatch) -> None:
    from clipforge.weights.errors import DownloadError

    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path))
    monkeypatch.delenv("CLIPFORGE_ALLOW_UNPINNED", raising=False)
    messages = []
    for name, tag in (("ViT-L-14-CLIPA", "datacomp1b"), ("ViT-B-16-SigLIP", "webli")):
        with pytest.raises(DownloadError) as info:
            clipforge.load(name, pretrained=tag)
        messages.append(str(info.value))
    assert "\n" not in messages[0] and "UCSC-VLAA/ViT-L-14-CLIPA-datacomp1B" in messages[0]
    assert messages[0].replace("ViT-L-14-CLIPA:datacomp1b", "X").replace(
        "UCSC-VLAA/ViT-L-14-CLIPA-datacomp1B", "R"
    ).replace("UCSC-VLAA--ViT-L-14-CLIPA-datacomp1B", "F") == messages[1].replace(
        "ViT-B-16-SigLIP:webli", "X"
    ).replace("timm/ViT-B-16-SigLIP", "R").replace("timm--ViT-B-16-SigLIP", "F")


def test_a_bad_strip_sep_or_pool_is_one_line_naming_the_field() -> None:
    from clipforge.models.family_keys import check_family_fields

    config = get_config("test-clipa-tiny")
    assert check_family_fields({**config, "tokenizer": {**config["tokenizer"], "strip_sep": "yes"}}) == [
        "field 'tokenizer.strip_sep' must be true or false, got 'yes'"
    ]
    assert check_family_fields({**config, "vision_pool": "mean"}) == [
        "field 'vision_pool' must be one of class, map, avg, got 'mean'"
    ]


def test_a_saved_clipa_model_finds_its_vocab_beside_it_and_tokenizes_with_the_sep_stripped(
    tmp_path: Path,
) -> None:
    from clipforge.weights import save_safetensors

    save_safetensors(create_model_from_config(get_config("test-clipa-tiny")), tmp_path / "m.safetensors")
    (tmp_path / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "cat", "photo", "of"])
    )
    loaded = clipforge.load_model(str(tmp_path / "m.safetensors"), "cpu")
    assert loaded.tokenize(["A photo of a CAT"]).tolist() == [[2, 4, 6, 7, 4, 5] + [0] * 10]
