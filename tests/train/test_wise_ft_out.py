"""`clipforge wise-ft` with a careless --out or mismatched checkpoints: an --out that is one of the inputs is
refused before anything is written (the mix silently replaced the fine-tuned checkpoint), an --out under a
file or naming a folder is one line naming --out before the models load, and two architectures are told
apart by the fields that differ (the message printed both whole configs)."""

from __future__ import annotations

import hashlib

import pytest

from clipforge.cli.main import main


@pytest.fixture
def checkpoints(tmp_path, tiny_vit, tiny_rn):
    from clipforge.weights import save_safetensors

    return (save_safetensors(tiny_vit, tmp_path / "zs.safetensors"), save_safetensors(tiny_vit, tmp_path / "ft.safetensors"),
            save_safetensors(tiny_rn, tmp_path / "rn.safetensors"))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("which", ["--zeroshot", "--finetuned"])
def test_out_naming_an_input_checkpoint_is_refused_and_the_input_kept(checkpoints, capsys, which):
    zs, ft, _ = checkpoints
    target = ft if which == "--finetuned" else zs
    before = _digest(target)
    assert main(["wise-ft", "--zeroshot", str(zs), "--finetuned", str(ft), "--alpha", "0.3", "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --out {target} is the {which} checkpoint; writing the interpolated weights there would "
                   "replace it: name another file")
    assert _digest(target) == before


def test_out_under_a_file_or_naming_a_folder_is_one_line_before_loading(checkpoints, capsys, tmp_path, monkeypatch):
    import clipforge.api as api

    zs, ft, _ = checkpoints

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before --out was checked")

    monkeypatch.setattr(api, "load_model", no_load)
    blocked = zs / "mix.safetensors"  # zs is a file: nothing can be made under it
    assert main(["wise-ft", "--zeroshot", str(zs), "--finetuned", str(ft), "--out", str(blocked)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {blocked}: {zs} is a file, not a folder"
    folder = tmp_path / "mixes"
    folder.mkdir()
    for given in (str(folder), str(folder) + "/"):  # it advised "name the file mixes.safetensors", beside it
        assert main(["wise-ft", "--zeroshot", str(zs), "--finetuned", str(ft), "--out", given]) == 2
        assert capsys.readouterr().err.strip().startswith(f"error: --out {given} is a folder; name the file to write")


def test_another_architecture_names_the_fields_that_differ(checkpoints, capsys, tmp_path):
    zs, _, rn = checkpoints
    assert main(["wise-ft", "--zeroshot", str(zs), "--finetuned", str(rn), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the checkpoints are not the same architecture: image_resolution 32 vs 64; ")
    assert "'transformer_width'" not in err and len(err) < 400  # not both configs whole
    assert not (tmp_path / "x.safetensors").exists()
