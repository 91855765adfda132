"""audit60 pyapi finding 6: every `create_model*` returns training mode, as open_clip's do.

`create_model_and_transforms` (and so `create_model_from_pretrained`) returned eval mode while `create_model`
returned training mode; open_clip never calls `.eval()` in either (its users do), and the README says training mode.
"""

from __future__ import annotations

import clipforge


def test_every_create_model_returns_training_mode():
    a, _, _ = clipforge.create_model_and_transforms("test-vit-tiny")
    b = clipforge.create_model_from_pretrained("test-vit-tiny", return_transform=False)
    c = clipforge.create_model("test-vit-tiny")
    assert [a.training, b.training, c.training] == [True, True, True]
    assert all(m.training for m in a.modules())
