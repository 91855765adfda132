"""SigLIP parity with open_clip's own model: its timm vision tower (``visual.trunk``, timm's ViT with the
MAP head) and custom text tower, on identical random weights (issue 16: "open_clip's files, timm-layout
SigLIP included").

open_clip builds the model (`create_model(name)`), its weights are perturbed so no bias or norm is
trivial, its state dict goes through clipforge's layout dispatch (`to_clipforge_layout`, what the
loader does with an open_clip file), and both models' image features, text features and sigmoid
logits agree within 1e-5 relative. Full width at the real resolution and context; two blocks per tower
and a 1,000-token vocabulary (neither changes a block's arithmetic). timm is imported beside a
test-only torchvision stub (`timm_shim`).
"""

from __future__ import annotations

import contextlib
import os

import pytest
import timm_shim
import torch

from clipforge.inference.precision import enable_fast_forward
from clipforge.models import create_model_from_config, get_config
from clipforge.models.scoring import scoring_of
from clipforge.weights.family_layouts import is_open_clip_siglip, to_clipforge_layout

RTOL = 1e-5
DEPTH, VOCAB = 2, 1000




@pytest.fixture(scope="module")
def open_clip(request):
    timm_shim.skip_unless_checked_here(request)
    with timm_shim.imported() as module:
        yield module


def test_timm_parities_in_a_fresh_process(request) -> None:
    """The timm parity cases of this file and of test_hf_tower_siglip_timm_parity run in one process of their
    own (the shim cannot mix with an open_clip an earlier test imported without timm, and one start of torch,
    open_clip, timm and transformers serves both files); this test checks that each of them PASSED there, so
    none is silently skipped in CI."""
    if os.environ.get(timm_shim.FRESH_ENV) == "1":
        pytest.skip("this is the fresh interpreter")
    with contextlib.suppress(pytest.skip.Exception):  # without transformers that file's cases skip
        import test_hf_tower_siglip_timm_parity  # noqa: F401  (registers its cases when only this file ran)
    timm_shim.assert_passes_in_a_fresh_process(request)


def _relative(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).norm() / ref.norm())


# open_clip's SigLIP (v1) towers use erf GELU: timm's `vit_base_patch16_siglip_224` sets no `act_layer`
# and the text config no `act_kwargs`. The weights were trained with the tanh approximation (big_vision's
# default; transformers' SiglipModel and clipforge's configs use it): with it, features differ from
# open_clip's by ~2e-4 relative. So v1 is compared with clipforge's towers built with erf GELU (the
# layouts, blocks and heads are what is checked); SigLIP 2 configs name tanh on both sides.
CASES = {"ViT-B-16-SigLIP": "gelu", "ViT-B-32-SigLIP2-256": "gelu_tanh"}
FRESH_NODES = timm_shim.run_in_a_fresh_process(__file__, "test_siglip_matches_open_clips_timm_tower", sorted(CASES))


@pytest.mark.parametrize("name", sorted(CASES))
def test_siglip_matches_open_clips_timm_tower(name, open_clip, monkeypatch) -> None:
    import functools

    reference_cfg = open_clip.get_model_config(name)
    timm = open_clip.timm_model.timm
    monkeypatch.setattr(timm, "create_model", functools.partial(timm.create_model, depth=DEPTH))  # build 2 blocks
    torch.manual_seed(0)
    theirs = open_clip.create_model(name, pretrained=None,
                                    text_cfg={**reference_cfg["text_cfg"], "layers": DEPTH, "vocab_size": VOCAB})
    assert type(theirs.visual).__name__ == "TimmModel" and len(theirs.visual.trunk.blocks) == DEPTH
    act = theirs.visual.trunk.blocks[0].mlp.act
    tanh = getattr(act, "approximate", None) == "tanh" or type(act).__name__ == "GELUTanh"
    assert tanh == (CASES[name] == "gelu_tanh"), act
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    theirs.eval()
    state = theirs.state_dict()
    assert is_open_clip_siglip(state)

    config = get_config(name)
    config.update(vision_layers=DEPTH, transformer_layers=DEPTH, vocab_size=VOCAB, activation=CASES[name])
    ours = create_model_from_config(config).eval()
    ours.load_state_dict(to_clipforge_layout(state), strict=True)

    res, context = config["image_resolution"], config["context_length"]
    assert theirs.visual.image_size == (res, res) and theirs.context_length == context
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, res, res, generator=gen)
    text = torch.randint(0, VOCAB, (3, context), generator=gen)
    with torch.no_grad():
        ref_image, ref_text = theirs.encode_image(images), theirs.encode_text(text)
        out = theirs(images, text)
        scale, bias = (out["logit_scale"], out["logit_bias"]) if isinstance(out, dict) else (out[2], out[3])
        ref_logits = scale * torch.nn.functional.normalize(ref_image, dim=-1) @ \
            torch.nn.functional.normalize(ref_text, dim=-1).t() + bias
        for model in (ours, enable_fast_forward(ours)):  # the plain forward and what `load_model` returns
            image, txt = model.encode_image(images), model.encode_text(text)
            logits = scoring_of(model).logits(torch.nn.functional.normalize(image, dim=-1),
                                              torch.nn.functional.normalize(txt, dim=-1))
            assert _relative(image, ref_image) <= RTOL
            assert _relative(txt, ref_text) <= RTOL
            assert _relative(logits, ref_logits) <= RTOL
    _check_locks(theirs, ours)


def _check_locks(theirs: torch.nn.Module, ours: torch.nn.Module) -> None:
    """`lock_image_tower(unlocked_groups=k)` on SigLIP's attention-pool tower was NotImplementedError: now the
    parameters it leaves trainable are those open_clip's `TimmModel.lock` (timm's `group_matcher` groups) leaves
    on the same model, name for name through the layout conversion, for every k; and the text tower's
    `lock_text_tower(k)` those of open_clip's `TextTransformer.lock`."""
    def flags(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {n: torch.tensor([float(p.requires_grad)]) for n, p in model.named_parameters()}

    def ours_from_theirs() -> dict[str, bool]:
        converted = to_clipforge_layout(flags(theirs))
        assert all(bool((v == v.flatten()[0]).all()) for v in converted.values())  # a fused tensor: one flag
        return {n: bool(v.flatten()[0]) for n, v in converted.items()}

    for tower, groups in (("image", DEPTH + 2), ("text", DEPTH + 2)):
        for k in range(groups + 2):
            theirs.requires_grad_(True)
            ours.requires_grad_(True)
            if tower == "image":
                theirs.lock_image_tower(unlocked_groups=k)
                ours.lock_image_tower(unlocked_groups=k)
            else:
                theirs.lock_text_tower(unlocked_layers=k)
                ours.lock_text_tower(unlocked_layers=k)
            expected = ours_from_theirs()
            assert {n: p.requires_grad for n, p in ours.named_parameters()} == expected, (tower, k)
