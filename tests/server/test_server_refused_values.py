"""A refused value is echoed back cut short: at most 40 characters of it, `...` marking the cut.

The web UI reads its top_k field as a number, so a client that sent `1e308` was told "top_k must be between
1 and 200, got " and all 309 digits of it; a Content-Length of 400 nines came back whole, with its commas.
"""

from __future__ import annotations

import asyncio

import pytest

from clipforge.server import ServerLimits


def test_shown_cuts_long_values_and_keeps_short_ones():
    from clipforge.server.errors import SHOWN_CHARS, shown

    assert shown(12) == "12" and shown("x" * SHOWN_CHARS) == "x" * SHOWN_CHARS
    digits = str(int(1e308))
    assert len(digits) == 309 and shown(int(1e308)) == digits[:40] + "..."
    assert shown(10**5000) == "a number of more than 40 digits"  # str() refuses past 4,300 digits


def test_the_ui_top_k_error_cuts_the_number_it_repeats(library, tmp_path):
    pytest.importorskip("gradio")
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    handlers = _Handlers(LibraryService(library), str(tmp_path))
    max_k = ServerLimits().max_top_k
    for sent, echoed in (
        (1e308, str(int(1e308))[:40] + "..."),
        ("1e308", str(int(1e308))[:40] + "..."),
        (0, "0"),
    ):
        _, status = asyncio.run(handlers.search("a red picture", None, sent, None))
        assert status == f"⚠️ **400 invalid top k**: top\\_k must be between 1 and {max_k}, got {echoed}", status


def test_a_huge_declared_content_length_is_not_repeated_in_full(make_client):
    client = make_client()
    answer = client.post("/api/search", content=b"", headers={"content-length": "9" * 400})
    assert answer.status_code == 413, answer.text
    limit = ServerLimits().max_body_bytes
    assert answer.json() == {
        "error": "payload_too_large",
        "detail": f"request body of {'9,999' + ',999' * 8 + ',99'}... bytes exceeds the limit of {limit:,} bytes "
        f"(files up to {ServerLimits().max_upload_bytes:,} bytes are accepted)",
    }
