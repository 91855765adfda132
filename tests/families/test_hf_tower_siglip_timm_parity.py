"""The ``-siglip`` twins of open_clip's transformers-text-tower models (NLLB text tower on a timm SigLIP
image tower), compared whole with open_clip's own `create_model(name)`: image features, text features
and sigmoid logits on identical random weights, <= 1e-5 relative.

`test_hf_tower_parity` checks their text tower alone, because open_clip builds their image tower with
timm; here timm is imported beside the test-only torchvision stub (`timm_shim`), as in
`test_family_timm_parity`. Real widths; one block per tower and a 4096-row vocabulary (the hub config
the encoder reads is written to a folder, as in `test_hf_tower_parity`). In the whole suite an earlier
test has imported open_clip without timm: the check then runs in a process of its own.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import timm_shim
import torch

from clipforge.models.family_configs import HF_TOWER_CONFIGS

pytest.importorskip("transformers")

SIGLIP_ARCHS = sorted(n for n in HF_TOWER_CONFIGS if n.endswith("-siglip"))
FRESH_NODES = timm_shim.run_in_a_fresh_process(__file__, "test_siglip_twin_matches_open_clip_whole", SIGLIP_ARCHS)


def _parity_helpers():
    """test_hf_tower_parity's builders (config cut to one block, random state, ids, the loader path)."""
    import test_hf_tower_parity as helpers

    return helpers


@pytest.mark.parametrize("name", SIGLIP_ARCHS)
def test_siglip_twin_matches_open_clip_whole(name: str, tmp_path: Path, monkeypatch, request) -> None:
    timm_shim.skip_unless_checked_here(request)

    helpers = _parity_helpers()
    ours_cfg = helpers._ours(name)
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(ours_cfg["text_hf"]))
    with timm_shim.imported() as open_clip:
        timm = open_clip.timm_model.timm
        monkeypatch.setattr(timm, "create_model", functools.partial(timm.create_model, depth=helpers.LAYERS))
        reference_cfg = open_clip.get_model_config(name)
        text_cfg = {**reference_cfg["text_cfg"], "hf_model_name": str(folder), "hf_model_pretrained": False}
        reference = open_clip.create_model(name, pretrained=None, text_cfg=text_cfg).eval()
        assert type(reference.visual).__name__ == "TimmModel" and len(reference.visual.trunk.blocks) == 1
        reference.load_state_dict(helpers._random_state(reference))
        state = reference.state_dict()
        ours = helpers._loaded_through_open_clip_layout(state, tmp_path / "open_clip_pytorch_model.bin", ours_cfg)
        res = ours_cfg["image_resolution"]
        images = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(2))
        ids = helpers._ids(ours_cfg["text_hf"]["pad_token_id"], first=ours_cfg["text_hf"].get("bos_token_id"))
        with torch.no_grad():
            ref_img, ref_txt = reference.encode_image(images), reference.encode_text(ids)
            out = reference(images, ids)
            scale, bias = (out["logit_scale"], out["logit_bias"]) if isinstance(out, dict) else (out[2], out[3])
            ref_logits = scale * torch.nn.functional.normalize(ref_img, dim=-1) @ \
                torch.nn.functional.normalize(ref_txt, dim=-1).t() + bias
            our_img, our_txt = ours.encode_image(images), ours.encode_text(ids)
            our_logits, _ = ours(images, ids)
    assert helpers._relative(our_img, ref_img) <= helpers.RTOL
    assert helpers._relative(our_txt, ref_txt) <= helpers.RTOL
    assert ours.scoring == "sigmoid" and helpers._relative(our_logits, ref_logits) <= helpers.RTOL
