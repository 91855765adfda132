"""Images sent to the REST API are decoded in the client's turn, not all at once.

A 20 MB PNG may hold 50 million pixels: about 150 MB once decoded. The REST routes decoded every
request's image in the thread pool as soon as its body had arrived, before taking a turn, so one
client sending 40 such searches at once had 40 images decoded side by side (gigabytes of pixels),
past the per-client cap that only counted the model work after the decode. Now the decode is part of
the turn (as it already was in the web UI): at most the gate's slots decode at once, and a client's
requests beyond its cap are refused (429) before anything is decoded.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from clipforge.server import ServerLimits, api, create_app


def test_concurrent_images_of_one_client_are_decoded_in_turn(library, live_server, monkeypatch, kit, held_calls):
    limits = ServerLimits(max_client_requests=8)
    sniff = held_calls(api.sniff_image)
    monkeypatch.setattr(api, "sniff_image", sniff)
    app = create_app(library, ui=False, limits=limits)
    gate = app.state.service.gate
    image = kit.encode(kit.picture((20, 200, 20), seed=11))
    answers: list[int] = []

    def search() -> None:
        answers.append(httpx.post(f"{url}/api/search", files={"image": ("q.png", image, "image/png")},
                                  data={"top_k": 1}, timeout=120).status_code)

    with live_server(app, limits) as url:
        senders = [threading.Thread(target=search) for _ in range(6)]
        for sender in senders:
            sender.start()
        sniff.wait_placed(gate, 6)  # every request is decoding or waiting for its turn: an order, not a time
        sniff.release.set()
        for sender in senders:
            sender.join(timeout=120)
    assert answers == [200] * 6, answers
    assert sniff.peak <= gate.slots, f"{sniff.peak} images of one client were decoded at once"


def test_a_thin_strip_image_costs_a_crop_not_its_resized_length(make_client, monkeypatch):
    """A 1 x 40,000 PNG is a few hundred bytes and 40,000 pixels (far under every size and pixel limit), but
    resized whole to the model's shortest side (32 here; 224 for real models) it is 32 x 1,280,000: 41 M
    pixels and 120 MB for one anonymous search, 1 x 60,000 at 224 would be 9 GB. Uploads are decoded
    crop-first (only the crop's region is resampled); a search's query image, which the route hands over
    already decoded, is resized whole only up to `EXACT_RESIZE_PIXELS`, beyond which it is crop-first too."""
    import io

    from PIL import Image

    from clipforge.image.preprocess import EXACT_RESIZE_PIXELS

    largest: list[int] = [0]
    resize = Image.Image.resize

    def measured(self, size, *args, **kwargs):
        largest[0] = max(largest[0], int(size[0]) * int(size[1]))
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", measured)
    buffer = io.BytesIO()
    Image.new("RGB", (1, 40_000), (200, 30, 30)).save(buffer, "PNG")
    assert len(buffer.getvalue()) < 4096 and EXACT_RESIZE_PIXELS < 32 * 32 * 40_000
    client = make_client()
    for route, field, extra in (("/api/search", "image", {"top_k": 1}), ("/api/images", "file", {})):
        answer = client.post(route, files={field: ("strip.png", buffer.getvalue(), "image/png")}, data=extra)
        assert answer.status_code in (200, 201), answer.text
    assert 0 < largest[0] < 1_000_000, largest[0]  # crops and thumbnails, never the strip resized whole


@pytest.mark.parametrize("kind", ["scans", "segments", "gif", "png"])
def test_a_crafted_file_is_refused_before_decoding_on_every_image_route(kind, make_client, refused_by_every_image_route, library, progressive_jpeg,
                                                                        largest_jpeg_decode, monkeypatch):
    """*scans*: a 4,000 x 4,000 grey progressive JPEG whose AC scan is repeated 2,000 times is ~100 KB, under
    every size and pixel limit, and took 2.3 s of libjpeg to decode behind `/api/search` (a 20 MB one: many
    minutes), the reduced DCT scale of a query not helping: every scan walks every block. *segments*: 20,000
    empty comment segments (80 KB) are parsed one by one by Pillow, in Python, then by libjpeg. *gif*: 200,000
    one-byte comments (1 MB; Pillow joins them quadratically: 5 MB took 22 s to open). *png*: 100,000 empty
    chunks (1.2 MB), each read by Pillow in Python. Search, classify and upload refuse all four (422, naming
    why) from the file's structure, before Pillow parses its header or decodes a pixel, and nothing is stored."""
    import io
    import struct
    import zlib

    from PIL import GifImagePlugin, Image, JpegImagePlugin, PngImagePlugin

    from clipforge.image.costly.jpeg import MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS

    def saved(image: Image.Image, fmt: str) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        return buffer.getvalue()

    if kind == "scans":
        bomb, why = progressive_jpeg(4000, extra_scans=2000), f"JPEG with more than {MAX_JPEG_SCANS} scans"
    elif kind == "segments":
        small = saved(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
        bomb = small[:2] + b"\xff\xfe\x00\x02" * 20_000 + small[2:]
        why = f"JPEG with more than {MAX_JPEG_SEGMENTS} marker segments"
    elif kind == "gif":
        small = saved(Image.new("P", (64, 64)), "GIF")
        at = small.index(b",")
        bomb, why = small[:at] + b"\x21\xfe" + b"\x01x" * 200_000 + b"\x00" + small[at:], "GIF with more than"
    else:
        small = saved(Image.new("RGB", (64, 64)), "PNG")
        at = small.index(b"IDAT") - 4
        empty = struct.pack(">I", 0) + b"abCd" + struct.pack(">I", zlib.crc32(b"abCd"))
        bomb, why = small[:at] + empty * 100_000 + small[at:], "PNG with more than"
    assert len(bomb) < 1_500_000
    client = make_client(token="tok")
    before = library.stats()["images"]
    opened: list[int] = []
    for plugin in (JpegImagePlugin.JpegImageFile, GifImagePlugin.GifImageFile, PngImagePlugin.PngImageFile):
        monkeypatch.setattr(plugin, "_open", lambda self, parse=plugin._open: opened.append(1) or parse(self))
    refused_by_every_image_route(client, bomb, why)
    assert not opened and largest_jpeg_decode[0] == 0
    assert library.stats()["images"] == before
