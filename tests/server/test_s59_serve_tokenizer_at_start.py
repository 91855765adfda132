"""A server whose model's tokenizer cannot be built refuses to start in one line (review of stop 50): without
sentencepiece a SigLIP server started, and then answered every text search 500 `internal_error`, while the CLI
said `pip install 'clipforge[families]'` in one line."""

from __future__ import annotations

import pytest

from clipforge.cli.main import main

pytest.importorskip("fastapi")


def test_serve_stops_at_start_naming_the_extra(tmp_path, photos, monkeypatch, capsys) -> None:
    from clipforge.text import families

    lib = ["--library", str(tmp_path / "lib")]
    assert main(["index", "add", str(photos[0]), *lib, "--workers", "0", "-q"]) == 0

    def no_sentencepiece(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'sentencepiece'", name="sentencepiece")

    monkeypatch.setattr(families, "tokenize_for", no_sentencepiece)
    capsys.readouterr()
    assert main(["serve", *lib, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == ("error: clipforge serve needs the 'families' extra (missing module "
                                            "'sentencepiece'): pip install 'clipforge[families]'"), err
