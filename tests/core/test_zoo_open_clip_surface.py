"""open_clip's API beyond its README snippet, with ``import clipforge as open_clip``, for every family.

The 12 calls the model-families issue found raising, each with what it must return, plus the
one deliberate split of meaning: a model made by ``create_model*`` returns open_clip's forward
outputs, ``clipforge.load``'s returns openai/CLIP's logits.
"""

from __future__ import annotations

import pytest
import torch

import clipforge as open_clip


@pytest.mark.parametrize("name", ["test-vit-tiny", "test-siglip-tiny", "test-worldwide-tiny"])
def test_model_surface(name: str) -> None:
    torch.manual_seed(0)
    model = open_clip.create_model(name, device="cpu")
    size = model.visual.image_size
    assert size == (model.image_size, model.image_size)
    image = torch.randn(2, 3, *size)
    text = torch.randint(3, 100, (2, model.context_length))
    with torch.no_grad():
        img = model.encode_image(image, normalize=True)
        txt = model.encode_text(text, normalize=True)
        assert torch.allclose(img.norm(dim=-1), torch.ones(2)) and torch.allclose(txt.norm(dim=-1), torch.ones(2))
        out = model(image, text)
    sigmoid = getattr(model, "logit_bias", None) is not None
    assert len(out) == (4 if sigmoid else 3)  # open_clip's CustomTextCLIP adds logit_bias for SigLIP
    assert torch.allclose(out[0], img, atol=1e-6) and torch.allclose(out[1], txt, atol=1e-6)
    assert out[2].item() == pytest.approx(model.logit_scale.exp().item())
    as_dict = open_clip.create_model(name, output_dict=True)
    with torch.no_grad():
        keys = set(as_dict(image, text))
    assert {"image_features", "text_features", "logit_scale"} <= keys and (("logit_bias" in keys) == sigmoid)
    model.lock_image_tower()
    assert not any(p.requires_grad for p in model.visual.parameters())
    assert any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("visual."))
    model.set_grad_checkpointing(True)
    assert model.transformer.grad_checkpointing and model.visual.transformer.grad_checkpointing


def test_load_keeps_openai_meaning() -> None:
    model, _ = open_clip.load("test-vit-tiny", device="cpu")
    image, text = torch.randn(2, 3, 32, 32), open_clip.tokenize(["a", "b"])
    with torch.no_grad():
        logits_per_image, logits_per_text = model(image, text)
    assert logits_per_image.shape == (2, 2) and torch.equal(logits_per_image, logits_per_text.t())


def test_registry_and_config_calls() -> None:
    assert open_clip.list_pretrained_tags_by_model("ViT-B-16-SigLIP") == ["webli"]
    cfg = open_clip.get_pretrained_cfg("ViT-B-16-SigLIP2", "webli")
    assert cfg["hf_hub"] == "timm/ViT-B-16-SigLIP2/" and cfg["resize_mode"] == "squash"
    assert tuple(cfg["mean"]) == open_clip.INCEPTION_MEAN and not cfg["quick_gelu"]
    assert open_clip.get_pretrained_cfg("ViT-H-14-worldwide", "metaclip2_worldwide")["quick_gelu"] is True
    assert open_clip.get_pretrained_cfg("ViT-B-32", "nope") == {}
    config = open_clip.get_model_config("ViT-SO400M-14-SigLIP")
    assert config["context_length"] == 16 and config["scoring"] == "sigmoid"
    assert open_clip.get_model_config("no-such-model") is None
    assert open_clip.OPENAI_DATASET_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert open_clip.OPENAI_DATASET_STD == (0.26862954, 0.26130258, 0.27577711)


def test_image_transform_is_open_clips_eval_transform() -> None:
    from PIL import Image

    transform = open_clip.image_transform(64, is_train=False, mean=open_clip.INCEPTION_MEAN,
                                          std=open_clip.INCEPTION_STD, resize_mode="squash")
    out = transform(Image.new("RGB", (100, 50), (255, 0, 0)))
    assert out.shape == (3, 64, 64)
    assert out[0].mean().item() == pytest.approx(1.0, abs=1e-3)  # (1 - 0.5) / 0.5: squash keeps every pixel red


