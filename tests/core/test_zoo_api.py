"""The zoo through the one loader: `clipforge.load(ARCH, pretrained=TAG)`, `ARCH:TAG` specs,
`create_model`, the open_clip surface, and files that cannot say their activation.

Registry downloads come from a local 127.0.0.1 "hub" (HF_ENDPOINT) serving, as
``open_clip_pytorch_model.bin`` (its ``.safetensors`` answers 404), a checkpoint with ViT-B-32's
shapes whose tensors all share one element: a file of kilobytes that still goes through
download, hash check, strict loading and a full-size model build.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from PIL import Image

import clipforge
from clipforge.models import create_model_from_config, get_config


def _shapes_only(arch: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        meta = create_model_from_config(get_config(arch))
    generator = torch.Generator().manual_seed(0)
    return {k: torch.randn((), generator=generator).expand(v.shape).to(v.dtype) for k, v in meta.state_dict().items()}


@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(_shapes_only("ViT-B-32"), buffer)
    return buffer.getvalue()


@pytest.fixture()
def hub(checkpoint_bytes, monkeypatch, tmp_path):
    body, digest = checkpoint_bytes, hashlib.sha256(checkpoint_bytes).hexdigest()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            if self.path.endswith("/resolve/main/open_clip_pytorch_model.bin"):  # no .safetensors here:
                # the downloader falls back to the hub's second file, as open_clip does
                self.send_response(302)
                self.send_header("X-Linked-Etag", f'"{digest}"')
                self.send_header("Location", "/cdn/blob")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/cdn/blob":
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLIPFORGE_ALLOW_UNPINNED", "1")  # hub files have no pinned sha256 (shapes are checked)
    yield server
    server.shutdown()


def _activations(model) -> set[str]:
    return {type(b.mlp.gelu).__name__ for b in [*model.transformer.resblocks, *model.visual.transformer.resblocks]}


def test_load_with_pretrained_tag_builds_the_weights_activation(hub):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # GELU weights under the GELU name: nothing to warn about
        model, preprocess = clipforge.load("ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu")
    assert _activations(model) == {"GELU"}
    assert model.preprocess_cfg["mean"][0] == pytest.approx(0.48145466)
    assert preprocess(Image.new("RGB", (300, 200))).shape == (3, 224, 224)
    loaded = clipforge.load_model("ViT-B-32:laion2b_s34b_b79k", "cpu")
    assert loaded.name == "ViT-B-32:laion2b_s34b_b79k" and _activations(loaded.model) == {"GELU"}


def test_quickgelu_weights_under_a_gelu_name_build_quickgelu_and_say_so(hub):
    with pytest.warns(UserWarning, match="laion400m_e31 weights were trained with quick_gelu; building ViT-B-32-quickgelu"):
        loaded = clipforge.load_model("ViT-B-32:laion400m_e31", "cpu")
    assert _activations(loaded.model) == {"QuickGELU"}


def test_create_model_with_a_tag_and_a_bare_name_without_one(hub):
    model = clipforge.create_model("ViT-B-32", pretrained="laion2b_s34b_b79k")
    assert _activations(model) == {"GELU"}
    with pytest.raises(ValueError, match=r"ViT-B-32 has no default weights: pass ViT-B-32:TAG \(tags: openai, "):
        clipforge.load("ViT-B-32", device="cpu")
    with pytest.raises(ValueError, match="no pretrained weights 'nope' for ViT-B-32"):
        clipforge.load("ViT-B-32", pretrained="nope", device="cpu")


def test_cli_accepts_arch_tag_specs(hub, tmp_path, capsys):
    from clipforge.cli.main import main

    image = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(image)
    assert main(["similarity", str(image), "--text", "red", "blue", "--json", "--device", "cpu",
                 "--model", "ViT-B-32:laion2b_s34b_b79k"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "ViT-B-32:laion2b_s34b_b79k" and len(out["probabilities"][0]) == 2


def test_saved_files_record_activation_and_preprocessing(hub, tmp_path):
    from clipforge.weights import load_checkpoint, save_safetensors

    model = clipforge.create_model("ViT-B-32", pretrained="laion2b_s34b_b79k")
    path = save_safetensors(model, tmp_path / "saved.safetensors")
    checkpoint = load_checkpoint(path)
    assert checkpoint.config["activation"] == "gelu" and checkpoint.preprocess == model.preprocess_cfg
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file says everything: no assumption, no warning
        reloaded, _ = clipforge.load(path, device="cpu")
    assert _activations(reloaded) == {"GELU"}


def test_plain_state_dict_path_warns_which_activation_it_assumed(tmp_path):
    torch.manual_seed(0)
    tiny = create_model_from_config(get_config("test-vit-tiny")).eval()
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in tiny.state_dict().items()}},
               tmp_path / "epoch_1.pt")  # open_clip's training-checkpoint layout
    with pytest.warns(UserWarning, match=r"epoch_1.pt is a plain state dict that does not record its activation; "
                                         r"assumed quick_gelu \(shapes of no published architecture\)"):
        guessed, _ = clipforge.load(tmp_path / "epoch_1.pt", device="cpu")  # clipforge's own default
    assert _activations(guessed) == {"QuickGELU"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        named = clipforge.load_model(f"test-vit-tiny:{tmp_path / 'epoch_1.pt'}", "cpu").model
        created = clipforge.create_model("test-vit-tiny", pretrained=tmp_path / "epoch_1.pt")
    assert _activations(named) == _activations(created) == {"QuickGELU"}
    text = clipforge.tokenize(["a photo of a dog"])
    with torch.no_grad():
        torch.testing.assert_close(named.encode_text(text), tiny.encode_text(text), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="do not fit architecture 'test-rn-tiny'"):
        clipforge.create_model("test-rn-tiny", pretrained=tmp_path / "epoch_1.pt")


def test_open_clip_snippet_runs_against_clipforge():
    import clipforge as open_clip

    model, preprocess_train, preprocess = open_clip.create_model_and_transforms("test-vit-tiny")
    tokenizer = open_clip.get_tokenizer("test-vit-tiny")
    image = preprocess(Image.new("RGB", (50, 40), (0, 128, 255))).unsqueeze(0)
    text = tokenizer(["a diagram", "a dog", "a cat " * 100])  # long texts are cut, as open_clip does
    assert text.shape == (3, 77) and text[2, -1] == 49407
    with torch.no_grad():
        image_features = model.encode_image(image)
        text_features = model.encode_text(text)
    image_features /= image_features.norm(dim=-1, keepdim=True)
    text_features /= text_features.norm(dim=-1, keepdim=True)
    probs = (100.0 * image_features @ text_features.T).softmax(dim=-1)
    assert probs.shape == (1, 3) and abs(probs.sum().item() - 1) < 1e-5
    assert ("ViT-B-32", "laion2b_s34b_b79k") in open_clip.list_pretrained()
    assert "ViT-bigG-14" in open_clip.list_models() and "test-vit-tiny" not in open_clip.list_models()
    quick, _, _ = open_clip.create_model_and_transforms("ViT-B-32", force_quick_gelu=True)
    assert _activations(quick) == {"QuickGELU"}


def test_weights_preprocessing_inception_and_squash():
    from clipforge.image import build_preprocess
    from clipforge.zoo import build_weights_preprocess

    image = Image.new("RGB", (300, 100), (255, 255, 255))
    openai = build_weights_preprocess(64)
    assert torch.equal(openai(image), build_preprocess(64)(image))
    inception = build_weights_preprocess(64, {"mean": [0.5] * 3, "std": [0.5] * 3})
    assert torch.allclose(inception(image), torch.ones(3, 64, 64))  # white -> (1 - 0.5) / 0.5
    gradient = Image.linear_gradient("L").rotate(90).resize((300, 100)).convert("RGB")  # dark to light, left-right
    squash = build_weights_preprocess(64, {"resize_mode": "squash"})(gradient)
    crop = openai(gradient)
    assert squash.shape == crop.shape == (3, 64, 64)
    assert not torch.allclose(squash, crop)  # the whole width squeezed in, not a centre crop


def test_shipped_models_have_a_tokenizer_and_foreign_tokens_are_one_clear_error() -> None:
    """`clipforge.get_tokenizer("clipforge-tiny-zh")` raised KeyError (architectures only), and OpenAI's 77-position
    `clipforge.tokenize` ids given to its 16-position text tower failed with "The size of tensor a (19) must match
    the size of tensor b (16)": the tokenizer of any --model spec comes from the one loader, and ids a model
    cannot read are a `TokensError` saying how to tokenize for it, on the plain and the fast path alike."""
    import clipforge
    from clipforge.models.clip import TokensError

    texts = ["一张猫的照片", "一张狗的照片"]
    loaded = clipforge.load_model("clipforge-tiny-zh", "cpu")
    tokenizer = clipforge.get_tokenizer("clipforge-tiny-zh")
    assert torch.equal(tokenizer(texts), loaded.tokenize(texts)) and tokenizer(texts).shape == (2, 16)
    assert clipforge.get_tokenizer("clipforge-tiny-zh", context_length=8)(texts).shape == (2, 8)
    foreign = clipforge.tokenize(texts)  # OpenAI's BPE at 77 positions: the end token at position 18
    for grad in (False, True):
        with torch.set_grad_enabled(grad), pytest.raises(TokensError, match="16 positions.*get_tokenizer"):
            loaded.model.encode_text(foreign)
    with pytest.raises(TokensError, match="ids below 49408"):
        loaded.model.encode_text(torch.full((1, 5), 49408))
    with torch.no_grad():
        assert loaded.model.encode_text(tokenizer(texts)).shape == (2, 256)
    with pytest.raises(KeyError, match="unknown model 'no-such-model'"):
        clipforge.get_tokenizer("no-such-model")


def test_open_clip_options_are_refused_or_said_to_be_ignored_never_dropped(tmp_path) -> None:
    """`create_model_and_transforms("ViT-B-32", force_image_size=336)` gave a 224 px model without a word, and
    `jit=True`, `force_patch_dropout`, `pretrained_image` were dropped the same way; `create_model` with weights
    came back in eval mode, without in train mode (open_clip: train mode both ways)."""
    import warnings

    import clipforge

    with pytest.raises(ValueError, match="force_image_size=336 is not supported"):
        clipforge.create_model_and_transforms("test-vit-tiny", force_image_size=336)
    with pytest.raises(ValueError, match="force_patch_dropout=0.5"):
        clipforge.create_model_and_transforms("test-vit-tiny", force_patch_dropout=0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'no_such_option'"):
        clipforge.create_model_and_transforms("test-vit-tiny", no_such_option=1)
    with pytest.warns(UserWarning, match="jit=True is ignored"):
        clipforge.create_model_and_transforms("test-vit-tiny", jit=True)
    with pytest.warns(UserWarning, match="aug_cfg is ignored"):
        clipforge.create_model_and_transforms("test-vit-tiny", aug_cfg={"scale": (0.9, 1.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # defaults, and the published size, say nothing
        model, _, _ = clipforge.create_model_and_transforms("test-vit-tiny", force_image_size=32,
                                                            force_patch_dropout=0.0, precision="amp_bf16")
    assert model.image_size in (32, (32, 32))
    path = tmp_path / "tiny.pt"
    torch.save(clipforge.create_model("test-vit-tiny").state_dict(), path)
    assert clipforge.create_model("test-vit-tiny").training and clipforge.create_model("test-vit-tiny", pretrained=path).training


def test_a_chinese_clip_tokenizer_needs_no_weights(monkeypatch, tmp_path) -> None:
    """`clipforge.get_tokenizer("cn-ViT-B-16")` loaded the model to find its tokenizer, so offline it tried to download
    the weights and failed, though Chinese-CLIP's WordPiece vocabulary ships with clipforge: it is built from the
    package, the same ids the loaded model's tokenizer gives (`tokenize_chinese`), with no model loaded."""
    import clipforge
    import clipforge.api
    from clipforge.text.wordpiece import tokenize_chinese

    def no_model(*args, **kwargs):
        raise AssertionError("get_tokenizer loaded a model")

    monkeypatch.setattr(clipforge.api, "load_model", no_model)
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path))
    texts = ["一张猫的照片", "海滩上的狗"]
    tokenizer = clipforge.get_tokenizer("cn-ViT-B-16")
    assert torch.equal(tokenizer(texts), tokenize_chinese(texts)) and tokenizer(texts).shape == (2, 52)
    assert clipforge.get_tokenizer("cn-RN50", context_length=8)(texts).shape == (2, 8)
