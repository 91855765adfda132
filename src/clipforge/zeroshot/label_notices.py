"""What `classify` and `tag` say about labels that cannot be what the user meant: one label, or Chinese words
separated by spaces.

Labels are separated by commas (",", and a Chinese input method's "，" and "、": `clipforge.text.labels`), never
by spaces: "golden retriever" is one label. Chinese is written without spaces between words, so a space between
two ideographs ("猫 狗 鸟") almost surely meant a separator: that one label scored 100% on every photo, and the
notice then suggested English labels ("cat,dog,car") to a user typing Chinese. These notices show the split the
user probably meant, in their own script, and are hidden by ``--quiet`` like every notice (`cli.common.notice`).
Torch-free: the commands import it before or after the model, at no cost.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["label_notice", "spaced_words"]

_IDEOGRAPH = "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
_SPACED = re.compile(rf"{_IDEOGRAPH}\s+{_IDEOGRAPH}")  # \s: the full-width space U+3000 of a Chinese IME too
SEPARATORS = '",", "，" or "、"'


def spaced_words(label: str) -> list[str] | None:
    """The words of `label` when spaces separate Chinese words in it ("猫 狗 鸟" -> 猫, 狗, 鸟), else None."""
    return label.split() if _SPACED.search(label) else None


def _chinese(label: str) -> bool:
    return re.search(_IDEOGRAPH, label) is not None


def label_notice(labels: Sequence[str], softmax: bool = True, every_photo: bool = False,
                 flag: str = "--labels ") -> str | None:
    """One line about `labels` (as parsed) that cannot be what was meant, else None.

    One label under a softmax is always 100% (`every_photo`: `tag`'s "so every photo gets it"); a label holding
    Chinese words separated by spaces was probably several. The split it probably meant is shown as a
    ``--labels`` value (`flag`: "" where no flag is typed, the REST API and the web page), and the example labels are
    in the labels' script (Chinese for a Chinese label).
    """
    labels = [str(label) for label in labels]
    split = [spaced_words(label) for label in labels]
    meant = list(dict.fromkeys(word for label, words in zip(labels, split, strict=True) for word in words or [label]))
    spaced = next((label for label, words in zip(labels, split, strict=True) if words), None)
    separate = (f'labels are separated by commas ({SEPARATORS}), not spaces: {flag}"{",".join(meant)}" gives '
                f"{len(meant)}")
    if len(labels) == 1 and softmax:
        head = (f"notice: one label ({labels[0]!r}): a softmax over one label is always 100%"
                f"{', so every photo gets it' if every_photo else ''}; ")
        if spaced is not None:
            return head + separate
        example = "猫,狗,汽车" if _chinese(labels[0]) else "cat,dog,car"
        return head + f'give the labels it competes with, e.g. {flag}"{example}"'
    if spaced is not None:
        return f"notice: label {spaced!r} has spaces between Chinese words; {separate}"
    return None
