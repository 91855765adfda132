"""The one encoder packs each tower on its first call: embedding images never packs the text tower
(issue 22.2: the bf16 copy/packing of a tower `clipforge embed` never runs cost start-up time)."""

from __future__ import annotations

import copy

import pytest
import torch

from clipforge.inference import BatchEncoder, prepare
from clipforge.inference.fast_transformer import InferenceBlock
from clipforge.models import create_model_from_config, get_config


def _packed(blocks) -> list[bool]:
    return [bool(block.__dict__.get("_cf_cache")) for block in blocks if isinstance(block, InferenceBlock)]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_images_pack_the_image_tower_only_and_compute_the_same(precision, monkeypatch) -> None:
    import clipforge.inference.precision as precision_module

    monkeypatch.setattr(precision_module, "bf16_supported", lambda: True)  # the numbers are what matter here
    torch.manual_seed(0)
    model = create_model_from_config(get_config("test-vit-tiny")).eval()
    eager = prepare(copy.deepcopy(model), precision, require_native_bf16=False)
    encoder = BatchEncoder(model, precision, copy_model=True)
    assert not any(_packed(encoder.model.visual.transformer.resblocks))  # nothing packed before the first call
    r = model.visual.input_resolution
    pixels = torch.randint(0, 256, (4, r, r, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    got = encoder.image_features(pixels)
    assert all(_packed(encoder.model.visual.transformer.resblocks))
    assert not any(_packed(encoder.model.transformer.resblocks))  # the text tower was never packed
    with torch.inference_mode():
        want = eager.encode_image(encoder.image_input(pixels))
    torch.testing.assert_close(got, torch.nn.functional.normalize(want.float(), dim=-1), rtol=0, atol=0)
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[:, 0], tokens[:, 1], tokens[:, 2] = 49406, 320, 49407
    texts = torch.from_numpy(encoder.texts(tokens))
    assert all(_packed(encoder.model.transformer.resblocks))
    with torch.inference_mode():
        torch.testing.assert_close(texts, torch.nn.functional.normalize(eager.encode_text(tokens).float(), dim=-1),
                                   rtol=0, atol=0)
