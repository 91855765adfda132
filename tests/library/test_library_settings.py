"""Bad run settings are the run's error, never a photo's (issue 21, item 16).

`index add --max-pixels -5` used to record every photo as failed ("too many pixels"), and later
runs skipped them as failed-and-unchanged; `--batch-size 0/-4` and `--workers -1` were accepted.
"""

from __future__ import annotations

import pytest

from clipforge.cli.main import main
from clipforge.library import Library


@pytest.mark.parametrize(("flag", "value", "words"), [
    ("--max-pixels", "-5", "--max-pixels must be a positive number of pixels"),
    ("--max-pixels", "0", "--max-pixels must be a positive number of pixels"),
])  # --batch-size and --workers: every batching command at once, tests/library/test_embed_cli_checks.py
def test_bad_add_setting_is_one_line_and_records_nothing(tmp_path, images_factory, capsys, flag, value, words):
    images_factory(tmp_path / "photos", 3)
    lib = tmp_path / "lib"
    assert main(["index", "add", str(tmp_path / "photos"), "--library", str(lib), "--model", "test-vit-tiny",
                 "-q", flag, value]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: {words}" + err.split(words, 1)[1] and err.count("\n") == 1
    assert err.rstrip().endswith(f"got {value}")
    assert not lib.exists()  # refused before the library was touched


def test_library_api_refuses_bad_settings(tmp_path, tiny_encoder, images_factory):
    images_factory(tmp_path / "photos", 2)
    with pytest.raises(ValueError, match="max_pixels must be a positive number of pixels"):
        Library(tmp_path / "lib", tiny_encoder, max_pixels=-5)
    with Library(tmp_path / "lib", tiny_encoder) as library:
        for kwargs, words in (({"batch_size": 0}, "batch_size must be at least 1"),
                              ({"batch_size": -4}, "batch_size must be at least 1"),
                              ({"workers": -1}, "workers must be 0")):
            with pytest.raises(ValueError, match=words):
                library.add(tmp_path / "photos", progress=False, **kwargs)
        assert library.store.status_counts() == {"ok": 0, "failed": 0}


def test_photos_refused_under_a_smaller_pixel_limit_are_read_again_when_it_is_raised(tmp_path, tiny_encoder,
                                                                                  images_factory):
    images_factory(tmp_path / "photos", 4)  # about 50 x 42 pixels each
    with Library(tmp_path / "lib", tiny_encoder, max_pixels=100) as library:
        report = library.add(tmp_path / "photos", workers=0, progress=False)
        assert report.failed == 4 and all("too many pixels" in reason for _, reason in report.failures)
        assert library.add(tmp_path / "photos", workers=0, progress=False).unchanged == 4  # same limit: skipped
    with Library(tmp_path / "lib", tiny_encoder) as library:  # the default limit admits them
        report = library.add(tmp_path / "photos", workers=0, progress=False)
        assert report.added == 4 and report.failed == 0
        assert library.store.status_counts() == {"ok": 4, "failed": 0}
