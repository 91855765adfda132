"""``cn-ARCH:PATH`` loads that Chinese-CLIP checkpoint, as ``ARCH:PATH`` does for OpenAI's architectures (session 56).

Before: ``--model cn-ViT-B-16:/path/to/file.pt`` said the model "is neither a known name (... cn-ViT-B-16 ...) nor
an existing checkpoint file", listing the very name typed, and ``load_model("cn-ViT-B-16", pretrained=path)``
(``clipforge.load``'s open_clip form) said the same of ``cn-ViT-B-16``. Now the file (a cn_clip ``.pt``, a
safetensors file of one, or a ChineseCLIPModel folder) is read by the Chinese-CLIP loader, its tensors must be
exactly the named architecture's (else `check_shapes`' one line), and the model is built with that architecture's
head counts, which shapes alone cannot give.

The architectures here are small stand-ins registered for the test (``cn-test-tiny``: a 64-wide ViT and a 64-wide
one-layer BERT with two heads each), so each load takes a fraction of a second; ``cn-ViT-B-16`` itself is used
where only its shapes are compared (built on the meta device).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from clipforge.api import load_model
from clipforge.cli.main import main
from clipforge.weights import CheckpointFormatError

pytest.importorskip("transformers")

_ARCH = "cn-test-tiny"
_TINY_PARAMETERS = "1,522,561"  # the tiny model's tensors, as check_shapes counts them
_B16 = "188,262,913"  # cn-ViT-B-16's


@pytest.fixture()
def tiny(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """(a cn_clip checkpoint of `_ARCH`, its tensors in our names), with `_ARCH` registered for the test."""
    from clipforge.models import chinese_configs
    from clipforge.models.chinese_clip import create_chinese_clip

    monkeypatch.setitem(chinese_configs.CN_TEXT_TOWERS, "test-bert-tiny", {
        "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 128})
    monkeypatch.setitem(chinese_configs.CHINESE_CLIP_CONFIGS, _ARCH, {
        "embed_dim": 32, "image_resolution": 32, "vision_layers": 1, "vision_width": 64, "vision_patch_size": 16,
        "vision_head_width": 32, "text": "test-bert-tiny"})
    torch.manual_seed(0)
    state = create_chinese_clip(_ARCH).state_dict()
    path = tmp_path / "tiny.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v.half() for k, v in state.items()}}, path)
    return path, {k: v.half().float() for k, v in state.items()}


@pytest.fixture()
def image(tmp_path: Path) -> str:
    path = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (220, 20, 20)).save(path)
    return str(path)


def _same_tensors(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    got = model.state_dict()
    return all(torch.equal(got[k], v) for k, v in state.items())


def test_arch_colon_path_loads_the_file_with_the_architectures_heads(tiny) -> None:
    path, state = tiny
    loaded = load_model(f"{_ARCH}:{path}")
    assert (loaded.name, loaded.weights) == (f"{_ARCH}:tiny.pt", str(path.resolve()))
    assert _same_tensors(loaded.model, state)
    # the named architecture's two heads per tower; the plain path reads one (64 wide / 64) from the shapes
    assert loaded.model.bert.config.num_attention_heads == 2
    assert loaded.model.visual.transformer.resblocks[0].attn.heads == 2
    plain = load_model(str(path)).model
    assert plain.bert.config.num_attention_heads == 1 and _same_tensors(plain, state)


def test_pretrained_path_is_the_same_as_arch_colon_path(tiny) -> None:
    import clipforge

    path, state = tiny
    loaded = load_model(_ARCH, pretrained=str(path))
    assert (loaded.name, loaded.weights) == (f"{_ARCH}:tiny.pt", str(path.resolve()))
    model, _ = clipforge.load(_ARCH, pretrained=str(path))
    assert _same_tensors(model, state) and model.bert.config.num_attention_heads == 2


def test_a_folder_and_a_safetensors_file_load_too(tiny, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from clipforge.weights.cn_clip import save_chinese_hf

    path, state = tiny
    folder = save_chinese_hf(load_model(str(path)).model, tmp_path / "folder")
    flat = tmp_path / "tiny.weights"  # recognised by its bytes, whatever its name
    save_file({k: v.contiguous() for k, v in state.items()}, str(flat))
    for spec in (folder, flat):
        loaded = load_model(f"{_ARCH}:{spec}")
        assert loaded.name == f"{_ARCH}:{spec.name}" and _same_tensors(loaded.model, state)


def test_on_the_command_line(tiny, image: str, capsys) -> None:
    path, _ = tiny
    assert main(["classify", image, "--labels", "猫,狗", "--model", f"{_ARCH}:{path}", "-q"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == image and {line.split()[-1] for line in out.splitlines()[1:]} == {"猫", "狗"}


def test_a_file_of_another_architecture_is_one_line(tiny, image: str, capsys) -> None:
    path, _ = tiny
    assert main(["classify", image, "--labels", "a,b", "--model", f"cn-ViT-B-16:{path}", "-q"]) == 2
    assert capsys.readouterr().err == (
        f"error: {path} does not hold cn-ViT-B-16 weights: {_TINY_PARAMETERS} parameters where cn-ViT-B-16 has "
        f"{_B16}; text_projection has shape (64, 32), not (768, 512)\n")
    with pytest.raises(CheckpointFormatError):
        load_model("cn-ViT-B-16", pretrained=str(path))


@pytest.mark.parametrize(("obj", "said"), [
    ([torch.zeros(2)], "it holds a list, not a dict of tensors (cn_clip's files hold one under 'state_dict')"),
    ({"visual.proj": torch.zeros(2)},
     "expected bert.embeddings.word_embeddings.weight, text_projection and visual.* tensors"),
])
def test_a_file_that_is_no_chinese_clip_says_what_it_holds(tmp_path: Path, obj: object, said: str) -> None:
    path = tmp_path / "other.ckpt"
    torch.save(obj, path)
    with pytest.raises(CheckpointFormatError) as caught:
        load_model(f"cn-ViT-B-16:{path}")
    assert str(caught.value) == f"{path} does not hold cn-ViT-B-16 weights: not a Chinese-CLIP checkpoint: {said}"


@pytest.mark.parametrize("tail", ["/no/such/clip_cn_vit-b-16.pt", "openai"])
def test_a_tail_that_is_no_file_and_no_tag_says_what_to_type(image: str, capsys, tail: str) -> None:
    assert main(["classify", image, "--labels", "a,b", "--model", f"cn-ViT-B-16:{tail}", "-q"]) == 2
    assert capsys.readouterr().err == (
        f"error: model cn-ViT-B-16:{tail}: {tail!r} is neither a tag of cn-ViT-B-16's weights (cn_clip: cn-ViT-B-16 "
        "alone downloads them) nor an existing file or folder; cn-ViT-B-16:PATH loads a Chinese-CLIP checkpoint or "
        "ChineseCLIPModel folder\n")


def test_a_url_after_the_architecture_names_the_registry_spec(image: str, capsys) -> None:
    url = "https://huggingface.co/OFA-Sys/chinese-clip-vit-base-patch16/resolve/main/clip_cn_vit-b-16.pt"
    assert main(["classify", image, "--labels", "a,b", "--model", f"cn-ViT-B-16:{url}", "-q"]) == 2
    assert capsys.readouterr().err == (
        f"error: model {url!r} is a URL: clipforge does not load models from URLs directly; these are the registry's "
        "cn-ViT-B-16 weights: pass 'cn-ViT-B-16' instead, which downloads them and checks their sha256\n")
