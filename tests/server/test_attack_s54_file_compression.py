"""An upload served back at `/gradio_api/file=` is never compressed (found by attack session 54).

gradio compresses an answer whose path ends in a text extension (`.txt`, `.json`, `.svg`, ...) when the client
accepts brotli or gzip, on the event loop, chunk by chunk: a 19 MB upload named `big.txt` cost 0.27 s (brotli) and
0.7 s (gzip) of the loop's CPU for each anonymous GET of it, as often as its browser asked. Uploads are photos
(which do not compress) or refused: the file is sent as it was stored.
"""

from __future__ import annotations

import os

import pytest


@pytest.mark.parametrize("encoding", ["br", "gzip", "gzip, deflate, br"])
def test_an_upload_is_sent_as_stored_whatever_encoding_is_accepted(ui_client, encoding):
    data = os.urandom(64 * 1024)
    uploaded = ui_client.post(
        "/gradio_api/upload", files=[("files", ("notes.json", data, "application/json"))]
    )
    assert uploaded.status_code == 200, uploaded.text
    answer = ui_client.get(f"/gradio_api/file={uploaded.json()[0]}", headers={"accept-encoding": encoding})
    assert answer.status_code == 200 and "content-encoding" not in answer.headers, (
        answer.headers
    )  # before: br, gzip
    assert answer.content == data and answer.headers["content-length"] == str(len(data))
