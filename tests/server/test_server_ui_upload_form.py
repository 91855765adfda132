"""The web UI's upload route takes file parts named `files` and nothing else (`upload_form`), answered in one line.

Before: a body of 2,500 fields without a file name was answered 507 "upload space full" (the guard counted every
part as a file against the folder's budget: the operator was told the disk was full when the request was bad); a
file part under another name was stored by gradio in a temporary file nothing counted or deleted (200 `[]`, and
12 requests left 244 MB in a folder budgeted 200 MB, `clipforge serve`, 2-core EPYC); a `files` part without a file
name was a 500 with a traceback; 1,001 files or a 100 kB part name got gradio's plain-text answers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clipforge.server import create_app

CT = "multipart/form-data; boundary=XB"


def _body(*parts: bytes) -> bytes:
    return b"".join(b"--XB\r\n" + part for part in parts) + b"--XB--\r\n"


def _field(name: bytes, value: bytes = b"v") -> bytes:
    return b'Content-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (name, value)


def _file(name: bytes = b"files", filename: bytes | None = b"a.png", data: bytes = b"x",
          content_type: bytes | None = b"image/png") -> bytes:
    disposition = b'form-data; name="%s"' % name + (b'; filename="%s"' % filename if filename is not None else b"")
    kind = b"Content-Type: %s\r\n" % content_type if content_type is not None else b""
    return b"Content-Disposition: %s\r\n%s\r\n%s\r\n" % (disposition, kind, data)


@pytest.fixture()
def ui(library, tmp_path, monkeypatch):
    """(client, upload folder, guard) of a started UI app whose gradio folder is in tmp_path."""
    from clipforge.server.ui_guard import UIGuardMiddleware

    folder = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    with TestClient(create_app(library, ui=True),
                    raise_server_exceptions=False) as client:
        guard = client.app.middleware_stack
        while not isinstance(guard, UIGuardMiddleware):
            guard = guard.app
        yield client, folder, guard


def _files(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*") if p.is_file()}


def _post(client, body: bytes, content_type: str = CT):
    return client.post("/gradio_api/upload", content=body, headers={"content-type": content_type})


def _refused(answer, status: int, *words: str) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text[:300])
    detail = answer.json()["detail"]
    assert "\n" not in detail and len(detail) < 300, detail
    for word in words:
        assert word in detail, detail
    return detail


def test_many_fields_are_a_400_naming_the_rule_not_a_507(ui):
    client, folder, guard = ui
    before = _files(folder)
    for count in (2500, 10):
        answer = _post(client, _body(*[_field(b"a%d" % i) for i in range(count)]))
        detail = _refused(answer, 400, "part 1", "'a0'", "1,000 file parts named 'files'")
        assert answer.json()["error"] == "bad_upload" and "storage" not in detail
    # after files too: the field is named at its place
    answer = _post(client, _body(_file(filename=b"one.png"), _field(b"note")))
    _refused(answer, 400, "part 2", "'note'")
    assert _files(folder) == before
    assert guard.ledger.reserved_files == 0 and guard.ledger.reserved_bytes == 0


def test_more_than_1000_files_a_huge_name_and_a_nameless_part_are_refused_in_one_json_line(ui):
    client, folder, _ = ui
    before = _files(folder)
    many = _post(client, _body(*[_file(filename=b"t%d.png" % i) for i in range(1001)]))
    _refused(many, 413, "at most 1,000 files", "file 1,001")
    assert many.json()["error"] == "too_many_files"
    for name in (b"x" * 100_000, b"files\"; filename=\"" + b"y" * 100_000):
        _refused(_post(client, _body(_file(name=name))), 413, "part 1", "header line of more than 4,224 bytes")
    many_headers = b"".join(b"X-%d: 1\r\n" % i for i in range(20)) + _file()
    _refused(_post(client, _body(many_headers)), 413, "part 1", "more than 8 headers")
    long_headers = b"".join(b"X-%d: %s\r\n" % (i, b"z" * 1500) for i in range(6)) + _file()
    _refused(_post(client, _body(long_headers)), 413, "part 1", "8,192 bytes of headers")
    no_name = b'Content-Disposition: form-data; filename="a.png"\r\n\r\nx\r\n'
    _refused(_post(client, _body(no_name)), 400, "part 1", "no Content-Disposition name")
    _refused(_post(client, _body(b"Content-Type: image/png\r\n\r\nx\r\n")), 400, "part 1", "no Content-Disposition")
    assert _files(folder) == before


def test_a_files_part_without_a_filename_is_a_400_not_a_500(ui, caplog):
    client, _, _ = ui
    answer = _post(client, _body(_field(b"files", b"\x89PNG")))
    _refused(answer, 400, "part 1", "no filename")
    assert "Traceback" not in caplog.text and "TypeError" not in caplog.text


def test_a_file_part_under_another_name_leaves_nothing_on_disk(ui):
    """gradio wrote it to a temporary file in the upload folder that nothing counted or deleted (200 `[]`)."""
    client, folder, guard = ui
    before = _files(folder)
    for _ in range(3):
        answer = _post(client, _body(_file(name=b"other", data=os.urandom(200_000))))
        _refused(answer, 400, "part 1", "'other'")
    # a good part first, then the stray one: the good one is not kept either (the request is refused whole)
    mixed = _post(client, _body(_file(filename=b"ok.png", data=os.urandom(1000)), _file(name=b"x", data=b"y")))
    _refused(mixed, 400, "part 2", "'x'")
    assert _files(folder) == before, _files(folder) - before
    assert guard.ledger.reserved_files == 0 and guard.ledger.reserved_bytes == 0


def test_what_the_page_sends_is_still_stored(ui, photos):
    """Parts named `files` with a file name: without a Content-Type, with an empty file name, several at once."""
    client, folder, guard = ui
    data = photos[0].read_bytes()
    plain = _post(client, _body(_file(filename=b"p.png", data=data, content_type=None)))
    assert plain.status_code == 200 and Path(plain.json()[0]).read_bytes() == data
    blank = _post(client, _body(_file(filename=b"", data=data + b"1")))
    assert blank.status_code == 200 and len(blank.json()) == 1
    several = client.post("/gradio_api/upload", files=[("files", (f"s{i}.png", os.urandom(64), "image/png"))
                                                       for i in range(5)])
    assert several.status_code == 200 and len(several.json()) == 5
    assert guard.ledger.files >= 7


def test_a_body_that_is_no_multipart_upload_is_a_json_400(ui):
    client, _, guard = ui
    _refused(_post(client, b"{}", "application/json"), 400, "multipart/form-data")
    _refused(_post(client, _body(_file()), "multipart/form-data"), 400, "boundary")
    _refused(_post(client, _body(_file()), "multipart/form-data; boundary=" + "b" * 300), 400, "boundary")
    assert guard.ledger.reserved_bytes == 0


@pytest.mark.parametrize("size", [1, 2, 7, 64])
def test_the_checker_reads_parts_split_anywhere_across_chunks(size):
    from clipforge.server.upload_form import UploadForm, UploadRefused

    good = _body(*[_file(filename=b"f%d.png" % i, data=os.urandom(50)) for i in range(3)])
    form = UploadForm(CT)
    for i in range(0, len(good), size):
        form.feed(good[i:i + size])
    assert form.files == 3
    bad = _body(_file(), _file(name=b"other"))
    form = UploadForm(CT)
    with pytest.raises(UploadRefused, match="part 2 of the upload is named 'other'"):
        for i in range(0, len(bad), size):
            form.feed(bad[i:i + size])


def test_the_checker_reads_names_as_gradio_does():
    """The last Content-Disposition of a part counts, and the body's charset decodes its name (as in gradio)."""
    from clipforge.server.upload_form import UploadForm, UploadRefused

    form = UploadForm(CT)
    twice = b'Content-Disposition: form-data; name="x"\r\n' + _file()
    form.feed(_body(twice))
    assert form.files == 1
    form = UploadForm(CT)
    with pytest.raises(UploadRefused, match="named 'x'"):
        form.feed(_body(_file().replace(b"\r\n", b'\r\nContent-Disposition: form-data; name="x"\r\n', 1)))
    utf16 = UploadForm(CT + "; charset=utf-16-le")
    utf16.feed(_body(_file(name="files".encode("utf-16-le"))))
    assert utf16.files == 1


def test_a_body_cut_off_inside_a_file_part_leaves_nothing_on_disk(ui):
    """gradio answered 200 `[]` to a body that stopped before its closing delimiter, and the part's temporary
    file stayed in the upload folder, counted by nothing (a cut-off 20 MB part: 20 MB a request)."""
    client, folder, guard = ui
    before = _files(folder)
    cut = _body(_file(filename=b"cut.png", data=os.urandom(300_000)))[:-len(b"\r\n--XB--\r\n")]
    _refused(_post(client, cut), 400, "closing multipart delimiter")
    _refused(_post(client, b""), 400, "closing multipart delimiter")
    assert _files(folder) == before, _files(folder) - before
    assert guard.ledger.reserved_files == 0 and guard.ledger.reserved_bytes == 0