def test_open_clip_resnet_names_are_gelu_and_their_tags_quickgelu(tmp_path) -> None:
    """open_clip's RN50 config is GELU: a GELU RN50 file no longer loads silently as QuickGELU."""

    def text_act(model) -> set[str]:
        return {type(b.mlp.gelu).__name__ for b in model.transformer.resblocks}

    torch.manual_seed(0)
    gelu = open_clip.create_model("RN50")  # one build for the activation check and the file saved below
    assert text_act(gelu) == {"GELU"}
    assert text_act(open_clip.create_model("RN50-quickgelu")) == {"QuickGELU"}
    path = tmp_path / "rn50_gelu.pt"
    torch.save(gelu.state_dict(), path)
    loaded = open_clip.create_model("RN50", pretrained=str(path))
    assert text_act(loaded) == {"GELU"}
    text = open_clip.tokenize(["a photo of a dog"])
    with torch.no_grad():
        assert torch.allclose(loaded.encode_text(text), gelu.encode_text(text), atol=1e-5)
    from clipforge.weights.registry import get_pretrained

    assert get_pretrained("RN50", "yfcc15m").activation == "quick_gelu"  # tags say QuickGELU
    assert "activation" not in open_clip.get_model_config("RN50")  # clipforge's own RN50 stays OpenAI's


@pytest.mark.parametrize("name,kind", [("ViT-B-32", "Tokenizer"), ("ViT-B-16-SigLIP", "ModelTokenizer")])
def test_get_tokenizer_follows_the_family(name: str, kind: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path))
    if kind == "ModelTokenizer":  # its file would come from the hub: place it in the cache as a download would
        pytest.importorskip("sentencepiece")
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "families"))
        from family_fixtures import train_spiece

        train_spiece(tmp_path / "tokenizers" / "timm--ViT-B-16-SigLIP")
    tokenizer = open_clip.get_tokenizer(name)
    assert type(tokenizer).__name__ == kind
    ids = tokenizer(["a photo of a cat"])
    assert ids.shape == (1, 64 if kind == "ModelTokenizer" else 77)


def _open_clip_file(name: str):
    """One of open_clip's self-contained modules (`tokenizer`, `zero_shot_metadata`, ...) loaded by itself: importing
    the package pulls in torchvision, which does not import beside this torch. Skipped without open-clip-torch."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open-clip-torch is not installed (README setup: pip install --no-deps open-clip-torch)")
    path = Path(next(iter(spec.submodule_search_locations))) / f"{name}.py"
    loader = importlib.util.spec_from_file_location(f"open_clip_{name}_alone", path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def test_tokenizer_decode_and_ids_are_open_clips() -> None:
    """Code ported from open_clip reads `tokenizer.decode`, `vocab_size`, `sot_token_id`, `eot_token_id`,
    `all_special_ids` and the module-level `open_clip.decode`; each was an AttributeError. Same values as
    open_clip's `SimpleTokenizer` on the same rows, padding and truncation included."""
    reference = _open_clip_file("tokenizer")
    ours, theirs = open_clip.get_tokenizer("ViT-B-32"), reference.SimpleTokenizer()
    assert (ours.vocab_size, ours.sot_token_id, ours.eot_token_id) == \
        (theirs.vocab_size, theirs.sot_token_id, theirs.eot_token_id)
    assert list(ours.all_special_ids) == list(theirs.all_special_ids)
    texts = ["a photo of a cat, 猫!", "Straße &amp; café: naïve résumé", "x " * 100]
    rows = ours(texts)
    assert torch.equal(rows, theirs(texts))
    for row in rows:
        assert ours.decode(row) == theirs.decode(row.tolist()) == open_clip.decode(row)
        assert ours.decode(row.tolist()) == reference.decode(row)
    assert ours.decode(ours.encode("a photo of a dog")) == "a photo of a dog "


