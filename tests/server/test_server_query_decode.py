"""A query image sent to the server is decoded by the library's one reader, as an indexed photo is.

The search and classify routes used to decode the upload whole (every pixel of a 48-megapixel JPEG:
about 0.3 s and 144 MB for one anonymous request) and hand the model that picture, which took the exact
resize path; the same photo in the library had been read at a reduced JPEG scale and resampled
crop-first, so a photo searched for itself did not get its own vector back. Now the routes check the
header and pass the bytes on: the query is read exactly as `index add` reads files.
"""

from __future__ import annotations

import io

import numpy as np
import pytest


@pytest.fixture()
def big_photo(kit) -> bytes:
    """A 1600 x 1200 JPEG: large enough that the reader decodes it at 1/8 scale for a 32-pixel model."""
    buffer = io.BytesIO()
    kit.picture((40, 160, 90), seed=5, size=(1600, 1200)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _spy_pixels(monkeypatch, encoder) -> list[np.ndarray]:
    seen: list[np.ndarray] = []
    encode = encoder.encode_pixels

    def spy(pixels):
        seen.append(np.asarray(pixels).copy())
        return encode(pixels)

    monkeypatch.setattr(encoder, "encode_pixels", spy)
    return seen


@pytest.mark.parametrize("route, field, extra", [("/api/search", "image", {"top_k": 1}),
                                                  ("/api/classify", "image", {"labels": "cat, dog"})])
def test_a_query_image_gets_the_pixels_of_the_same_photo_in_the_library(make_client, library, big_photo,
                                                                       monkeypatch, largest_jpeg_decode, route,
                                                                       field, extra):
    from clipforge.data.files import read_image_bytes

    encoder = library.encoder
    indexed = read_image_bytes(big_photo, encoder.preprocess, "photo.jpg")  # what `index add` feeds the model
    seen = _spy_pixels(monkeypatch, encoder)
    largest = largest_jpeg_decode
    answer = make_client().post(route, files={field: ("q.jpg", big_photo, "image/jpeg")}, data=extra)
    assert answer.status_code == 200, answer.text
    assert len(seen) == 1 and seen[0].shape[0] == 1
    model_input = encoder.batch_encoder.image_input  # uint8 crops or float pixels -> what the model sees
    query, stored = model_input(seen[0]).numpy(), model_input(indexed.pixels).numpy()
    assert np.array_equal(query, stored), \
        f"the query was not read as the library reads it: {np.mean(query != stored):.1%} of its values differ"
    assert 0 < largest[0] <= 1600 * 1200 // 16, f"the route decoded {largest[0]:,} pixels of a 1600 x 1200 JPEG"


@pytest.mark.parametrize("route, field, extra", [("/api/search", "image", {"top_k": 1}),
                                                  ("/api/classify", "image", {"labels": "cat, dog"}),
                                                  ("/api/images", "file", {})])
def test_a_truncated_photo_is_named_in_one_422(make_client, big_photo, route, field, extra):
    """The decode moved from the route's own check into the library: the answer is still the route's."""
    what = "upload" if route == "/api/images" else ("query image" if route == "/api/search" else "image")
    answer = make_client(token="tok").post(route, files={field: ("q.jpg", big_photo[: len(big_photo) // 2],
                                                                  "image/jpeg")},
                                           data=extra, headers={"X-Token": "tok"})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["error"] == "image_load_error"
    assert body["detail"].startswith(f"{what} could not be decoded: ") and "truncated" in body["detail"], body


def test_the_header_check_still_refuses_before_decoding(make_client, kit, monkeypatch):
    """Pixels beyond the limit are refused from the header: the reader never runs."""
    from clipforge.data import files

    def never(*args, **kwargs):
        raise AssertionError("decoded a refused image")

    monkeypatch.setattr(files, "decode_crop", never)
    answer = make_client().post("/api/search", files={"image": ("b.png", kit.png_bomb(10000, 10000), "image/png")},
                                data={"top_k": 1})
    assert answer.status_code == 413 and answer.json()["error"] == "too_many_pixels", answer.text
