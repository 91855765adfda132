"""SigLIP's image tower (`InferenceMapVisionTransformer`) under `torch.autocast("cpu", torch.bfloat16)`, the way
`clipforge.load`'s plain model runs bf16: the fast path turns autocast off, splits the batch across the cores
and packs the patch convolution, as OpenAI's fast ViT does, instead of falling back to the unsplit reference
forward with the convolution re-cast on every call."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import clipforge.inference.fast_family as fast_family
from clipforge.inference import enable_fast_forward
from clipforge.models import create_model_from_config, get_config


def test_siglip_image_tower_under_autocast_splits_and_packs_its_patches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    model = create_model_from_config(get_config("test-siglip2-tiny")).eval()
    res = model.visual.input_resolution
    images = torch.randn(8, 3, res, res, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = model.encode_image(images)  # fp32 reference
    fast = enable_fast_forward(copy.deepcopy(model))
    split_sizes: list[int] = []
    split = fast_family.split_batch

    def counted(fn, x, *args, **kwargs):  # type: ignore[no-untyped-def]
        split_sizes.append(int(x.shape[0]))
        return split(fn, x, *args, **kwargs)

    def refuse(self, x):  # type: ignore[no-untyped-def]
        raise AssertionError("the reference convolution ran")

    monkeypatch.setattr(fast_family, "split_batch", counted)
    monkeypatch.setattr(torch.nn.Conv2d, "forward", refuse)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
            got = fast.encode_image(images)
            halves = torch.cat([fast.encode_image(images[:4]), fast.encode_image(images[4:])])
    finally:
        torch.set_num_threads(threads)
    assert split_sizes == [8, 4, 4]  # every call went through the split (slices of 4 on 2 threads)
    assert got.dtype == halves.dtype == torch.bfloat16  # what autocast gives the reference
    torch.testing.assert_close(got, halves, rtol=0, atol=0)  # each slice computes what it alone computes
    assert F.cosine_similarity(got.float(), want).min() >= 0.999
