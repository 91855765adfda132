"""`clipforge export onnx --out` a folder that cannot be created is one line naming --out, before the model loads.

`--out /proc/nope` passed the writability check (root may write in /proc) and ended in a bare
"[Errno 2] No such file or directory: '/proc/nope'" after the model had loaded.
"""

from __future__ import annotations

from clipforge.cli.main import main


def test_an_out_folder_that_cannot_be_made_is_one_line_before_the_model(capsys, monkeypatch):
    import clipforge.cli.common as common

    def never(*args, **kwargs):
        raise AssertionError("the model loaded before --out was checked")

    monkeypatch.setattr(common, "load_model_for_cli", never)
    assert main(["export", "onnx", "--model", "test-vit-tiny", "--out", "/proc/clipforge-nope/x"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: --out /proc/clipforge-nope/x: cannot create folder /proc/clipforge-nope (No such file or "
        "directory); expected a folder this user can create and write\n"
    ), err


def test_a_failed_model_load_leaves_no_folder_it_made(tmp_path, capsys):
    out = tmp_path / "new" / "onnx"
    assert main(["export", "onnx", "--model", "no-such-model", "--out", str(out)]) == 2
    assert not (tmp_path / "new").exists()
    assert capsys.readouterr().err.startswith("error: model 'no-such-model' is neither")
