"""The one rule for a public function's texts and class names given as one string instead of a list.

A `str` is a `Sequence[str]`, so ``ZeroShotClassifier(model, "cat,dog")`` was classified over the letters
``c a t , d o g`` and ``Encoder.encode_texts("a cat")`` gave five vectors, without a word, while
`Library.classify("cat,dog")`, ``clipforge classify --labels``, the REST API and the UI split the string on commas:

- **Class names** (`class_names`): a string is comma-separated labels, split by the rule every interface uses
  (`clipforge.text.labels.split_labels`: ",", "，" and "、", blanks and repeats dropped); a list is kept as given,
  each item one class (ImageNet's names hold commas and one name twice), but a blank item is refused naming its
  position (``classnames[1] is blank ('')``): it was classified as a class named '', which no string can give.
- **Texts** (`text_list`): a string is one text, as `clipforge.tokenize("a cat")` (and open_clip's) reads it.
- Bytes are refused in one line naming the parameter (their items are numbers, not texts), and so is anything
  that is neither a string nor an iterable (None, a number).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["class_names", "text_list"]


def _refuse_bytes(value: object, what: str, expected: str) -> None:
    """TypeError naming `what` for bytes (their items are numbers) and for anything that is not a str or an
    iterable (None, a number: Python's own "'NoneType' object is not iterable" named no parameter)."""
    if isinstance(value, (bytes, bytearray, memoryview)) or not isinstance(value, (str, Iterable)):
        raise TypeError(f"{what} must be {expected}, got {type(value).__name__}")


def class_names(value: str | Iterable[object], what: str = "classnames") -> list[str]:
    """Class names from comma-separated labels (``"cat,dog"``) or a list (each item one class, kept as given)."""
    from clipforge.text.labels import LabelsError, split_labels

    _refuse_bytes(value, what, "a list of class names or a comma-separated str")
    if isinstance(value, str):
        return split_labels(value, what)
    names = [str(item) for item in value]
    blank = next((i for i, name in enumerate(names) if not name.strip()), None)
    if blank is not None:  # it was a class of its own, predicted as '' (a string's blank labels are separators)
        raise LabelsError(f"{what}[{blank}] is blank ({names[blank]!r}): every class needs a name")
    return names


def text_list(value: str | Iterable[str], what: str = "texts") -> list[str]:
    """Texts from one text (``"a cat"``) or a list of them."""
    _refuse_bytes(value, what, "a str or a list of str")
    return [value] if isinstance(value, str) else list(value)
