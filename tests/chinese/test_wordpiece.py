"""The Chinese WordPiece tokenizer: ids identical to cn_clip's tokenizer and transformers' BertTokenizer."""

from __future__ import annotations

import hashlib

import pytest
import torch

from clipforge.text import TextTooLongError
from clipforge.text.wordpiece import WORDPIECE_VOCAB_PATH, WordPieceTokenizer, tokenize_chinese

CORPUS = [
    "一只猫", "海边的日落", "一张飞机的照片。", "猫,狗",
    "這是一張貓的照片。", "臺灣的夜市很熱鬧，還有許多小吃！", "龍鳳呈祥",  # traditional
    "我在 Starbucks 喝了一杯 latte，价格是 35 元。", "iPhone 15 Pro Max 的相机很强",
    "ＣＬＩＰ模型（全角）：测试！？。、《书名》「引号」『双引号』【括号】～…—",
    "１２３４５ 12345 3.1415926 -7 1e-5 2024年12月4日 50%",
    "🐱🐶 猫和狗 😀👍🏽 👨‍👩‍👧 🇨🇳", "emoji only 🎉🎉🎉",
    "Ünïcödé àccents café naïve", "UPPER lower MiXeD", "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nand\u3000ideographic space", "zero\u200bwidth\u200djoiner\ufeffbom",
    "control\x00\x07chars\ufffd", "日本語のテキストとカタカナ", "한국어 텍스트", "Привет, мир", "مرحبا بالعالم",
    "unaffable unbelievable supercalifragilisticexpialidocious", "http://example.com/a_b?c=d&e=f#g",
    "猫" * 60, "", "   ", "ǅ ǈ ẞ ß İstanbul",
]
# where transformers' `tokenizers` engine and cn_clip disagree, we follow cn_clip (the weights' tokenizer):
# typed special tokens, words of 101-200 characters, Python's final-sigma lower-casing, private use, CJK ext. E
EDGES = ["[CLS] [SEP] [MASK] [UNK] <S>", "a" * 150, "ΣΑΣ ὈΔΥΣΣΕΎΣ", "\ue000私用\U000F0000", "\U0002B820\U0002CEA0 猫"]


def test_vocab_is_cn_clips(cn_clip_ref) -> None:
    ours = hashlib.sha256(WORDPIECE_VOCAB_PATH.read_bytes()).hexdigest()
    theirs = hashlib.sha256((cn_clip_ref.folder / "clip" / "vocab.txt").read_bytes()).hexdigest()
    assert ours == theirs and WordPieceTokenizer().vocab_size == 21128


def test_ids_identical_to_cn_clip(cn_clip_ref) -> None:
    texts = CORPUS + EDGES
    ours = tokenize_chinese(texts, truncate=True)
    theirs = cn_clip_ref.tokenize(texts, 52)
    for text, a, b in zip(texts, ours, theirs, strict=True):
        assert a.tolist() == b.tolist(), text


def test_ids_identical_to_transformers_bert_tokenizer() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.models.bert.tokenization_bert import load_vocab  # the reference's own vocab reader

    reference = transformers.BertTokenizer(vocab=dict(load_vocab(str(WORDPIECE_VOCAB_PATH))))
    tok = WordPieceTokenizer()
    checked = 0
    for text in CORPUS:
        assert tok.encode(text) == reference(text, add_special_tokens=False)["input_ids"], text
        checked += 1
    assert checked == len(CORPUS)
    batch = reference(CORPUS[:5], padding="max_length", max_length=52, truncation=True, return_tensors="pt")
    assert torch.equal(tokenize_chinese(CORPUS[:5]), batch["input_ids"])


def test_word_pieces_and_padding() -> None:
    tok = WordPieceTokenizer()
    row = tok("一只猫", context_length=8)[0].tolist()
    assert row[0] == tok.cls_id and row[4] == tok.sep_id and row[5:] == [0, 0, 0]
    assert tok.tokens("一只猫") == ["一", "只", "猫"]
    assert tok.tokens("unaffable")[0] == "una" or tok.tokens("unaffable")[1].startswith("##")
    assert tok.decode(row) == "一 只 猫"


def test_length_policy_is_explicit() -> None:
    text = "猫" * 51
    with pytest.raises(TextTooLongError, match=r"text 0 .* 53 word pieces .* context_length=52"):
        tokenize_chinese(text)
    row = tokenize_chinese(text, truncate=True)[0]
    tok = WordPieceTokenizer()
    assert row[-1].item() == tok.sep_id and row[0].item() == tok.cls_id and (row != 0).all()
    assert tokenize_chinese("猫" * 50).shape == (1, 52)  # exactly fits
    with pytest.raises(ValueError, match="context_length"):
        tokenize_chinese("猫", context_length=1)


def test_unknown_script_is_measurable() -> None:
    tok = WordPieceTokenizer()
    assert tok.unknown_fraction("一只猫") == 0.0
    assert tok.unknown_fraction("\U0001F9FF\U000E0041") > 0.0 or tok.unknown_fraction("ꙮꙮ") > 0.0


def _random_corpus(n: int = 300, seed: int = 0) -> list[str]:
    """Seeded strings from the ranges users type: CJK (simplified and traditional), ASCII words and
    digits, full-width forms and CJK punctuation, kana, Hangul, emoji (with modifiers and ZWJ), spaces."""
    import random

    rng = random.Random(seed)
    ranges = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20, 0x7E), (0xFF01, 0xFF5E), (0x3000, 0x303F),
              (0x3040, 0x30FF), (0xAC00, 0xD7A3), (0x1F300, 0x1F6FF), (0x1F900, 0x1F9FF), (0x2000, 0x206F),
              (0x00A0, 0x017F), (0x0391, 0x03C9), (0x0410, 0x044F)]
    extras = ["\u200d", "\ufe0f", "\U0001F3FD", " ", "  ", "\n", "\t", "。", "，", "！", "？", "、", "…"]
    corpus = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 24)):
            if rng.random() < 0.15:
                parts.append(rng.choice(extras))
            else:
                lo, hi = rng.choice(ranges)
                parts.append(chr(rng.randint(lo, hi)))
        corpus.append("".join(parts))
    return corpus


def test_random_corpus_matches_both_references(cn_clip_ref) -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.models.bert.tokenization_bert import load_vocab

    corpus = [t for t in _random_corpus() if "\u03a3" not in t]  # final-sigma lower-casing: an edge, see EDGES
    ours = tokenize_chinese(corpus, truncate=True)
    assert torch.equal(ours, cn_clip_ref.tokenize(corpus, 52))
    reference = transformers.BertTokenizer(vocab=dict(load_vocab(str(WORDPIECE_VOCAB_PATH))))
    tok = WordPieceTokenizer()
    mismatched = [t for t in corpus if tok.encode(t) != reference(t, add_special_tokens=False)["input_ids"]]
    assert mismatched == []
