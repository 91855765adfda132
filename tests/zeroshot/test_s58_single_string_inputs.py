"""One string where a list of texts or class names is expected (audit 58, finding 6).

`ZeroShotClassifier(model, "cat,dog")` classified over the characters ``c a t , d o g`` and
`Encoder.encode_texts("a cat")` returned five vectors, silently, while `Library.classify("cat,dog")` (and the CLI,
REST and UI) split the string on commas. One rule now (`clipforge.zeroshot.inputs`): class names given as one string
are comma-separated labels, a text given as one string is one text, bytes are one TypeError line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import clipforge
from clipforge.zeroshot import ZeroShotClassifier, build_class_embeddings
from clipforge.zeroshot.embeddings import encode_texts
from clipforge.zeroshot.open_clip_api import build_zero_shot_classifier


@pytest.fixture(scope="module")
def loaded():
    return clipforge.load_model("clipforge-tiny", "cpu")


@pytest.fixture(scope="module")
def encoder(loaded):
    from clipforge.library import resolve_encoder

    return resolve_encoder(loaded.model, loaded.preprocess)


def _classifier(model, classnames, templates="simple"):
    return ZeroShotClassifier(model, classnames, templates, use_cache=False, progress=False)


def test_zero_shot_classifier_splits_one_string_as_library_classify(loaded) -> None:
    one = _classifier(loaded.model, "cat, dog，bird")
    listed = _classifier(loaded.model, ["cat", "dog", "bird"])
    assert one.classnames == ["cat", "dog", "bird"] and one.num_classes == 3
    assert torch.equal(one.class_embeddings, listed.class_embeddings)
    # a list's items are one class each, commas and all (ImageNet's names hold commas)
    assert _classifier(loaded.model, ["tench, Tinca tinca", "goldfish"]).classnames == ["tench, Tinca tinca",
                                                                                        "goldfish"]


def test_encoder_text_entry_points_read_one_string_whole(encoder) -> None:
    one = encoder.encode_texts("a cat")
    assert one.shape == (1, encoder.embed_dim)
    np.testing.assert_array_equal(one, encoder.encode_texts(["a cat"]))
    assert encoder.class_embeddings("cat", "simple").shape == (1, encoder.embed_dim)
    np.testing.assert_array_equal(encoder.class_embeddings("cat,dog", "simple"),
                                  encoder.class_embeddings(["cat", "dog"], "simple"))


def test_the_zeroshot_functions_read_one_string_whole(loaded) -> None:
    from clipforge.text import tokenize_for

    model = loaded.model
    assert encode_texts(model, "a cat", progress=False).shape == (1, model.embed_dim)
    by_string = build_class_embeddings(model, "cat,dog", "a photo of a {}.", progress=False)
    by_list = build_class_embeddings(model, ["cat", "dog"], ["a photo of a {}."], progress=False)
    assert by_string.shape == (2, model.embed_dim) and torch.equal(by_string, by_list)
    head = build_zero_shot_classifier(model, lambda texts: tokenize_for(model, texts, model.context_length),
                                      "cat,dog", "a photo of a {}.")
    assert head.shape == (model.embed_dim, 2) and torch.allclose(head.T, by_list, atol=1e-6)


def test_bytes_are_one_type_error_line(loaded, encoder) -> None:
    with pytest.raises(TypeError, match=r"^classnames must be a list of class names or a comma-separated str, "
                                        r"got bytes$"):
        _classifier(loaded.model, b"cat,dog")
    with pytest.raises(TypeError, match=r"^texts must be a str or a list of str, got bytes$"):
        encoder.encode_texts(b"a cat")


def test_none_and_other_non_lists_are_one_type_error_line(loaded, encoder) -> None:
    """`encode_texts(None)`, `ZeroShotClassifier(m, None)` and `tokenize(None)` were Python's "'NoneType' object
    is not iterable", naming no parameter (review 65, revapi)."""
    for value, shown in ((None, "NoneType"), (3, "int")):
        with pytest.raises(TypeError, match=rf"^classnames must be a list of class names or a comma-separated str, "
                                            rf"got {shown}$"):
            _classifier(loaded.model, value)
        with pytest.raises(TypeError, match=rf"^texts must be a str or a list of str, got {shown}$"):
            encoder.encode_texts(value)
        with pytest.raises(TypeError, match=rf"^texts must be a str or a list of str, got {shown}$"):
            encode_texts(loaded.model, value, progress=False)
        with pytest.raises(TypeError, match=rf"^texts must be a str or a list of str, got {shown}$"):
            clipforge.tokenize(value)
        with pytest.raises(TypeError, match=rf"^texts must be a str or a list of str, got {shown}$"):
            loaded.tokenize(value)
