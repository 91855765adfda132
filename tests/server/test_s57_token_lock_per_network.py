"""The wrong-token lock counts an IPv6 client's /64, as every other per-address cap does.

It was keyed on the address as sent: after ten wrong tokens from 2001:db8::1 (429), forty more guesses from
2001:db8::2 ... ::41 (the same /64, which one IPv6 host is usually given whole) were all compared and answered
401, never 429 - no limit at all for such a client."""

from __future__ import annotations

from fastapi.testclient import TestClient

import clipforge.server.security as security


def test_addresses_of_one_ipv6_network_share_one_wrong_token_count(make_client, kit, monkeypatch) -> None:
    monkeypatch.setattr(security.time, "monotonic", lambda: 1000.0)
    app = make_client(token="correct horse").app
    upload = {"files": {"file": ("x.png", kit.encode(kit.picture((5, 100, 5), seed=7)), "image/png")}}

    def guess(address: str, token: str) -> int:
        return TestClient(app, client=(address, 1234)).post("/api/images", headers={"X-Token": token},
                                                             **upload).status_code

    statuses = [guess(f"2001:db8::{i + 1:x}", f"guess{i}") for i in range(security.MAX_WRONG_TOKENS + 2)]
    assert statuses == [401] * security.MAX_WRONG_TOKENS + [429] * 2, statuses
    assert guess("2001:db8:0:0:ffff::99", "correct horse") == 429  # the right token too, anywhere in the /64
    assert guess("2001:db8:0:1::1", "correct horse") == 201  # the next /64 is another client
    assert guess("198.51.100.4", "correct horse") == 200  # already in the library (same bytes): 200
