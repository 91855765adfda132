"""Without the ``families`` extra, a model that needs it is one line naming it, exit 2 (audit 59, newcomer 2).

On a base install (no transformers, no sentencepiece) ``--model random:cn-RN50`` and open_clip's transformers
text towers (``xlm-roberta-*``, ``roberta-*``, ``nllb-*``, ``mt5-*``) printed a 40-line traceback and exited 1:
`cli.main.missing_extra_message` knew only the app/train/onnx/milvus modules, and the models raised a plain
ImportError (Chinese-CLIP's naming the ``dev`` extra and a ``-c constraints.txt`` a wheel user does not have).
The missing module is simulated with ``sys.modules[name] = None`` (``import name`` then raises
ModuleNotFoundError, as on a base install).
"""

from __future__ import annotations

import sys

import pytest

from clipforge.cli.main import main

LINE = "error: clipforge classify needs the 'families' extra (missing module {!r}): pip install 'clipforge[families]'\n"


@pytest.fixture()
def image(tmp_path) -> str:
    from PIL import Image

    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    return str(path)


def _classify(image: str, model: str, capsys) -> tuple[int, str]:
    code = main(["classify", image, "--labels", "fish,dog", "--model", model, "-q", "--device", "cpu"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("model", ["random:cn-RN50", "random:xlm-roberta-base-ViT-B-32", "random:nllb-clip-base",
                                   "random:mt5-base-ViT-B-32", "test-xlmr-tiny"])
def test_a_model_that_needs_transformers_names_the_families_extra(model, image, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    code, err = _classify(image, model, capsys)
    assert (code, err) == (2, LINE.format("transformers"))


def test_the_library_says_the_families_extra_too(monkeypatch) -> None:
    """Python callers get an ImportError (as before) whose text names the extra, not dev / constraints.txt."""
    from clipforge.api import load_model

    monkeypatch.setitem(sys.modules, "transformers", None)
    for model in ("random:cn-RN50", "random:roberta-ViT-B-32"):
        with pytest.raises(ImportError) as raised:
            load_model(model, "cpu")
        text = str(raised.value)
        assert "pip install 'clipforge[families]'" in text and "dev" not in text and "constraints" not in text, text
        assert isinstance(raised.value.__cause__ or raised.value.__context__, ModuleNotFoundError)


def test_a_sentencepiece_tokenizer_without_the_package_names_the_families_extra(family_checkpoints, image,
                                                                                 monkeypatch, capsys) -> None:
    """A SigLIP checkpoint with its spiece.model beside it, on an install without sentencepiece."""
    pytest.importorskip("sentencepiece")
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    code, err = _classify(image, str(family_checkpoints["siglip"]), capsys)
    assert (code, err) == (2, LINE.format("sentencepiece"))


def test_only_a_missing_module_of_an_extra_is_reported_as_one(image, monkeypatch, capsys) -> None:
    """An error raised while handling some other missing import keeps its own report; a bug keeps its traceback."""
    from clipforge.cli.main import missing_extra_message

    def raised_over(module: str, error: Exception) -> Exception:
        try:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
        except ModuleNotFoundError:
            try:
                raise error
            except Exception as exc:  # noqa: BLE001 - the chained error is the point
                return exc

    assert missing_extra_message(raised_over("transformers", ImportError("for BERT")), "x") == (
        "clipforge x needs the 'families' extra (missing module 'transformers'): pip install 'clipforge[families]'")
    assert missing_extra_message(raised_over("transformers", ValueError("bad label")), "x") is None
    assert missing_extra_message(raised_over("numpyy", ImportError("other")), "x") is None
    assert missing_extra_message(raised_over("sentencepiece", ValueError(
        "needs the sentencepiece package: pip install 'clipforge[families]'")), "tag") == (
        "clipforge tag needs the 'families' extra (missing module 'sentencepiece'): pip install 'clipforge[families]'")
