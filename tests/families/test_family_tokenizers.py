"""Family tokenizers: ids identical to the references on a multilingual corpus.

No hub here, so each test builds its tokenizer files: a SentencePiece unigram model trained on
the corpus (SigLIP's kind: T5-style ids, pad 0, eos 1, unk 2) and a `tokenizers` JSON
(SigLIP 2 / XLM-V's kind: a unigram model with a post-processor adding special tokens). The
references are what open_clip runs: its ``HFTokenizer`` (open_clip's cleaning, then
transformers' ``AutoTokenizer`` with ``padding="max_length", truncation=True``), and
transformers' ``SiglipTokenizer`` / ``PreTrainedTokenizerFast`` directly.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from family_fixtures import CORPUS, build_gemma_like_tokenizer, build_json_tokenizer, train_spiece

from clipforge.text.families import TokenizerUnavailableError, build_tokenizer, clean


def _open_clip_tokenizer_module() -> types.ModuleType:
    """open_clip's ``tokenizer.py`` imported without its package ``__init__`` (which needs torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("reference open-clip-torch is not installed")
    key = "_open_clip_tok_reference"
    if f"{key}.tokenizer" not in sys.modules:
        package = types.ModuleType(key)
        package.__path__ = [str(next(iter(spec.submodule_search_locations)))]
        sys.modules[key] = package
    return importlib.import_module(f"{key}.tokenizer")


@pytest.fixture(scope="module")
def spiece_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("spiece")
    train_spiece(folder, vocab_size=200)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "SiglipTokenizer", "model_max_length": 64, "do_lower_case": True}))
    return folder


@pytest.fixture(scope="module")
def json_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hfjson")
    build_json_tokenizer(folder, vocab_size=300)
    return folder


@pytest.mark.parametrize("context", [16, 64])
def test_sentencepiece_ids_match_open_clip_and_siglip_tokenizer(spiece_dir: Path, context: int) -> None:
    transformers = pytest.importorskip("transformers")
    spec = {"kind": "sentencepiece", "file": "spiece.model", "clean": "canonicalize", "eos_id": 1, "pad_id": 1}
    ours = build_tokenizer(spec, context, [spiece_dir])(CORPUS)
    reference = _open_clip_tokenizer_module().HFTokenizer(str(spiece_dir), context_length=context,
                                                             clean="canonicalize")(CORPUS)
    assert torch.equal(ours, reference)
    siglip = transformers.SiglipTokenizer(str(spiece_dir / "spiece.model"))
    direct = siglip([clean(t, "canonicalize") for t in CORPUS], padding="max_length", max_length=context,
                    truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ours, direct)
    assert ours.shape == (len(CORPUS), context)
    assert (ours[:, -1] == 1).all()  # every row ends in </s> or padding: the tower reads the last position


@pytest.mark.parametrize("context", [16, 77])
def test_tokenizers_json_ids_match_open_clip_and_fast_tokenizer(json_dir: Path, context: int) -> None:
    transformers = pytest.importorskip("transformers")
    spec = {"kind": "hf-json", "file": "tokenizer.json", "clean": "whitespace"}
    ours = build_tokenizer(spec, context, [json_dir])(CORPUS)
    reference = _open_clip_tokenizer_module().HFTokenizer(str(json_dir), context_length=context,
                                                             clean="whitespace")(CORPUS)
    assert torch.equal(ours, reference)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(json_dir / "tokenizer.json"), pad_token="<pad>")
    direct = fast([clean(t, "whitespace") for t in CORPUS], padding="max_length", max_length=context,
                  truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ours, direct)


def test_canonicalize_is_open_clips() -> None:
    module = _open_clip_tokenizer_module()
    for text in [*CORPUS, "Ｆｕｌｌ－ｗｉｄｔｈ：ＡＢＣ", "&amp;amp; entities &lt;b&gt;", "under_score\tand\u3000spaces"]:
        for how in ("canonicalize", "whitespace", "lower"):
            assert clean(text, how) == module.get_clean_fn(how)(text), (how, text)


def test_missing_tokenizer_file_names_it_and_where_it_looked(tmp_path: Path) -> None:
    spec = {"kind": "sentencepiece", "file": "spiece.model", "hub_repo": "timm/ViT-B-16-SigLIP"}
    tok = build_tokenizer(spec, 64, [tmp_path])
    with pytest.raises(TokenizerUnavailableError, match=r"spiece\.model.*" + str(tmp_path).replace("\\", "\\\\")):
        tok(["a cat"])


def test_gemma_style_json_with_byte_fallback_matches_fast_tokenizer(tmp_path: Path) -> None:
    """SigLIP 2's kind of file: BPE with byte fallback (emoji and unseen scripts become byte
    pieces) and a <bos>-prefixing post-processor, canonicalized as open_clip's SigLIP 2 configs say."""
    transformers = pytest.importorskip("transformers")
    build_gemma_like_tokenizer(tmp_path)
    spec = {"kind": "hf-json", "file": "tokenizer.json", "clean": "canonicalize", "pad_id": 0}
    ours = build_tokenizer(spec, 64, [tmp_path])(CORPUS + ["unseen: ᚠᛇᚻ ⚽ ∑"])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"), pad_token="<pad>")
    direct = fast([clean(t, "canonicalize") for t in CORPUS + ["unseen: ᚠᛇᚻ ⚽ ∑"]], padding="max_length",
                  max_length=64, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ours, direct)
    assert (ours[:, 0] == 2).all() and any(4 <= i < 260 for i in ours[-1].tolist())  # <bos>; byte pieces
