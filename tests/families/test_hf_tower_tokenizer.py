"""Tokenizers of open_clip's transformers-text-tower models: ids identical to open_clip's
``HFTokenizer`` (``AutoTokenizer.from_pretrained`` on the same folder, whitespace cleaning, padded and
truncated to the context) on a multilingual corpus (English, Chinese, Japanese, Arabic, Hindi,
emoji, mixed).

No hub here: each test builds the files the hub repository publishes (XLM-R and RoBERTa: a
``tokenizer.json`` beside the model's ``config.json``, from which AutoTokenizer picks the class;
NLLB: ``tokenizer.json`` with ``tokenizer_config.json``; mT5: ``spiece.model`` with
``tokenizer_config.json``), each trained here on the corpus. clipforge reads them with the class its
registered config names, which must be the one AutoTokenizer picks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from family_fixtures import CORPUS, EXTRA, build_json_tokenizer, train_spiece
from test_family_tokenizers import _open_clip_tokenizer_module

from clipforge.models.configs import ARCH_CONFIGS
from clipforge.text.families import TokenizerUnavailableError, build_tokenizer

pytest.importorskip("transformers")


def _roberta_bpe(folder: Path) -> None:
    """A byte-level BPE ``tokenizer.json`` as RoBERTa's (<s> 0, <pad> 1, </s> 2, <unk> 3; "<s> $A </s>")."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([t for t in CORPUS + EXTRA if t.strip()] * 20, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.save(str(folder / "tokenizer.json"))


def _files(kind: str, folder: Path) -> None:
    """The files `kind`'s hub repository publishes, built here."""
    if kind == "xlm-roberta":
        build_json_tokenizer(folder, vocab_size=300)
        (folder / "tokenizer_config.json").unlink()  # the hub repo has none: AutoTokenizer reads config.json
        (folder / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    elif kind == "roberta":
        _roberta_bpe(folder)
        (folder / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    elif kind == "nllb":
        build_json_tokenizer(folder, vocab_size=300)
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "NllbTokenizer",
                                                                  "src_lang": "eng_Latn"}))
    else:
        train_spiece(folder, vocab_size=300)
        (folder / "tokenizer_config.json").write_text(json.dumps({"extra_ids": 0, "eos_token": "</s>",
                                                                  "pad_token": "<pad>", "unk_token": "<unk>"}))
        (folder / "config.json").write_text(json.dumps({"model_type": "mt5"}))


ARCHS = {"xlm-roberta": "xlm-roberta-base-ViT-B-32", "roberta": "roberta-ViT-B-32", "nllb": "nllb-clip-base",
         "mt5": "mt5-base-ViT-B-32"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_tokenizers")
    out = {}
    for kind in ARCHS:
        out[kind] = root / kind
        _files(kind, out[kind])
    return out


@pytest.mark.parametrize("kind", sorted(ARCHS))
@pytest.mark.parametrize("context", [77, 16])
def test_ids_match_open_clips_hf_tokenizer(kind: str, context: int, folders) -> None:
    spec = ARCH_CONFIGS[ARCHS[kind]]["tokenizer"]  # the registered config's own tokenizer spec
    ours = build_tokenizer(spec, 77, [folders[kind]])
    reference = _open_clip_tokenizer_module().HFTokenizer(str(folders[kind]), context_length=77)
    got = ours(CORPUS, context_length=context)
    want = reference(CORPUS, context_length=context)
    assert got.dtype == torch.long and got.shape == (len(CORPUS), context)
    assert torch.equal(got, want)
    assert type(ours._load()).__name__ == type(reference.tokenizer).__name__  # the class AutoTokenizer picks
    assert len({tuple(r) for r in got.tolist()}) > len(CORPUS) // 2  # the corpus really is tokenized


def test_registered_tokenizer_specs_name_the_hub_files() -> None:
    for arch in ("xlm-roberta-base-ViT-B-32", "xlm-roberta-large-ViT-H-14", "roberta-ViT-B-32"):
        assert ARCH_CONFIGS[arch]["tokenizer"]["file"] == "tokenizer.json"
    for arch in ("nllb-clip-base", "nllb-clip-large-siglip"):
        assert ARCH_CONFIGS[arch]["tokenizer"]["hub_repo"].startswith("facebook/nllb-200-distilled-")
        assert "tokenizer_config.json" in ARCH_CONFIGS[arch]["tokenizer"]["extra_files"]
    assert ARCH_CONFIGS["mt5-xl-ViT-H-14"]["tokenizer"]["file"] == "spiece.model"


def test_without_transformers_one_line_names_the_extra(monkeypatch, folders) -> None:
    from clipforge.models import create_model_from_config, get_config

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ImportError, match=r"clipforge\[families\]") as err:
        create_model_from_config(get_config("test-xlmr-tiny"))
    assert "\n" not in str(err.value)
    spec = ARCH_CONFIGS["xlm-roberta-base-ViT-B-32"]["tokenizer"]
    with pytest.raises(TokenizerUnavailableError, match=r"clipforge\[families\]") as err:
        build_tokenizer(spec, 77, [folders["xlm-roberta"]])(["a cat"])
    assert "\n" not in str(err.value)


def test_missing_tokenizer_file_says_where_it_comes_from(tmp_path) -> None:
    spec = ARCH_CONFIGS["nllb-clip-base"]["tokenizer"]
    with pytest.raises(TokenizerUnavailableError, match="facebook/nllb-200-distilled-600M"):
        build_tokenizer(spec, 77, [tmp_path])(["a cat"])
