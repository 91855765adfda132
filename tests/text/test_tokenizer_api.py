"""Behaviour of the public tokenizer API: layout, truncation, errors, decode, vocab file."""

from __future__ import annotations

import gzip
import hashlib
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import clipforge.text as text_pkg
from clipforge.text import (
    EOT_TOKEN,
    SOT_TOKEN,
    VOCAB_PATH,
    VOCAB_SHA256,
    FastTokenizer,
    SimpleTokenizer,
    TextTooLongError,
    get_tokenizer,
    tokenize,
)
from clipforge.text.cleaning import clean_chunks, clean_text, clean_text_full
from clipforge.text.vocab import bytes_to_unicode, read_merges

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LONG = "a photo of a very large and extremely fluffy dog " * 12  # 120 words, well over 77 tokens


def test_packaged_vocab_is_openai_file_with_licence():
    digest = hashlib.sha256(VOCAB_PATH.read_bytes()).hexdigest()
    assert digest == VOCAB_SHA256
    licence = (VOCAB_PATH.parent / "LICENSE.openai-clip.txt").read_text(encoding="utf-8")
    assert "MIT License" in licence and "OpenAI" in licence


@pytest.mark.data
def test_packaged_vocab_matches_sha256_in_shared_readme():
    readme = SHARED_DATA / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} is absent")
    line = next(x for x in readme.read_text(encoding="utf-8").splitlines() if "bpe_simple_vocab_16e6" in x)
    published = re.search(r"sha256 ([0-9a-f]{64})", line).group(1)
    assert hashlib.sha256(VOCAB_PATH.read_bytes()).hexdigest() == published


def test_row_layout_sot_tokens_eot_then_zeros():
    ids = get_tokenizer().encode("a photo of a dog.")
    assert ids == [
        320,
        1125,
        539,
        320,
        1929,
        269,
    ]  # a</w> photo</w> of</w> a</w> dog</w> .</w> in OpenAI's vocab
    row = tokenize("a photo of a dog.")[0]
    assert row.dtype == torch.long and row.shape == (77,)
    assert row[: len(ids) + 2].tolist() == [SOT_TOKEN, *ids, EOT_TOKEN]
    assert not row[len(ids) + 2 :].any()
    assert tokenize([]).shape == (0, 77)
    assert tokenize("").tolist() == [[SOT_TOKEN, EOT_TOKEN] + [0] * 75]


def test_literal_special_markers_in_text_become_special_ids():
    row = tokenize("<|endoftext|> dog <|StartOfText|>")[0]
    assert row[:5].tolist() == [SOT_TOKEN, EOT_TOKEN, 1929, SOT_TOKEN, EOT_TOKEN]


def test_truncate_keeps_eot_last():
    ids = get_tokenizer().encode(LONG)
    assert len(ids) > 100
    for context_length in (77, 20, 2):
        row = tokenize([LONG, "dog"], context_length=context_length, truncate=True)[0]
        assert row.tolist() == [SOT_TOKEN, *ids[: context_length - 2], EOT_TOKEN]
        assert row[-1] == EOT_TOKEN and row.argmax() == context_length - 1


def test_too_long_error_names_text_index_and_count():
    n_tokens = len(get_tokenizer().encode(LONG)) + 2
    with pytest.raises(TextTooLongError) as info:
        tokenize(["short", LONG], context_length=77)
    message = str(info.value)
    assert "text 1" in message and repr(LONG[:60] + "...") in message
    assert f"{n_tokens} tokens" in message and "context_length=77" in message and "truncate=True" in message
    # Catchable the way openai/CLIP users (RuntimeError) and new code (ValueError) expect.
    assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeError)


@pytest.mark.parametrize("context_length", [5, 16, 100])
def test_other_context_lengths_fit_exactly_up_to_the_limit(context_length):
    words = ["dog"] * (context_length - 2)  # "dog" is one token
    fits = tokenize(" ".join(words), context_length=context_length)
    assert fits.shape == (1, context_length) and fits[0, -1] == EOT_TOKEN
    with pytest.raises(ValueError, match=f"{context_length + 1} tokens"):
        tokenize(" ".join(words + ["dog"]), context_length=context_length)


