"""What a model's context keeps of a text: the end it cuts away, and texts it cuts into the same ids.

Commands tokenize with truncation, as open_clip and cn_clip do, so a long text is never an error; but a small
context can cut away what a user meant (clipforge-tiny-zh's 16 BPE tokens hold about four Chinese characters
after a template), and every command says so with these tests. Any tokenizer kind: only its truncating call
(`ModelTokenizer(texts, context_length)`, from `clipforge.text.families.tokenizer_of`) is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["CUT_TEXTS_IDS", "SameTokens", "cut_notice", "cut_texts", "same_after_cut", "unread_part"]


def _utf8_bytes(text: str) -> bytes:
    """`text` in UTF-8 for counting its length, a lone surrogate included (an undecodable byte of a command-line
    argument, or ``"\ud800"`` in JSON): strict encoding raised out of every notice a search or classify gives
    (a REST search with such a query was a codec error, the CLI's "surrogates not allowed")."""
    return text.encode("utf-8", "surrogatepass")


class SameTokens(list):  # type: ignore[type-arg]  # a list of keys (str), as JSON writes it
    """A set of keys `same_after_cut` found the same ids for, and why: `cut` when their texts read whole differ (the
    context cut what tells them apart: shortening helps), false when the tokenizer reads them alike anyway
    (Chinese-CLIP's WordPiece makes [UNK] of Arabic and emoji: 'قطة' = '😺'; shortening does not help)."""

    cut: bool = True


def same_after_cut(tokenizer: Any, groups: dict[str, list[str]]) -> list[list[str]]:
    """Keys whose texts `tokenizer` (a model's: `tokenizer_of`, `LoadedModel.tokenizer`) turns into the same ids.

    Commands tokenize with truncation, as open_clip does, so a long text is never an error; but a small context
    can cut away what tells two texts apart: clipforge-tiny-zh's 16 BPE tokens hold about four Chinese
    characters after a template, and "一只在草地上奔跑的金毛寻回犬" and "...寻回猫" scored exactly the same. `groups`:
    a label -> its prompts (or a text -> [itself]); the answer lists each set of two or more keys that the
    model cannot tell apart (a `SameTokens`, which says whether the cut is why), so a command can say so. Any
    tokenizer kind: only its truncating call is used.
    """
    keys = [key for key, texts in groups.items() if texts]
    if len(keys) < 2:
        return []
    context = getattr(tokenizer, "context_length", None)
    if context and all(len(_utf8_bytes(text)) + 4 <= int(context) for key in keys for text in groups[key]):
        return []  # nothing can be cut (no tokenizer makes more tokens than bytes, plus its markers): no 2nd pass
    seen = _keys_by_ids(tokenizer, groups, keys)
    return [_why_same(tokenizer, groups, same) for same in seen.values() if len(same) > 1]


def _keys_by_ids(tokenizer: Any, groups: dict[str, list[str]], keys: list[str], context: int | None = None,
                 ) -> dict[bytes, list[str]]:
    """`keys` grouped by the ids of their texts (`groups[key]`), tokenized in one call (at `context`, if given)."""
    texts = [text for key in keys for text in groups[key]]
    rows = tokenizer(texts) if context is None else tokenizer(texts, context)
    seen: dict[bytes, list[str]] = {}
    start = 0
    for key in keys:
        count = len(groups[key])
        seen.setdefault(rows[start:start + count].numpy().tobytes(), []).append(key)
        start += count
    return seen


def _why_same(tokenizer: Any, groups: dict[str, list[str]], keys: list[str]) -> SameTokens:
    """`keys` (the same ids at the context) as a `SameTokens`: `cut` when their texts differ read whole, at a context
    long enough for each (as `unread_part` reads one). Only for the sets found: rare."""
    same, context = SameTokens(keys), getattr(tokenizer, "context_length", None)
    if context:
        longest = max(len(_utf8_bytes(text)) for key in keys for text in groups[key])
        same.cut = len(_keys_by_ids(tokenizer, groups, keys, int(context) + 4 * longest + 8)) > 1
    return same


def unread_part(tokenizer: Any, text: str) -> str:
    """The end of `text` that `tokenizer` (a model's: `tokenizer_of`, `LoadedModel.tokenizer`) cuts away at its
    context: ``""`` when the whole text is read.

    A search query is one text, so nothing like `same_after_cut` would ever say that it was cut; but a context
    of 16 BPE tokens reads about four Chinese characters ("一只在沙发上睡觉的猫" searched "一只在沙发上"), 52
    WordPiece tokens 50. A prefix is read whole when its ids at the model's context are its ids at a longer one,
    cut there, with padding only beyond; the longest such prefix (whole characters) is found by bisection.
    Any tokenizer kind: only its truncating call with a context length is used.
    """
    context = int(getattr(tokenizer, "context_length", 0) or 0)
    if not context or not text or len(_utf8_bytes(text)) + 4 <= context:
        return ""  # no tokenizer makes more tokens than bytes, plus its markers

    def whole(prefix: str) -> bool:
        longer = context + 4 * len(_utf8_bytes(prefix)) + 8
        short, wide = tokenizer([prefix], context)[0], tokenizer([prefix], longer)[0]
        return bool((short == wide[:context]).all()) and bool((wide[context:] == wide[-1]).all())

    if whole(text):
        return ""
    low, high = 0, len(text)  # whole(text[:low]) holds, whole(text[:high]) does not
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if whole(text[:mid]) else (low, mid)
    return text[low:]


CUT_TEXTS_IDS = 1 << 20
"""Token ids one tokenizer call of `cut_texts` may return (8 MB of int64): its wide call is 4 tokens a byte of its
longest text, so one alt text of 100,000 characters among 2,000 captions had made a 6 GB tensor."""


def cut_texts(tokenizer: Any, texts: Sequence[str]) -> list[str]:
    """The texts of `texts` whose end `tokenizer`'s context cuts away, each once: `unread_part`'s test of a whole
    text, for many texts in two batched calls (a classifier's prompts: 80 templates x its labels) per group of
    texts of similar length, each group's calls within `CUT_TEXTS_IDS` ids (a text longer than that alone)."""
    context = int(getattr(tokenizer, "context_length", 0) or 0)
    candidates = [text for text in dict.fromkeys(texts) if text and len(_utf8_bytes(text)) + 4 > context]
    if not context or not candidates:
        return []
    cut: set[str] = set()
    for group in _similar_lengths(candidates, context):
        longer = context + 4 * max(len(_utf8_bytes(text)) for text in group) + 8
        short, wide = tokenizer(group, context), tokenizer(group, longer)
        whole = (short == wide[:, :context]).all(dim=1) & (wide[:, context:] == wide[:, -1:]).all(dim=1)
        cut.update(text for text, kept in zip(group, whole.tolist(), strict=True) if not kept)
    return [text for text in candidates if text in cut]


def _similar_lengths(texts: list[str], context: int) -> list[list[str]]:
    """`texts`, shortest first, in groups whose wide call (`cut_texts`) stays within `CUT_TEXTS_IDS` ids."""
    def width(text: str) -> int:
        return context + 4 * len(_utf8_bytes(text)) + 8

    groups: list[list[str]] = []
    for text in sorted(texts, key=width):
        if groups and width(text) * (len(groups[-1]) + 1) <= CUT_TEXTS_IDS:
            groups[-1].append(text)
        else:
            groups.append([text])
    return groups


def cut_notice(text: str, tail: str, model: str, context: int, what: str = "query", done: str = "searched") -> str:
    """The notice for a text whose end `tail` a model's context cut away (`unread_part`): commands and the
    server truncate as open_clip and cn_clip do, so a long text is never an error, but it is said."""
    from clipforge.text.width import shorten

    kept = text[: len(text) - len(tail)].rstrip()
    return (f"notice: model {model} reads {context} tokens of a text: only {shorten(kept, 40)!r} of the {what} was "
            f"{done} ({shorten(tail.strip(), 40)!r} was cut off); shorten it")
