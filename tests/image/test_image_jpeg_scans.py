"""A progressive JPEG with thousands of scans is refused before decoding, wherever images are read.

The JPEG standard lets each scan of a progressive file refine the whole picture, and an end-of-band run
codes up to 32,767 empty blocks in a few bits, so a scan over a 16-megapixel grey picture is ~31 bytes
that libjpeg must still walk block by block. A 187 KB file of 4,000 such scans took 4.4 s to decode
(draft or not; measured here), a 20 MB one would take minutes of a core: one anonymous `/api/search`
(libjpeg-turbo's LJT-01-003; decoders such as NVIDIA DALI cap the scans). `load_image` and every
reader built on it count a progressive JPEG's scans from its marker structure first and refuse more than
`MAX_JPEG_SCANS` with one line saying so.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from clipforge.image import ImageLoadError, load_image
from clipforge.image.jpeg_scans import MAX_JPEG_SCANS, progressive_scans


def test_the_scan_count_reads_the_marker_structure(progressive_jpeg):
    plain = progressive_jpeg()
    assert progressive_scans(plain) == 6  # libjpeg's default progressive script for one component
    assert progressive_scans(progressive_jpeg(extra_scans=7)) == progressive_scans(plain) + 7
    # SOS bytes inside another segment (an EXIF thumbnail, an ICC profile) are not scans
    assert progressive_scans(progressive_jpeg(app_payload=b"\xff\xda\x00\x08" * 500)) == progressive_scans(plain)
    baseline = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(baseline, "JPEG")
    assert progressive_scans(baseline.getvalue()) == 1
    assert progressive_scans(b"\xff\xd8\xff\xda") == 1  # cut short: what is there is counted, nothing raised


def test_a_jpeg_with_thousands_of_scans_is_refused_before_any_decoding(progressive_jpeg, largest_jpeg_decode, tmp_path):
    evil = progressive_jpeg(1024, extra_scans=3 * MAX_JPEG_SCANS)
    assert len(evil) < 64_000
    (tmp_path / "scans.jpg").write_bytes(evil)
    for source in (evil, str(tmp_path / "scans.jpg"), io.BytesIO(evil)):
        with pytest.raises(ImageLoadError, match=f"progressive JPEG with more than {MAX_JPEG_SCANS} scans") as info:
            load_image(source, draft_size=224)
        assert "scans.jpg" in str(info.value) or not isinstance(source, str)
    assert largest_jpeg_decode[0] == 0  # refused from the markers: no pixel was decoded


def test_ordinary_progressive_jpegs_still_load(progressive_jpeg):
    at_limit = progressive_jpeg(64, extra_scans=MAX_JPEG_SCANS - progressive_scans(progressive_jpeg(64)))
    assert progressive_scans(at_limit) == MAX_JPEG_SCANS
    assert load_image(at_limit).size == (64, 64)
    assert load_image(progressive_jpeg(64, app_payload=b"\xff\xda" * 300)).size == (64, 64)
    photo = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").save(photo, "JPEG", progressive=True, optimize=True)
    assert load_image(photo.getvalue()).size == (256, 256)


def test_index_add_counts_it_as_a_bad_file_and_goes_on(progressive_jpeg, tmp_path, tiny_vit):
    from clipforge.image import build_preprocess
    from clipforge.library import Encoder, Library

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "scans.jpg").write_bytes(progressive_jpeg(512, extra_scans=2 * MAX_JPEG_SCANS))
    Image.new("RGB", (40, 30), (200, 20, 20)).save(photos / "red.png")
    with Library(tmp_path / "lib", Encoder(tiny_vit, build_preprocess(32), name="t")) as library:
        report = library.add(photos, workers=0, progress=False)
        assert (report.added, report.failed) == (1, 1)
        failed = [r for r in library.list_images(status="failed")]
        assert len(failed) == 1 and f"more than {MAX_JPEG_SCANS} scans" in failed[0].error
