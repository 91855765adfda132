"""Our tokenizers against OpenAI's `simple_tokenizer.py` (clip-anytorch) on many strings.

Three things are compared with the reference's ids: our pure-Python `SimpleTokenizer`, the
Rust-backed `FastTokenizer`, and the full `tokenize` tensor against one built the way
`clip.tokenize` builds it. Synthetic strings always run; the prompt and caption corpora
come from ../shared/data and skip with a reason when it is absent.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch

from clipforge.text import EOT_TOKEN, SOT_TOKEN, FastTokenizer, SimpleTokenizer, tokenize
from clipforge.text.vocab import bytes_to_unicode, load_vocab

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

HAND_WRITTEN = [
    "",
    " ",
    "\t\n \u00a0\u3000\r\n",
    "a photo of a dog.",
    "A Photo Of A DOG!!!",
    "it's a dog's life, isn't it? they're here, we've gone, I'm sure, you'll see, he'd go",
    "IT'S THE DOG'S 'S 'T 'RE 'VE 'M 'LL 'D",
    "rock 'n' roll ''quoted'' 'single' `back` ’curly’ “double”",
    "café naïve résumé Ångström façade jalapeño crème brûlée",
    "Straße İstanbul ΣΊΣΥΦΟΣ ς ﬁnance ﬂower Ǆ ǅ ǆ ᾳ \u0345 K Å",
    "emoji 🐶🐱 🏳️‍🌈 👩‍👩‍👧 👍🏽 ❤️ 🇫🇷",
    "日本語のテキスト 中文文本 한국어 텍스트",
    "ＬＯＵＤ　ＮＯＩＳＥＳ fullwidth １２３",
    "&amp; &amp;amp; &amp;amp;amp; &lt;b&gt; &quot;hi&quot; &#39;x&#39; &#x2019; &nbsp; &eacute; &bogus;",
    "<b>bold &amp; brave</b> & co",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em\u2028line\u2029para\x0bvt\x0cff\x85nel",
    "\x00\x01control\x1b[31mred\x1b[0m\x7f chars\x1c\x1d\x1e\x1f",
    "âœ” No problems; cafÃ© mojibake; Ã©tÃ©",
    "\ufeffbom \u200bzero\u200dwidth \ud800 lone \udc00 surrogates",
    "0123456789 3.14159 1,000,000 2021-03-04 ½ ² ① Ⅻ ٣ ৩",
    "!!! ??? ... --- ___ *** ### $$$ %%% ^^^ ~~~ ||| \\\\ // <<>> {{}} [[]] (()) ;;; :::",
    "<|startoftext|>a dog<|endoftext|> <|ENDOFTEXT|> <|endoftext|>",
    "e\u0301 versus é (combining versus composed) ﬀ ﬃ",
    "𝕳𝖊𝖑𝖑𝖔 𝔀𝓸𝓻𝓵𝓭 mathematical letters",
    "x" * 300,
    "supercalifragilisticexpialidocious " * 40,
    " ".join(f"word{i}" for i in range(200)),
    "ünïcödé " * 150,
    "a" * 2000,
]

# fmt: off
_PIECES = [
    "dog", "Cat", "PHOTO", "it's", "don't", "they're", "we've", "I'm", "you'll", "he'd", "O'Neil",
    "café", "naïve", "Ærø", "Straße", "İ", "ǅ", "ﬁ", "é", "e\u0301", "ñ", "Œuvre",
    "🐶", "🏳️‍🌈", "👍🏽", "🇯🇵", "❤️", "日本", "中文", "한국", "ﾃｽﾄ", "Ａ１",
    "&amp;", "&amp;amp;", "&lt;", "&gt;", "&#39;", "&quot;", "&eacute;", "&", "<", ">",
    "\t", "\n", "\r", "\u00a0", "\u2003", "\u3000", "  ",
    "0", "42", "3.5", "1,000", "½", "²",
    "!", "?!", "...", "---", "(", ")", "[x]", "#1", "$5", "@home", "a.b.c", "'", "''", "'s", "'T",
    "<|endoftext|>", "<|startoftext|>", "\x1b[1m", "\x00", "\ufeff", "âœ”", "Ã©",
]
# fmt: on
_SEPARATORS = ["", " ", " ", " ", "  ", "\t", "\n", "-", "'", ","]


def synthetic_corpus(n_random: int = 2500, seed: int = 20210226) -> list[str]:
    """Hand-written edge cases plus seeded random mixes of the awkward pieces above."""
    rng = random.Random(seed)
    mixes = []
    for _ in range(n_random):
        parts = [rng.choice(_PIECES) for _ in range(rng.randint(1, 12))]
        text = ""
        for part in parts:
            text += part + rng.choice(_SEPARATORS)
        mixes.append(text)
    return HAND_WRITTEN + mixes


def vocabulary_words(step: int = 20, n_glued: int = 500, seed: int = 7) -> list[str]:
    """Every `step`-th vocabulary entry as text, plus a few glued together into long words.

    These exercise the merge order itself: each entry is the result of a merge chain, and
    gluing makes words whose merges compete across the seam.
    """
    byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
    words = []
    for token in list(load_vocab().encoder)[::step]:
        raw = bytes(byte_decoder[c] for c in token.replace("</w>", ""))
        try:
            words.append(raw.decode("utf-8"))
        except UnicodeDecodeError:  # a lone byte of a multi-byte character
            continue
    rng = random.Random(seed)
    return words + ["".join(rng.choices(words, k=rng.randint(2, 4))) for _ in range(n_glued)]


def _fill(template: str, name: str) -> str:
    return template.replace("{}", name).replace("{c}", name)


def _class_and_template_strings(classes: list[str], templates: list[str]) -> list[str]:
    """Every class name and template raw, each class in one template and each template with one class."""
    # Some class entries are lists of synonyms (e.g. ["angry"]): every synonym counts.
    classes = [n for c in classes for n in (c if isinstance(c, list) else [c])]
    out = list(classes) + list(templates)
    if templates:
        out += [_fill(templates[i % len(templates)], c) for i, c in enumerate(classes)]
    if classes:
        out += [_fill(t, classes[i % len(classes)]) for i, t in enumerate(templates)]
    return out


def data_corpus(data: Path) -> list[str]:
    prompts = data / "prompts"
    captions = data / "flickr8k_1k" / "captions.txt"
    if not prompts.is_dir() or not captions.is_file():
        pytest.skip(f"real data absent: need {prompts} and {captions}")
    load = lambda name: json.loads((prompts / name).read_text(encoding="utf-8"))  # noqa: E731
    texts = _class_and_template_strings(
        load("openai_imagenet_classes.json"), load("openai_imagenet_templates.json")
    )
    for entry in load("openai_prompts_all_datasets.json").values():
        texts += _class_and_template_strings(entry["classes"], entry["templates"])
    bench_classes, bench_templates = (
        load("clip_benchmark_en_classnames.json"),
        load("clip_benchmark_en_templates.json"),
    )
    for dataset, templates in bench_templates.items():
        texts += _class_and_template_strings(bench_classes.get(dataset, []), templates)
    for classes in bench_classes.values():
        texts += _class_and_template_strings(classes, [])
    with captions.open(encoding="utf-8", newline="") as fh:
        texts += [row["caption"] for row in csv.DictReader(fh)]
    return texts


def reference_rows(ids: list[list[int]], context_length: int, truncate: bool) -> torch.Tensor:
    """The [N, context_length] tensor exactly as openai/CLIP's `clip.tokenize` lays it out,
    from the reference tokenizer's ids (`[sot] + encode(text) + [eot]`, zero padded)."""
    result = torch.zeros(len(ids), context_length, dtype=torch.long)
    for i, body in enumerate(ids):
        tokens = [49406] + body + [49407]
        if len(tokens) > context_length:
            assert truncate, "caller keeps over-long texts out unless truncating"
            tokens = tokens[:context_length]
            tokens[-1] = 49407
        result[i, : len(tokens)] = torch.tensor(tokens)
    return result


