"""audit65 citizen finding 7 (the loader and the classifier): argument mistakes are one line naming the argument.

Before: `clipforge.load(None)` was pathlib's "expected str, bytes or os.PathLike object, not NoneType",
`load_model(..., towers="text")` "towers must name some of image, text; got ['t', 'e', 'x', 't']", and
`ZeroShotClassifier("clipforge-tiny", ...)` / `ZeroShotClassifier((model, preprocess), ...)` (what `Library(model=...)`
takes) "AttributeError: 'tuple' object has no attribute 'parameters'".
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import clipforge
from clipforge.api import load_model


@pytest.mark.parametrize(("call", "said"), [
    (lambda: clipforge.load(None), "name_or_path must be a model name, random:ARCH or a checkpoint path (a str or "
                                   "os.PathLike), got NoneType"),
    (lambda: clipforge.load(123), "name_or_path must be a model name, random:ARCH or a checkpoint path (a str or "
                                  "os.PathLike), got int"),
    (lambda: load_model(None), "spec must be a model name, random:ARCH or a checkpoint path (a str or os.PathLike), "
                               "got NoneType"),
])
def test_a_spec_that_is_no_name_or_path_names_the_argument(call, said) -> None:
    with pytest.raises(TypeError) as error:
        call()
    assert str(error.value) == said


def test_one_tower_named_as_a_string_is_that_tower() -> None:
    loaded = load_model("clipforge-tiny", "cpu", towers="text")
    assert loaded.model.encode_text(clipforge.tokenize(["a cat"], context_length=16)).shape == (1, 256)
    assert load_model("clipforge-tiny", "cpu", towers=("image",)).name == "clipforge-tiny"  # as before
    with pytest.raises(ValueError) as error:
        load_model("clipforge-tiny", "cpu", towers="txt")
    assert str(error.value) == "towers must name some of image, text; got ['txt']"


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("s65zsc") / "photo.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    return path


def test_the_classifier_takes_what_a_library_takes(photo: Path, tmp_path: Path) -> None:
    model, preprocess = clipforge.load("clipforge-tiny", device="cpu")
    reference = clipforge.ZeroShotClassifier(model, ["cat", "dog"], "simple", cache_dir=tmp_path, progress=False)
    want = reference.predict([str(photo)], top_k=2)
    for given in ("clipforge-tiny", Path("clipforge-tiny"), (model, preprocess)):
        classifier = clipforge.ZeroShotClassifier(given, ["cat", "dog"], "simple", cache_dir=tmp_path, progress=False)
        labels, probs = classifier.predict([str(photo)], top_k=2)
        assert labels == want[0]
        torch.testing.assert_close(probs, want[1])
    paired = clipforge.ZeroShotClassifier((model, preprocess), "cat,dog", "simple", cache_dir=tmp_path, progress=False)
    assert paired.model is model and paired.preprocess is preprocess  # the pair's own, not loaded again
    loaded = clipforge.load_model("clipforge-tiny")  # what load_model returns (review 65: an AttributeError)
    whole = clipforge.ZeroShotClassifier(loaded, "cat,dog", "simple", cache_dir=tmp_path, progress=False)
    assert whole.model is loaded.model and whole.preprocess is loaded.preprocess
    labels, probs = whole.predict([str(photo)], top_k=2)
    assert labels == want[0]


@pytest.mark.parametrize("given", [None, 12, (1, 2, 3), ("clipforge-tiny", None, None)])
def test_anything_else_is_a_type_error_naming_the_forms(given, tmp_path: Path) -> None:
    with pytest.raises(TypeError) as error:
        clipforge.ZeroShotClassifier(given, ["cat"], "simple", cache_dir=tmp_path, progress=False)
    assert str(error.value) == ("model must be a CLIP module, a model name or checkpoint path, what load_model "
                                f"returns, or a (model, preprocess) pair; got {type(given).__name__}")
