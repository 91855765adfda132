"""The image loader reads a path through `regular_file.read_regular_file` (audit 63, findings 2 and 3).

It used to `os.stat` the path and then open it by name with a blocking open (up to three times: the costly-file
check, Pillow, Pillow's memory map): a file swapped for a FIFO in between hung `eval` (every folder dataset,
`Preprocess.load`, `load_image`) for ever, and a FIFO, a socket or a device was explained as "file is empty
(0 bytes)" - its size. Now the loader says what `index add` and `embed` say, and no open of it can block.

The FIFO tests run the read in a thread: a reader blocked in ``open()`` fails the test after a few seconds and is
released (a writer opens the FIFO), so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import socket
import threading
from pathlib import Path

import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.image import ImageLoadError, build_preprocess, decode_image, load_image
from clipforge.image.loading import MAX_IMAGE_FILE_BYTES

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")

_REAL_OPEN, _REAL_OS_OPEN, _REAL_STAT = builtins.open, os.open, os.stat


def _photo(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def _release(fifo: Path) -> None:
    """A reader blocked in ``open()`` of `fifo` returns once a writer has opened it."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def _run(call, fifo: Path, wait: float = 5.0):
    """`call()` in a thread: its result, or the exception it raised. Still blocked after `wait` seconds: the test
    fails (after the thread was released, so the suite goes on)."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(wait)
    blocked = thread.is_alive()
    for _ in range(50):  # the old reader opened the FIFO by name more than once
        if not thread.is_alive():
            break
        _release(fifo)
        thread.join(0.1)
    if blocked:
        pytest.fail(f"the reader blocked in open() of the FIFO {fifo}")
    return box.get("error", box.get("value"))


def _refusal(path: Path, reason: str) -> str:
    return f"cannot load image {path}: {reason}"


@needs_fifo
@pytest.mark.parametrize("entry", ["load_image", "decode_image", "Preprocess.pixels"])
def test_a_fifo_given_by_name_is_refused_as_one(tmp_path, entry):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    call = {"load_image": lambda: load_image(fifo), "decode_image": lambda: decode_image(str(fifo)),
            "Preprocess.pixels": lambda: build_preprocess(16).pixels(fifo)}[entry]
    err = _run(call, fifo)
    assert isinstance(err, ImageLoadError)
    assert str(err) == _refusal(fifo, "not a regular file (a FIFO)")
    assert (err.path, err.reason) == (str(fifo), "not a regular file (a FIFO)")


def _swap_for_fifo(path: Path) -> None:
    os.remove(path)
    os.mkfifo(path)


@needs_fifo
def test_a_photo_swapped_for_a_fifo_after_it_was_checked_is_refused_not_waited_for(tmp_path, monkeypatch):
    """The race of audit 63 (its race_fifo.py): the photo is a regular file when a scan or the loader itself
    stats it, and a FIFO by the time it is opened - here swapped right after the first ``stat`` of it, or right
    before the first ``open`` when nothing stats it first."""
    photo = _photo(tmp_path / "x.jpg")
    swapped: list[str] = []

    def stat_then_swap(path, *args, **kwargs):
        info = _REAL_STAT(path, *args, **kwargs)
        if os.fspath(path) == str(photo) and not swapped:
            swapped.append("after stat")
            _swap_for_fifo(photo)
        return info

    def swap_then_open(path, *args, **kwargs):
        if os.fspath(path) == str(photo) and not swapped:
            swapped.append("before open")
            _swap_for_fifo(photo)
        return _REAL_OS_OPEN(path, *args, **kwargs)

    def swap_then_builtin_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(photo) and not swapped:
            swapped.append("before open")
            _swap_for_fifo(photo)
        return _REAL_OPEN(file, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_then_swap)
    monkeypatch.setattr(os, "open", swap_then_open)
    monkeypatch.setattr(builtins, "open", swap_then_builtin_open)
    err = _run(lambda: decode_image(str(photo)), photo)
    monkeypatch.undo()
    assert len(swapped) == 1
    assert isinstance(err, ImageLoadError) and str(err) == _refusal(photo, "not a regular file (a FIFO)")


@needs_fifo
def test_a_photo_swapped_after_it_was_opened_is_read_as_opened(tmp_path, monkeypatch):
    """Checked and read on the one descriptor: a swap after the open changes nothing (a reader that checked the
    descriptor and then opened the name again would block here)."""
    photo = _photo(tmp_path / "x.png", (40, 30))
    swapped: list[str] = []

    def open_then_swap(path, *args, **kwargs):
        opened = _REAL_OS_OPEN(path, *args, **kwargs)
        if os.fspath(path) == str(photo) and not swapped:
            swapped.append("after os.open")
            _swap_for_fifo(photo)
        return opened

    def builtin_open_then_swap(file, *args, **kwargs):
        opened = _REAL_OPEN(file, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(photo) and not swapped:
            swapped.append("after open")
            _swap_for_fifo(photo)
        return opened

    monkeypatch.setattr(os, "open", open_then_swap)
    monkeypatch.setattr(builtins, "open", builtin_open_then_swap)
    result = _run(lambda: load_image(photo), photo)
    monkeypatch.undo()
    assert len(swapped) == 1
    assert isinstance(result, Image.Image) and result.size == (40, 30)
    assert result.getpixel((0, 0)) == (200, 30, 30)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_link_to_a_device_names_the_device(tmp_path):
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    with pytest.raises(ImageLoadError) as caught:
        load_image(link)
    assert str(caught.value) == _refusal(link, "not a regular file (a character device)")


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
def test_a_socket_names_the_socket(tmp_path):
    path = tmp_path / "sock.jpg"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(ImageLoadError) as caught:
            load_image(path)
    assert str(caught.value) == _refusal(path, "not a regular file (a socket)")


def test_the_other_refusals_of_a_path_are_worded_as_before(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "dir.jpg").mkdir()
    with open(tmp_path / "huge.jpg", "wb") as f:  # sparse: nothing of it may be read
        f.truncate(MAX_IMAGE_FILE_BYTES + 1)
    expected = {"empty.jpg": "file is empty (0 bytes)", "dir.jpg": "is a directory, not an image file",
                "gone.jpg": "file not found",
                "huge.jpg": "file is 1,073.7 MB, larger than the 1,073.7 MB read at most"}
    for name, reason in expected.items():
        with pytest.raises(ImageLoadError) as caught:
            load_image(tmp_path / name)
        assert (str(caught.value), caught.value.reason) == (_refusal(tmp_path / name, reason), reason)


@needs_fifo
def test_eval_zeroshot_names_a_fifo_in_a_folder_dataset(tmp_path, capsys):
    root = tmp_path / "ds"
    for name, rgb in (("red", (220, 30, 30)), ("blue", (30, 50, 220))):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), rgb).save(root / name / f"{i}.png")
    fifo = root / "red" / "pipe.png"
    os.mkfifo(fifo)
    argv = ["eval", "zeroshot", "--model", "test-vit-tiny", "--device", "cpu", "--workers", "0", "--quiet",
            "--batch-size", "8", "--dataset", "folder", "--root", str(root), "--templates", "simple",
            "--out", str(tmp_path / "out")]
    code = _run(lambda: main(argv), fifo, wait=60.0)
    assert code == 0
    (log,) = (tmp_path / "out").glob("*.log")
    skipped = [line.split("clipforge.evaluate: ", 1)[1] for line in log.read_text().splitlines()
               if "bad image skipped" in line]
    assert skipped == [f"bad image skipped: {fifo}: not a regular file (a FIFO)"]


@needs_fifo
def test_a_fifo_named_outright_is_not_opened(tmp_path):
    """Refused by its type before it is opened (review 63): opening it released a writer blocked in its own
    open(), which closing it then killed with SIGPIPE; a device's open has effects too (a watchdog arms)."""
    fifo = tmp_path / "w.jpg"
    os.mkfifo(fifo)
    released = threading.Event()

    def writer() -> None:
        with contextlib.suppress(OSError), open(fifo, "wb"):  # blocks until a reader opens the FIFO
            released.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    thread.join(0.3)  # let the writer reach its blocking open() (nothing else can tell us it has)
    with pytest.raises(ImageLoadError, match=r"not a regular file \(a FIFO\)"):
        load_image(fifo)
    assert not released.wait(0.5), "the loader opened the FIFO: its writer was released"
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader of our own: the writer's open returns
    thread.join(5)
    os.close(reader)
    assert released.is_set()


def test_pillow_reads_the_checked_file_not_a_copy_of_its_bytes(tmp_path, monkeypatch):
    """Review 63: the path's bytes were read whole into memory and kept alive through the decode (+138 MB of peak
    for a 144 MB TIFF); Pillow is handed the checked, opened file instead, and it is closed once decoded."""
    import clipforge.image.loading as loading

    photo = _photo(tmp_path / "x.png", (40, 30))
    seen = []
    real = loading._pil_open

    def recording(source):
        seen.append(source)
        return real(source)

    monkeypatch.setattr(loading, "_pil_open", recording)
    assert load_image(photo).size == (40, 30)
    assert len(seen) == 1 and not isinstance(seen[0], io.BytesIO) and seen[0].name == str(photo)
    assert seen[0].closed
