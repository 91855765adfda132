"""Chinese-CLIP's download check reads a file as the generic loader does (review of session 55).

Found in review: `check_cn_architecture` sent a TorchScript archive (``torch.jit.save``: what OpenAI's
checkpoints are, so easily saved under a cn_clip name) to `torch_load_safely`, which refused it as a pickle
that "could run arbitrary code" for naming its own ``__torch__`` classes, while the generic loader reads such
archives with its restricted reader (`clipforge.weights.torchscript`). The archive is now read that way, so it
is "not a Chinese-CLIP checkpoint", and a zip dressed as TorchScript around a malicious ``data.pkl`` is still
refused as unsafe.

Also found: every TorchScript checkpoint given by path (OpenAI's ``ViT-B-32.pt`` saved by hand) passed through the
Chinese-CLIP load hook's ``torch.load``, and the CLI printed torch's "warning: 'torch.load' received a zip file
that looks like a TorchScript archive dispatching to 'torch.jit.load' (call 'torch.jit.load' directly ...)":
advice to run the archive's code. The hook now leaves TorchScript archives to the generic loader untouched.

Also pinned here: a protocol 0 or 1 pickle (which torch.save does not write and torch's weights-only reader
cannot read) is given to no unpickler by either reader, and both say it is not a checkpoint.

Nothing here may run: the forbidden global is ``<a module written here>.touch``, whose call would only create
a marker file, and every test checks that the marker does not exist.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from clipforge.weights import CheckpointFormatError, load_checkpoint
from clipforge.weights.cn_clip import check_cn_architecture
from clipforge.weights.errors import UnsafeCheckpointError

_MODULE = "s55_review_cn_marker"
_NOT_CN = "not a Chinese-CLIP checkpoint: expected bert.embeddings.word_embeddings.weight, text_projection and visual.*"


@pytest.fixture()
def evil(marker_pickler) -> tuple[object, Path]:
    """(an object whose pickle calls ``s55_review_cn_marker.touch(marker)``, the marker)."""
    cls, marker = marker_pickler(_MODULE)
    return cls(), marker


def test_a_torchscript_archive_is_not_called_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "clip_cn_rn50.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "looks like a TorchScript archive"
        with pytest.raises(CheckpointFormatError) as caught:
            check_cn_architecture(path, "cn-RN50")
    assert str(caught.value).startswith(f"clip_cn_rn50.pt does not hold cn-RN50 weights: {_NOT_CN}")
    assert sorted(load_checkpoint(path).state_dict) == ["bias", "weight"]  # what the generic loader reads


def test_a_zip_dressed_as_torchscript_around_a_malicious_pickle_is_unsafe(evil, tmp_path: Path) -> None:
    obj, marker = evil
    path = tmp_path / "clip_cn_rn50.pt"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"visual.proj": obj}, protocol=2))
        archive.writestr("archive/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("archive/version", b"3\n")
    path.write_bytes(out.getvalue())
    for read in (lambda: check_cn_architecture(path, "cn-RN50"), lambda: load_checkpoint(path)):
        with pytest.raises(UnsafeCheckpointError) as caught:
            read()
        assert caught.value.forbidden == f"{_MODULE}.touch"
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 1])
def test_a_protocol_0_or_1_pickle_is_no_checkpoint_to_either_reader(evil, tmp_path: Path, protocol: int) -> None:
    obj, marker = evil
    path = tmp_path / "clip_cn_rn50.pt"
    path.write_bytes(pickle.dumps({"visual.proj": obj}, protocol=protocol))
    with pytest.raises(CheckpointFormatError) as cn:
        check_cn_architecture(path, "cn-RN50")
    with pytest.raises(CheckpointFormatError) as generic:
        load_checkpoint(path)
    assert str(cn.value) == (f"clip_cn_rn50.pt does not hold cn-RN50 weights: {path} is not a PyTorch checkpoint: "
                             "torch.save writes a zip archive (or a legacy pickle), and its first bytes are neither")
    assert str(generic.value).startswith(f"{path} is not a checkpoint format clipforge reads: ")
    assert not marker.exists()


def test_a_torchscript_checkpoint_given_by_path_loads_without_torchs_jit_warning(tmp_path: Path) -> None:
    from clipforge.weights.cn_clip_load import load_chinese_clip

    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with warnings.catch_warnings(record=True) as caught:  # recorded: an error would be swallowed by the hook
        warnings.simplefilter("always")
        assert load_chinese_clip(path) is None  # not a Chinese-CLIP: the generic loader's to read
    assert [str(w.message) for w in caught] == []
