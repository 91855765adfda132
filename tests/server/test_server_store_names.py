"""How a Milvus store is named to people (`StoreSpec.describe`): in `serve`'s start-up line, in errors and stats.

A `milvus+https://` store was shown as `milvus://`, and the `--store` value errors suggest ("fill one with
`clipforge index add ... --store ...`") then opened it without TLS. Whatever a spec's URI holds, only its
HOST:PORT is shown: never a user, a password or a token.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from clipforge.library.backend import StoreSpec, parse_store


@pytest.mark.parametrize(
    "text",
    [
        "milvus+https://db.example:19530/photos",
        "milvus://10.0.0.7:19530/photos",
        "milvus+https://[::1]:443/clipforge",
    ],
)
def test_a_milvus_store_is_described_as_the_store_value_that_opens_it(text):
    spec = parse_store(text)
    assert spec.describe() == text
    assert parse_store(spec.describe()) == spec  # the suggested --store opens the same store, TLS included


def test_the_start_up_line_names_a_secure_store_as_given(tmp_path):
    from clipforge.server.runner import _served_store

    library = SimpleNamespace(
        spec=parse_store("milvus+https://db.example:19530/photos"), paths=SimpleNamespace(root=tmp_path)
    )
    assert _served_store(library) == (
        "milvus+https://db.example:19530/photos",
        f"; thumbnails and uploads in {tmp_path}",
    )


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://alice:s3cret@db.example:19530", "db.example:19530"),
        ("https://db.example:19530/?token=s3cret", "db.example:19530"),
        ("https://alice:s3/cret@db.example:19530", "(address withheld)"),  # an unescaped / in the password
        ("https://alice:123/s3cret@db.example:19530", "(address withheld)"),
        ("https://db.example:19530/?token=s3cret@x", "(address withheld)"),
    ],
)
def test_credentials_in_a_uri_are_never_shown(uri, shown):
    described = StoreSpec("milvus", uri, "photos", secure=True).describe()
    assert described == f"milvus+https://{shown}/photos"
    assert "s3" not in described and "alice" not in described and "cret" not in described


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        ("milvus://root:s3cret@db.example:19530/photos", "milvus://db.example:19530 [credentials withheld]"),
        (
            "milvus+https://db.example:19530/photos?token=s3cret",
            "milvus+https://db.example:19530 [credentials withheld]",
        ),
        ("postgres://root:s3cret@db.example/photos", "postgres://db.example [credentials withheld]"),
        ("root:s3cret@db.example", "[withheld: it may hold credentials]"),
        # a server URI under the lite scheme was echoed whole, as if it were a file path
        (
            "milvus-lite://root:s3cret@db.example:19530/photos",
            "milvus-lite://db.example:19530 [credentials withheld]",
        ),
    ],
)
def test_a_refused_spec_with_credentials_is_not_printed_back(spec, shown):
    """The refusal of a spec carrying a password or token repeated the spec whole, secret included."""
    with pytest.raises(ValueError) as refused:
        parse_store(spec)
    assert str(refused.value).startswith(f"--store {shown!r}: "), str(refused.value)
    assert "s3cret" not in str(refused.value) and "root" not in str(refused.value)