def test_bad_arguments_are_explained():
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str, got int"):
        tokenize(["ok", 3])
    with pytest.raises(ValueError, match="context_length must be an int >= 2"):
        tokenize("dog", context_length=1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        get_tokenizer().decode([49408])


def test_get_tokenizer_is_built_once_and_not_at_import():
    assert get_tokenizer() is get_tokenizer()
    # Importing must cost neither the Rust build nor torch (the CLI imports us for --help).
    probe = (
        "import sys, clipforge.text, clipforge.text.tokenizer as m;"
        "print(m._tokenizer is None, 'tokenizers' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]


@pytest.mark.parametrize(
    "plain",
    ["a photo of a dog", "the quick brown fox jumps over the lazy dog", "zebra", "", "x y z 1 2 3"],
)
def test_decode_round_trips_plain_lowercase_text(plain):
    for tok in (get_tokenizer(), SimpleTokenizer()):
        assert tok.decode(tok.encode(plain)).rstrip(" ") == plain


def test_fast_and_simple_decode_agree_on_arbitrary_ids():
    fast, simple = get_tokenizer(), SimpleTokenizer()
    rng = random.Random(7)
    for _ in range(200):
        ids = [rng.randrange(49408) for _ in range(rng.randint(0, 12))]
        assert fast.decode(ids) == simple.decode(ids)
    # Half of a multi-byte character decodes to U+FFFD, as in the reference.
    lead_byte = fast.encoder[bytes_to_unicode()[0xE6]]  # first of the 3 UTF-8 bytes of "日"
    assert fast.decode([lead_byte]) == simple.decode([lead_byte]) == "\ufffd"
    assert fast.decode(torch.tensor([1929, 269])) == "dog . "


def test_batch_and_single_encode_agree_and_memo_eviction_is_harmless():
    texts = [f"photo number {i} of a dog, it's nice" for i in range(200)] + ["", "  ", "Café ☕"]
    small = FastTokenizer(cache_size=10)
    assert (
        small.encode_batch(texts) == [small.encode(t) for t in texts] == get_tokenizer().encode_batch(texts)
    )
    assert small.decode_batch(small.encode_batch(["a dog", "a cat"])) == ["a dog ", "a cat "]


def test_threads_share_one_tokenizer_safely():
    texts = [f"a photo of item {i}, said o'neil & co" for i in range(300)]
    expected = SimpleTokenizer()
    want = [expected.encode(t) for t in texts]
    tok = FastTokenizer(cache_size=64)
    results: dict[int, list[list[int]]] = {}

    def work(k: int) -> None:
        results[k] = [tok.encode(t) for t in texts[k::2]] + tok.encode_batch(texts)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for k, got in results.items():
        assert got == want[k::2] + want


def test_ascii_fast_cleaning_equals_full_cleaning():
    rng = random.Random(0)
    alphabet = "abcXYZ019 .,'!?&<>;#\t\n\r\x0b\x0c\x1b[m\x00\x1f\x7f" + "e" * 10 + " " * 8
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        full = clean_text_full(s)
        assert clean_text(s) == full
        assert clean_chunks(s) == (full.split(" ") if full else [])
    for entity in ("&amp;amp;", "&lt;b&gt;", "fish &amp; chips"):
        assert clean_text(entity) == clean_text_full(entity) != entity.lower()


def test_vocab_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt.gz"):
        read_merges(tmp_path / "nope.txt.gz")
    plain = tmp_path / "plain.txt.gz"
    plain.write_text("not gzip")
    with pytest.raises(ValueError, match="plain.txt.gz.*gzipped"):
        read_merges(plain)
    short = tmp_path / "short.txt.gz"
    with gzip.open(short, "wt", encoding="utf-8") as fh:
        fh.write("#version: 0.2\ni n\nt h\n")
    with pytest.raises(ValueError, match="short.txt.gz has 2 merges, expected at least 48894"):
        read_merges(short)
    # Only the head of the file is decompressed: a bad line inside it, or a stream cut before its
    # end, is still one error naming the file (and the line).
    bad = tmp_path / "bad.txt.gz"
    with gzip.open(bad, "wt", encoding="utf-8") as fh:
        fh.write("#version: 0.2\n" + "i n\n" * 1000 + "one two three\n" + "t h\n" * 48000)
    with pytest.raises(ValueError, match="bad.txt.gz line 1002: expected 'left right', got 'one two three'"):
        read_merges(bad)
    whole = gzip.compress(("#version: 0.2\n" + "i n\n" * 60000).encode())
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="cut.txt.gz is not a gzipped UTF-8 merges file"):
        read_merges(cut)


def test_merges_are_the_head_of_the_file_whatever_its_size(tmp_path):
    """Reading stops after the merges CLIP uses; the result equals splitting the whole file."""
    from clipforge.text.vocab import N_MERGES, VOCAB_PATH

    lines = gzip.decompress(VOCAB_PATH.read_bytes()).decode("utf-8").split("\n")
    assert len(lines) > 5 * N_MERGES  # the real file is much longer than what is read
    assert read_merges() == [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    exact = tmp_path / "exact.txt.gz"  # exactly the header and N_MERGES lines, no trailing newline
    exact.write_bytes(gzip.compress("\n".join(lines[: N_MERGES + 1]).encode("utf-8")))
    assert read_merges(exact) == read_merges()


def test_public_names_are_exported():
    for name in ("tokenize", "get_tokenizer", "SimpleTokenizer", "FastTokenizer", "SOT_TOKEN", "EOT_TOKEN"):
        assert name in text_pkg.__all__ and hasattr(text_pkg, name)