def test_zero_shot_classifier_and_imagenet_metadata_are_open_clips() -> None:
    """open_clip's zero-shot recipe (`build_zero_shot_classifier(model, tokenizer, IMAGENET_CLASSNAMES,
    OPENAI_IMAGENET_TEMPLATES)`) was three AttributeErrors. The metadata equal open_clip's (names, and each
    template's prompt); the head equals open_clip's own function run on the same model and tokenizer, for
    callables and format strings, as [embed_dim, num_classes] unit columns. Dropping the per-prompt
    normalisation (open_clip's `normalize=True`) or the transpose fails."""
    metadata, reference = _open_clip_file("zero_shot_metadata"), _open_clip_file("zero_shot_classifier")
    names = open_clip.IMAGENET_CLASSNAMES
    assert names == tuple(metadata.IMAGENET_CLASSNAMES)
    for ours, theirs in ((open_clip.OPENAI_IMAGENET_TEMPLATES, metadata.OPENAI_IMAGENET_TEMPLATES),
                         (open_clip.SIMPLE_IMAGENET_TEMPLATES, metadata.SIMPLE_IMAGENET_TEMPLATES)):
        assert [t("golden retriever") for t in ours] == [t("golden retriever") for t in theirs]
    torch.manual_seed(0)
    model = open_clip.create_model("test-vit-tiny").eval()
    tokenizer = open_clip.get_tokenizer("test-vit-tiny")
    names = list(names[:7])
    for templates in (open_clip.OPENAI_IMAGENET_TEMPLATES[:5], ["a photo of a {}.", "itap of a {}."]):
        got = open_clip.build_zero_shot_classifier(model, tokenizer, names, templates, num_classes_per_batch=3)
        with torch.no_grad():
            want = reference.build_zero_shot_classifier(model, tokenizer, names, templates, num_classes_per_batch=3)
        assert got.shape == want.shape == (model.embed_dim, len(names))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.norm(dim=0), torch.ones(len(names)))
    with pytest.raises(ValueError, match="at least one class name"):
        open_clip.build_zero_shot_classifier(model, tokenizer, [], ["a {}."])


@pytest.mark.parametrize("name", ["test-vit-tiny", "test-siglip-tiny"])
def test_open_clip_losses_take_the_models_outputs_as_open_clip_does(name: str) -> None:
    """``loss = open_clip.ClipLoss()(*model(images, texts))`` (SigLIP: `SigLipLoss`) was an AttributeError.
    The model returns the exponentiated scale, which clipforge's own losses (log scale) would exponentiate
    again: the open_clip classes give open_clip's loss and the same gradients to every parameter,
    `logit_scale` included, and ``output_dict=True`` its dict."""
    reference = _open_clip_file("loss")
    torch.manual_seed(0)
    model = open_clip.create_model(name)
    images = torch.randn(6, 3, model.visual.input_resolution, model.visual.input_resolution)
    texts = open_clip.get_tokenizer(name)([f"a photo of thing {i}" for i in range(6)]) if name == "test-vit-tiny" \
        else torch.randint(1, model.vocab_size - 1, (6, model.context_length))
    ours, theirs = ((open_clip.ClipLoss(), reference.ClipLoss()) if name == "test-vit-tiny"
                    else (open_clip.SigLipLoss(), reference.SigLipLoss()))
    grads = []
    for loss_fn in (ours, theirs):
        model.zero_grad()
        loss = loss_fn(*model(images, texts))
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)
    assert grads[0][1].keys() == grads[1][1].keys() and "logit_scale" in grads[0][1]
    for key, value in grads[0][1].items():
        torch.testing.assert_close(value, grads[1][1][key], rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        outputs = model(images, texts)
        assert ours(*outputs, output_dict=True)["contrastive_loss"] == ours(*outputs)
        if name == "test-vit-tiny":  # clipforge's training loss on the same outputs: the scale exponentiated twice
            from clipforge.train.loss import ClipLoss as TrainingLoss

            assert not torch.isclose(TrainingLoss()(*outputs), ours(*outputs))
    with pytest.raises(ValueError, match="horovod"):
        open_clip.ClipLoss(use_horovod=True)
