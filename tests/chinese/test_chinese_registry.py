"""Chinese-CLIP in the one registry: `clipforge.list_pretrained()` lists the cn-* models (tag ``cn_clip``), and
their downloads take the registry's verified path (a local 127.0.0.1 server stands in for the hub): refused
without the opt-in, and under it every tensor's shape is checked before the file is cached."""

from __future__ import annotations

import io

import pytest
import torch

import clipforge
from clipforge.models.chinese_clip import chinese_clip_config, create_chinese_clip

pytest.importorskip("transformers")

NAMES = {"cn-RN50", "cn-ViT-B-16", "cn-ViT-L-14", "cn-ViT-L-14-336", "cn-ViT-H-14"}


def _cn_file(config: dict, expanded: bool) -> bytes:
    """A cn_clip checkpoint ({"state_dict": {"module.*"}}): `expanded` = full shapes from one element per
    tensor (kilobytes on disk), else real random weights of `config`."""
    if expanded:
        with torch.device("meta"):
            meta = create_chinese_clip(config).state_dict()
        gen = torch.Generator().manual_seed(0)
        state = {k: (torch.randn((), generator=gen).mul(0.02).expand(v.shape) if v.is_floating_point()
                     else torch.zeros(v.shape, dtype=v.dtype)) for k, v in meta.items()}
    else:
        torch.manual_seed(0)
        state = create_chinese_clip(config).state_dict()
    buffer = io.BytesIO()
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}}, buffer)
    return buffer.getvalue()


@pytest.fixture()
def hub(local_hub, monkeypatch, tmp_path):
    """{hub path: bytes} served with the hub's announced sha256; the list of paths fetched comes back."""
    files: dict[str, bytes] = {}
    served = local_hub(files)
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIPFORGE_ALLOW_UNPINNED", raising=False)
    return files, served


def test_list_pretrained_and_models_list_chinese_clip() -> None:
    pairs = clipforge.list_pretrained()
    assert {name for name, tag in pairs if tag == "cn_clip"} == NAMES and len(pairs) == len(set(pairs))
    assert "cn-ViT-B-16:cn_clip" in clipforge.list_pretrained(as_str=True)
    assert clipforge.list_pretrained_tags_by_model("cn-ViT-L-14") == ["cn_clip"]
    cfg = clipforge.get_pretrained_cfg("cn-ViT-B-16", "cn_clip")
    assert cfg["hf_hub"] == "OFA-Sys/chinese-clip-vit-base-patch16/" and cfg["resize_mode"] == "squash"
    from clipforge.cli.models import summarize_pretrained

    rows = {r["name"]: r for r in summarize_pretrained()}  # the `clipforge models --all` ARCH:TAG table
    for name in NAMES:
        row = rows[f"{name}:cn_clip"]
        config = chinese_clip_config(name)
        assert (row["builds"], row["input_size"], row["embed_dim"]) == (name, config["image_resolution"],
                                                                         config["embed_dim"])


def test_download_refused_without_the_opt_in(hub) -> None:
    files, served = hub
    files["/OFA-Sys/chinese-clip-rn50/resolve/main/clip_cn_rn50.pt"] = b"never fetched"
    from clipforge.weights.errors import DownloadError

    with pytest.raises(DownloadError) as err:
        clipforge.load_model("cn-RN50", "cpu")
    assert "CLIPFORGE_ALLOW_UNPINNED=1" in str(err.value) and served == []


def test_wrong_shapes_are_refused_under_the_opt_in(hub, monkeypatch, tmp_path) -> None:
    """A hub (or mirror) that answers cn-ViT-B-16 with another model is refused, and nothing is cached
    (before, Chinese-CLIP downloads skipped the registry's shape check: this file was loaded)."""
    files, served = hub
    small = chinese_clip_config("cn-ViT-B-16", vision_layers=1, text_num_hidden_layers=1, image_resolution=64)
    files["/OFA-Sys/chinese-clip-vit-base-patch16/resolve/main/clip_cn_vit-b-16.pt"] = _cn_file(small, False)
    monkeypatch.setenv("CLIPFORGE_ALLOW_UNPINNED", "1")
    with pytest.raises(Exception, match="does not hold cn-ViT-B-16 weights") as err:
        clipforge.load_model("cn-ViT-B-16", "cpu")
    assert "refused the downloaded file" in str(err.value) and len(served) == 1
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_right_shapes_download_once_and_load(hub, monkeypatch, tmp_path) -> None:
    files, served = hub
    files["/OFA-Sys/chinese-clip-rn50/resolve/main/clip_cn_rn50.pt"] = _cn_file(chinese_clip_config("cn-RN50"), True)
    monkeypatch.setenv("CLIPFORGE_ALLOW_UNPINNED", "1")
    loaded = clipforge.load_model("cn-RN50:cn_clip", "cpu")
    assert loaded.name == "cn-RN50" and loaded.model.languages == ("zh",)
    cached = tmp_path / "cache" / "OFA-Sys--chinese-clip-rn50--clip_cn_rn50.pt"
    assert cached.is_file() and cached.with_name(cached.name + ".sha256").is_file()
    assert clipforge.load_model("cn-RN50", "cpu").name == "cn-RN50" and len(served) == 1  # the cached copy
    from clipforge.weights import is_cached

    assert is_cached("cn-RN50", tag="cn_clip")


def test_a_file_saved_where_the_error_said_is_named_with_the_one_step_left(hub, tmp_path) -> None:
    """The refusal says to fetch the file and save it at the cache path; a user who did so got the same "could not
    download ... save it as <that path>" again. Now the line says the file is there and what accepts it."""
    files, served = hub
    from clipforge.weights.errors import DownloadError

    cached = tmp_path / "cache" / "OFA-Sys--chinese-clip-rn50--clip_cn_rn50.pt"
    with pytest.raises(DownloadError) as err:
        clipforge.load_model("cn-RN50", "cpu")
    assert f"save it as {cached}" in str(err.value)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"saved by hand")
    with pytest.raises(DownloadError) as err:
        clipforge.load_model("cn-RN50", "cpu")
    message = str(err.value)
    assert message.startswith(f"{cached} is there, but clipforge pins no sha256 for the cn-RN50:cn_clip weights")
    assert "set CLIPFORGE_ALLOW_UNPINNED=1 for one run" in message and "could not download" not in message
    assert served == []


def test_a_file_saved_by_hand_and_refused_under_the_opt_in_is_named_with_why(
    hub, tmp_path, monkeypatch
) -> None:
    """Under the opt-in, a file saved at the cache path whose tensors are not the model's was deleted (to fetch a
    good copy) and, offline, the line said to "save it as <that path> and set CLIPFORGE_ALLOW_UNPINNED=1": what the
    user had just done. Now it says the file was refused, why, and that it was removed."""
    _, served = hub
    from clipforge.weights.errors import DownloadError

    cached = tmp_path / "cache" / "OFA-Sys--chinese-clip-rn50--clip_cn_rn50.pt"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"saved by hand")
    monkeypatch.setenv("CLIPFORGE_ALLOW_UNPINNED", "1")
    with pytest.raises(DownloadError) as err:
        clipforge.load_model("cn-RN50", "cpu")
    message = str(err.value)
    assert message.startswith(f"{cached} was refused ({cached.name} does not hold cn-RN50 weights: "), message
    assert ") and removed; could not download the cn-RN50:cn_clip weights (" in message
    assert "\n" not in message and not cached.exists() and served == []
