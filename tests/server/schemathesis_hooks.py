"""What a valid image is, for schemathesis: real image files for the API's image fields.

The OpenAPI spec can say "a file part of type image/png" or "base64 of an image file", but no
JSON schema can say "bytes that decode as an image", so schemathesis would otherwise send random
bytes as schema-valid images and count the server's correct 415 as a failure. This module
registers generators of real files for the media types and the `byte` format the spec names.
The contract test uses it; by hand:

    PYTHONPATH=tests/server SCHEMATHESIS_HOOKS=schemathesis_hooks \
        schemathesis run http://127.0.0.1:8000/openapi.json --checks all
"""

from __future__ import annotations

import base64
import io
import os

import schemathesis
from hypothesis import strategies as st
from PIL import Image

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP", "image/gif": "GIF", "image/bmp": "BMP",
           "image/tiff": "TIFF"}


def _encode(fmt: str, width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def image_files(fmt: str) -> st.SearchStrategy[bytes]:
    """Small valid image files of one format (1-64 pixels a side, any colour)."""
    side = st.integers(1, 64)
    return st.builds(_encode, st.just(fmt), side, side, st.tuples(*[st.integers(0, 255)] * 3))


def any_image_file() -> st.SearchStrategy[bytes]:
    return st.sampled_from(sorted(FORMATS.values())).flatmap(image_files)


def register() -> dict[str, object]:
    """Register the generators for the `binary` (file part) and `byte` (base64 in JSON) formats;
    returns what `unregister` needs to restore schemathesis' defaults."""
    from schemathesis.specs.openapi.formats import STRING_FORMATS
    from schemathesis.transport.serialization import Binary

    saved = {name: STRING_FORMATS.get(name) for name in ("binary", "byte")}
    schemathesis.openapi.format("binary", any_image_file().map(Binary))
    schemathesis.openapi.format("byte", any_image_file().map(lambda b: base64.b64encode(b).decode()))
    return saved


def unregister(saved: dict[str, object]) -> None:
    from schemathesis.specs.openapi import formats

    for name, strategy in saved.items():
        if strategy is not None:
            formats.register_string_format(name, strategy)


if os.environ.get("SCHEMATHESIS_HOOKS", "").split(".")[-1] == "schemathesis_hooks":  # loaded as hooks by the CLI
    register()
