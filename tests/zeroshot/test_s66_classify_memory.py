"""Audit 66 memory #2 and #3: `classify` scores its images in row blocks (peak memory no longer images x labels) with
the whole-matrix answer, and an over-long label is refused before any tokenizer reads it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.zeroshot import classifier as classifier_module
from clipforge.zeroshot.classifier import ZeroShotClassifier
from clipforge.zeroshot.files import classify_files


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the suite shares 2 CPUs
    yield
    torch.set_num_threads(before)


def _photos(folder, count):
    rng = np.random.default_rng(66)
    folder.mkdir()
    paths = []
    for i in range(count):
        path = folder / f"p{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _scored_rows(monkeypatch):
    """The row count of every `ZeroShotClassifier.logits` call (the matrix a block makes is rows x labels)."""
    rows: list[int] = []
    original = ZeroShotClassifier.logits

    def counted(self, image_features):
        rows.append(int(image_features.shape[0]))
        return original(self, image_features)

    monkeypatch.setattr(ZeroShotClassifier, "logits", counted)
    return rows


# "cat" twice: two classes with the same embedding, an exact tie whose order must not change
LABELS = ["cat", "dog", "cat", "plane", "a red square"]


@pytest.mark.parametrize("model", ["test-vit-tiny", "test-siglip-tiny"])
def test_classify_scores_in_row_blocks_with_the_whole_matrix_answer(tmp_path, monkeypatch, model):
    """41 photos, blocks of at most 24 rows (41 = 20 + 21: the block size divides nothing): every scoring call is a
    block, and labels, probabilities and tie order are those of the whole 41 x 5 matrix, for softmax and sigmoid."""
    if "siglip" in model:  # its SentencePiece file beside random weights
        from tests.families.family_fixtures import save_family_checkpoint

        model = str(save_family_checkpoint(tmp_path / "siglip", model))
    paths = _photos(tmp_path / "photos", 41)
    whole = classify_files(paths, LABELS, model, top_k=5, device="cpu", progress=False)
    assert whole["scoring"] == ("sigmoid" if "siglip" in model else "softmax")
    rows = _scored_rows(monkeypatch)
    monkeypatch.setattr(classifier_module, "SCORE_ELEMENTS", 24 * len(LABELS), raising=False)  # 24 rows of 5 labels
    blocked = classify_files(paths, LABELS, model, top_k=5, device="cpu", progress=False)
    assert rows == [20, 21]
    assert blocked == whole
    assert len(blocked["results"]) == 41
    for result in blocked["results"]:  # the tie: both "cat"s side by side with one probability
        first = result["labels"].index("cat")
        assert result["labels"][first + 1] == "cat"
        assert result["probabilities"][first] == result["probabilities"][first + 1]


def test_top_k_of_features_equals_the_whole_matrix_bit_for_bit(monkeypatch, tiny_vit):
    """`ZeroShotClassifier.top_k` (what `predict` and `classify` use) over 100 feature rows in blocks of at most 30
    gives the exact tensors of a stable sort of the whole 100 x 5 probability matrix: the tied "cat"s (classes 0 and
    2) in class order (audit 66 determinism: topk ordered them as its kernel happened to)."""
    from clipforge.models.scoring import scoring_of

    classifier = ZeroShotClassifier(tiny_vit, LABELS, "simple", device="cpu", use_cache=False, progress=False)
    features = torch.randn(100, int(tiny_vit.embed_dim), generator=torch.Generator().manual_seed(0))
    probs = scoring_of(tiny_vit).probabilities(classifier.logits(features))
    values, indices = probs.sort(dim=-1, descending=True, stable=True)
    assert all(row.index(2) - row.index(0) == 1 for row in indices.tolist())  # always side by side: a tie
    rows = _scored_rows(monkeypatch)
    monkeypatch.setattr(classifier_module, "SCORE_ELEMENTS", 30 * len(LABELS), raising=False)
    got_values, got_indices = classifier.top_k(features, 5)
    assert rows == [25, 25, 25, 25]
    assert torch.equal(got_values, values) and torch.equal(got_indices, indices)


def test_score_blocks_rule():
    """Blocks of at most `SCORE_ELEMENTS` scores (rows x labels), at least one row, as even as the count allows."""
    from clipforge.zeroshot.classifier import score_blocks

    assert classifier_module.SCORE_ELEMENTS == 1 << 23
    assert score_blocks(0, 10) == []
    assert score_blocks(5, 10) == [(0, 5)]  # a small run: one block, the whole matrix
    assert score_blocks(4000, 50_000) == [(i * 4000 // 24, (i + 1) * 4000 // 24) for i in range(24)]  # 167 a block
    assert max(stop - start for start, stop in score_blocks(4000, 50_000)) * 50_000 <= 1 << 23
    assert score_blocks(3, 10_000_000) == [(0, 1), (1, 2), (2, 3)]  # one row is more than the budget: one at a time


# --- #3: an over-long label is refused before any tokenization ---

LONG = ("lorem ipsum dolor sit amet " * 8000)[:200_000]


def _tokenized_lengths(monkeypatch):
    """The longest text of each tokenizer call: OpenAI's BPE (`FastTokenizer.encode_batch`, under
    `clipforge.tokenize`) and any other kind of model tokenizer (`ModelTokenizer.tokenize`)."""
    from clipforge.text.families import ModelTokenizer
    from clipforge.text.fast import FastTokenizer

    seen: list[int] = []

    def counting(cls, name):
        original = getattr(cls, name)

        def counted(self, texts, *args, **kwargs):
            items = [texts] if isinstance(texts, str) else list(texts)
            seen.append(max((len(t) for t in items), default=0))
            return original(self, texts, *args, **kwargs)

        monkeypatch.setattr(cls, name, counted)

    counting(FastTokenizer, "encode_batch")
    counting(ModelTokenizer, "tokenize")
    return seen


SIMPLE_LINE = (f"the prompt for label {LONG[:40]!r}... from template 'a photo of a {{}}.' would have 200014 "
               "characters, more than the limit of 4000")


def test_classify_refuses_a_long_label_before_tokenizing_it(tmp_path, monkeypatch):
    from clipforge.zeroshot.prompts import TemplateError

    paths = _photos(tmp_path / "photos", 1)
    seen = _tokenized_lengths(monkeypatch)
    with pytest.raises(TemplateError) as caught:  # the default templates, chosen to fit the model's context
        classify_files(paths, ["cat", "dog", LONG], "clipforge-tiny", device="cpu", progress=False)
    assert str(caught.value) == SIMPLE_LINE
    assert not [n for n in seen if n > 4000], f"the label was tokenized {len(seen)} times"
    with pytest.raises(TemplateError) as caught:  # templates named: the first prompt filled that is too long
        classify_files(paths, ["cat", LONG], "clipforge-tiny", templates="imagenet", device="cpu", progress=False)
    assert str(caught.value) == SIMPLE_LINE.replace("a photo of a", "a bad photo of a").replace("200014", "200018")
    assert not [n for n in seen if n > 4000]


def test_cli_classify_refuses_a_long_label_in_one_line(tmp_path, monkeypatch, capsys):
    from clipforge.cli.main import main

    paths = _photos(tmp_path / "photos", 1)
    labels = tmp_path / "labels.txt"
    labels.write_text(f"cat\ndog\n{LONG}\n", encoding="utf-8")
    seen = _tokenized_lengths(monkeypatch)
    assert main(["classify", *paths, "--labels-file", str(labels), "--model", "clipforge-tiny", "--device", "cpu",
                 "-q"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [f"error: {SIMPLE_LINE}"] and captured.out == ""
    assert not [n for n in seen if n > 4000]


def test_library_eval_and_classifier_refuse_a_long_label_before_tokenizing_it(tmp_path, monkeypatch, tiny_vit):
    """`Library.classify` (tag's default, imagenet, fitted to the model), `ZeroShotClassifier` and the cut count
    `eval zeroshot` makes of its class names (`templates_cut_notice`) refuse it with the same line, untokenized."""
    from clipforge.library import Library, resolve_encoder
    from clipforge.text.families import tokenizer_of
    from clipforge.zeroshot.prompt_fit import templates_cut_notice
    from clipforge.zeroshot.prompts import TemplateError

    imagenet_line = SIMPLE_LINE.replace("a photo of a", "a bad photo of a").replace("200014", "200018")
    seen = _tokenized_lengths(monkeypatch)
    with pytest.raises(TemplateError) as caught:
        ZeroShotClassifier(tiny_vit, ["cat", LONG], "imagenet", device="cpu", use_cache=False, progress=False)
    assert str(caught.value) == imagenet_line
    with pytest.raises(TemplateError) as caught:
        templates_cut_notice(["a photo of a {}."], ["cat", LONG], tokenizer_of(tiny_vit), "test-vit-tiny")
    assert str(caught.value) == SIMPLE_LINE
    assert not [n for n in seen if n > 4000]
    with Library(tmp_path / "lib", resolve_encoder("test-vit-tiny")) as library:
        seen.clear()
        with pytest.raises(TemplateError) as caught:
            library.classify(["cat", LONG], progress=False)
    assert str(caught.value) == imagenet_line
    assert not [n for n in seen if n > 4000]


def test_a_set_too_long_for_a_label_is_not_chosen_in_its_place(tmp_path):
    """A label that fits the default ("a photo of a {}.") but not a longer shipped set is never given that set by
    `choose_templates`: the set it would fall back to must be usable."""
    from clipforge.zeroshot.prompt_fit import fitting_set

    class Whole:  # a tokenizer whose context cuts nothing, so any set that can be filled fits
        context_length = 1_000_000

        def __call__(self, texts, context=None):
            return torch.zeros(len(texts), 4, dtype=torch.long)

    label = "x" * (4000 - len("a photo of a {}.") + 2)  # 3986: fits simple, too long for imagenet's longest
    assert fitting_set("en", [label], Whole()) == "simple"
    assert fitting_set("en", ["cat"], Whole()) == "imagenet"


def test_a_tie_cut_at_k_keeps_the_lowest_class_and_equal_labels_come_in_their_order(tiny_vit):
    """Labels equal to the tokenizer ("Cat", "cat", "CAT": it lowercases) score alike: `top_k` gives them in the
    labels' order for every image, and a cut inside the tie keeps the first (as REST's classify and `tag`)."""
    labels = ["Cat", "dog", "cat", "CAT"]
    classifier = ZeroShotClassifier(tiny_vit, labels, "simple", device="cpu", use_cache=False, progress=False)
    features = torch.randn(64, int(tiny_vit.embed_dim), generator=torch.Generator().manual_seed(1))
    _, indices = classifier.top_k(features, 4)
    assert all([i for i in row if i != 1] == [0, 2, 3] for row in indices.tolist())
    for k in (1, 2, 3):
        _, cut = classifier.top_k(features, k)
        assert torch.equal(cut, indices[:, :k])


def test_tie_order_leaves_rows_with_nan_as_topk_gives_them():
    """A row holding NaN probabilities (a broken model's) beside a tie at the cut raised a size mismatch (review 66):
    `topk` ranks NaN above every number, the tie rule's `>` below; such a row keeps topk's answer."""
    from clipforge.zeroshot.classifier import _ties_by_class

    nan = float("nan")
    scores = torch.tensor([[nan, nan, 0.2, 0.2, 0.1], [0.3, 0.1, 0.3, 0.3, 0.0]])
    values, indices = scores.topk(3, dim=1)
    _ties_by_class(scores, values, indices)
    assert sorted(indices[0, :2].tolist()) == [0, 1] and indices[0, 2].item() in (2, 3)
    assert indices[1].tolist() == [0, 2, 3] and torch.equal(values[1], torch.tensor([0.3, 0.3, 0.3]))