@pytest.fixture(scope="module")
def ref(reference_tokenizer_module):
    # The reference reads its own bundled copy of the vocabulary, not ours.
    return reference_tokenizer_module.SimpleTokenizer()


@pytest.fixture(scope="module")
def fast() -> FastTokenizer:
    return FastTokenizer()


@pytest.fixture(scope="module")
def simple() -> SimpleTokenizer:
    return SimpleTokenizer()


def _unique(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def _assert_same_ids(ref, simple, fast, texts: list[str]) -> None:
    expected = [ref.encode(t) for t in texts]
    mismatches = [t for t, e in zip(texts, expected, strict=True) if simple.encode(t) != e]
    assert not mismatches, f"SimpleTokenizer differs on {len(mismatches)} texts, e.g. {mismatches[:3]!r}"
    got = fast.encode_batch(texts)
    mismatches = [t for t, e, g in zip(texts, expected, got, strict=True) if g != e]
    assert not mismatches, (
        f"FastTokenizer.encode_batch differs on {len(mismatches)} texts, e.g. {mismatches[:3]!r}"
    )
    # One text at a time, on a fresh memo, must give the same (memo state must not matter).
    fresh = FastTokenizer(cache_size=50)
    assert [fresh.encode(t) for t in texts[:300]] == expected[:300]


def test_synthetic_strings_match_reference(ref, simple, fast):
    texts = _unique(synthetic_corpus())
    assert len(texts) > 2000
    _assert_same_ids(ref, simple, fast, texts)


def test_vocabulary_words_match_reference(ref, simple, fast):
    texts = _unique(vocabulary_words())
    assert len(texts) > 2500
    _assert_same_ids(ref, simple, fast, texts)


@pytest.mark.data
def test_prompts_and_captions_match_reference(ref, simple, fast):
    texts = _unique(data_corpus(SHARED_DATA))
    assert len(texts) >= 5000
    _assert_same_ids(ref, simple, fast, texts)


@pytest.fixture(scope="module")
def tensor_corpus(ref) -> tuple[list[str], list[list[int]]]:
    """Texts for the tensor comparison with their reference ids (computed once, reused)."""
    texts = _unique(synthetic_corpus(n_random=600))
    if SHARED_DATA.is_dir():
        texts += data_corpus(SHARED_DATA)[-1000:]  # the last captions
    return texts, [ref.encode(t) for t in texts]


@pytest.mark.parametrize("context_length", [77, 32, 16])
def test_tokenize_tensor_matches_reference_layout(tensor_corpus, context_length):
    texts, ids = tensor_corpus
    got = tokenize(texts, context_length=context_length, truncate=True)
    expected = reference_rows(ids, context_length, truncate=True)
    assert got.dtype == torch.long and got.shape == (len(texts), context_length)
    bad = (got != expected).any(dim=1).nonzero().flatten().tolist()
    assert not bad, f"{len(bad)} rows differ, e.g. {[texts[i] for i in bad[:3]]!r}"
    assert (got[:, -1] != 0).any(), "some rows must have needed truncation for this test to mean anything"
    # Rows that fit need no truncation, so the non-truncating call must agree on them.
    fit = [i for i, body in enumerate(ids) if len(body) + 2 <= context_length]
    assert fit and torch.equal(
        tokenize([texts[i] for i in fit], context_length),
        reference_rows([ids[i] for i in fit], context_length, False),
    )


def test_special_ids_match_reference(ref):
    assert ref.encoder["<|startoftext|>"] == SOT_TOKEN == 49406
    assert ref.encoder["<|endoftext|>"] == EOT_TOKEN == 49407
    assert len(ref.encoder) == 49408


def test_bytes_are_named_as_bytes() -> None:
    """`tokenize(b"a cat")` said "texts[0] must be a str, got int: 97" (bytes iterate as ints)."""
    import pytest

    from clipforge.text import tokenize

    with pytest.raises(TypeError, match=r"got bytes b'a cat': decode it first"):
        tokenize(b"a cat")
