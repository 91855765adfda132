"""The one assertion every crafted-file test makes: `load_image` refuses the file, from a path, from bytes and from
a stream alike, naming the reason `costly.refusal` gives, before Pillow opens it."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from clipforge.image import ImageLoadError, load_image
from clipforge.image.costly import refusal


def assert_refused_everywhere(crafted: bytes, why: str, path: Path) -> None:
    """`crafted`, also written to `path`, is refused by `load_image` from each source with `why`; a path's error
    names the file."""
    path.write_bytes(crafted)
    for source in (str(path), crafted, io.BytesIO(crafted)):
        with pytest.raises(ImageLoadError, match="cannot load image .*: " + re.escape(why)) as info:
            load_image(source)
        assert info.value.reason.startswith(why)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.path == str(path) and str(path) in str(info.value)
    assert (refusal(crafted) or "").startswith(why), refusal(crafted)
