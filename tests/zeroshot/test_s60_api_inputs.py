"""audit60 pyapi finding 8: Python-API input checks and messages.

`predict(top_k=-1)` was "RuntimeError: selected index k out of range", `predict([])` "stack expects a non-empty
TensorList"; '' in a list of class names was a class predicted as '' (a string's blank labels are separators);
`load(device='cuda')` told a Python caller only "use --device cpu"; `clipforge.train.wise_ft` had no docstring and
its second call raised "'module' object is not callable"; no py.typed marker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clipforge
from clipforge.text.labels import LabelsError


@pytest.fixture(scope="module")
def classifier() -> clipforge.ZeroShotClassifier:
    model, _ = clipforge.load("clipforge-tiny", device="cpu")
    return clipforge.ZeroShotClassifier(model, "cat,dog", "simple", use_cache=False, progress=False)


@pytest.mark.parametrize("top_k", [-1, 0, 2.5, True, "3"])
def test_predict_refuses_a_bad_top_k_naming_it(classifier, top_k):
    with pytest.raises(ValueError) as info:
        classifier.predict(torch.zeros(1, 3, 32, 32), top_k=top_k)
    assert str(info.value) == f"top_k must be an int of 1 or more, got {top_k!r}"


def test_predict_top_k_beyond_the_classes_gives_every_class(classifier):
    labels, probs = classifier.predict(torch.zeros(1, 3, 32, 32), top_k=5)
    assert sorted(labels[0]) == ["cat", "dog"] and probs.shape == (1, 2)


@pytest.mark.parametrize("images", [[], (), torch.zeros(0, 3, 32, 32)])
def test_predict_without_images_names_the_argument(classifier, images):
    with pytest.raises(ValueError) as info:
        classifier.predict(images)
    assert str(info.value) == ("images: no image given; expected a path, a PIL image, a preprocessed tensor "
                               "[N, 3, H, W] (or [3, H, W]) or a non-empty list of those")


@pytest.mark.parametrize(("names", "said"), [(["cat", ""], "classnames[1] is blank ('')"),
                                             (["  ", "dog"], "classnames[0] is blank ('  ')")])
def test_a_blank_class_name_in_a_list_is_refused_naming_its_position(classifier, names, said):
    with pytest.raises(LabelsError) as info:
        clipforge.ZeroShotClassifier(classifier.model, names, "simple", use_cache=False, progress=False)
    assert str(info.value) == f"{said}: every class needs a name"
    with pytest.raises(LabelsError):  # the string form refuses a string of blanks too
        clipforge.ZeroShotClassifier(classifier.model, ", ", "simple", use_cache=False, progress=False)


def test_cuda_refusal_names_the_python_argument_too(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as info:
        clipforge.load("clipforge-tiny", device="cuda")
    assert str(info.value) == ("device 'cuda' requested but CUDA is not available here; use --device cpu "
                               "(device='cpu' in Python)")


def test_wise_ft_is_documented_and_callable_twice():
    # a fresh process; the submodule imported first, as the CLI does (it was named wise_ft and shadowed the function)
    code = ("import clipforge.train as train\n"
            "from clipforge.train.weight_interpolation import wise_ft  # what the CLI imports first\n"
            "for _ in range(2):\n"
            "    assert 'WiSE-FT' in (train.wise_ft.__doc__ or '')\n"
            "    try:\n"
            "        train.wise_ft('a.pt', 'b.pt', 5, 'out.safetensors')\n"
            "    except ValueError as exc:\n"
            "        print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr  # the second call raised "'module' object is not callable"
    assert done.stdout == "alpha must be in [0, 1], got 5\n" * 2


def test_package_is_marked_typed():
    assert (Path(clipforge.__file__).parent / "py.typed").is_file()
