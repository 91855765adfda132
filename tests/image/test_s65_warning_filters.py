"""Opening images leaves the process's warning filters alone, from any number of threads (audit 65, finding 3).

Every image open used to run inside ``warnings.catch_warnings()`` to silence Pillow's DecompressionBombWarning.
Before Python 3.14 that saves and restores the whole global ``warnings.filters`` list, so threads opening images at
once restored each other's lists: an ``ignore DecompressionBombWarning`` filter was left behind for good (the
application's own bomb warnings were silenced) and a filter another thread added meanwhile could be dropped. The
opens now never make Pillow warn (its global check is not run on them; `max_pixels` decides), so nothing is
filtered."""

from __future__ import annotations

import io
import sys
import threading
import warnings

import pytest
from PIL import Image

from clipforge.image import load_image
from clipforge.library.thumbs import embedded_icc_profile

THREADS, ROUNDS = 4, 150


def _png(width: int = 8, height: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def _hammer(job) -> list[BaseException]:
    """`job()` ROUNDS times in each of THREADS threads, switching threads as often as the interpreter can."""
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def run():
        try:
            start.wait()
            for _ in range(ROUNDS):
                job()
        except BaseException as exc:  # pragma: no cover - reported by the test
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=run) for _ in range(THREADS)]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
    finally:
        sys.setswitchinterval(interval)
    return errors


def _openers(tmp_path):
    data = _png()
    path = tmp_path / "red.png"
    path.write_bytes(data)
    jobs = {"load_image(path)": lambda: load_image(path).size,
            "load_image(bytes)": lambda: load_image(data).size,
            "embedded_icc_profile": lambda: embedded_icc_profile(data)}
    try:
        from clipforge.server.limits import ServerLimits
        from clipforge.server.uploads import sniff_image
    except ImportError:  # the app extra is not installed: the server's check is not tested here
        return jobs
    jobs["sniff_image"] = lambda: sniff_image(data, ServerLimits()).width
    return jobs


@pytest.fixture()
def own_filters():
    """The test's own copy of the filters, put back after it whatever happened."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # an application's own setup, as the auditor's
        yield


def test_threads_opening_images_leave_the_warning_filters_as_they_were(tmp_path, own_filters):
    """The filters are never changed, not even for the span of one open (another thread could be restoring them)."""
    jobs = list(_openers(tmp_path).values())
    before = list(warnings.filters)
    counter = iter(range(10**9))
    changed: list[int] = []

    def job():
        n = next(counter)
        jobs[n % len(jobs)]()
        if warnings.filters != before:
            changed.append(n)

    errors = _hammer(job)
    assert not errors, errors
    assert changed == []
    left_behind = [(f[0], getattr(f[2], "__name__", f[2])) for f in warnings.filters if f not in before]
    assert left_behind == []
    assert warnings.filters == before


@pytest.mark.parametrize("opener", ["load_image(path)", "load_image(bytes)", "embedded_icc_profile", "sniff_image"])
def test_an_open_over_pillows_global_neither_warns_nor_filters(tmp_path, own_filters, monkeypatch, opener):
    """A file between 1x and 2x Pillow's global limit (set low by the application) opens without Pillow's warning,
    and the application's own `Image.open` of it still warns: no filter was needed, none was added."""
    jobs = _openers(tmp_path)
    if opener not in jobs:
        pytest.skip("the app extra (fastapi) is not installed")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # the 8x8 test image (64 pixels) is between 1x and 2x
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jobs[opener]()
        ours = [str(w.message) for w in caught]
        Image.open(tmp_path / "red.png").close()
        theirs = [w.category for w in caught[len(ours):]]
    assert ours == []
    assert theirs == [Image.DecompressionBombWarning]
    assert warnings.filters == before


def test_over_twice_pillows_global_the_pixel_limit_still_decides(tmp_path, monkeypatch):
    """Pillow's own refusal (over 2x its global) never refuses for clipforge, and its global is left as set."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    data = _png(20, 10)
    assert load_image(data).size == (20, 10)
    assert "too many pixels (20x10 = 200 pixels exceeds the limit of 199" in str(
        pytest.raises(ValueError, load_image, data, max_pixels=199).value)
    assert Image.MAX_IMAGE_PIXELS == 10
