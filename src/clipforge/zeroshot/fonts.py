"""Fonts for plot labels in any script: a CJK font when one is installed, an honest notice for what none draws.

matplotlib's default font (DejaVu Sans) has no Chinese glyphs: "猫" is drawn as an empty box with
a warning nobody reads. So before a figure is drawn, `label_style` checks every character of its
labels against the glyph tables (cmaps) of the default font and of installed CJK fonts
(WenQuanYi Zen Hei, Noto Sans/Serif CJK, Source Han, Droid Sans Fallback, ...; Debian's
`fonts-wqy-zenhei` or `fonts-noto-cjk`), and returns the rc settings that draw them (a font
fallback list, matplotlib >= 3.6). A plot never shows boxes in place of text:

- a label some of whose characters no installed font draws keeps the rest, each run of missing characters
  drawn as ``�`` (``跑车🚗.jpg`` -> ``跑车�.jpg``: an emoji, which matplotlib cannot draw from a colour font, cost
  the whole name, drawn as ``#7`` of an internal list of 2 images and 3 labels);
- a label with no letter or digit left that way (every character Chinese, no CJK font), or one whose drawable
  part is another label's, is drawn as ``#<n>``, numbered 1, 2, ... over those stand-ins (the same text, the same
  number), and the notice maps each back;
- the notice (a UserWarning) names the missing characters, their code points and kind, and the remedy of that
  kind: a CJK font to install only when CJK text is missing (never while one is installed and draws it), that
  matplotlib draws no emoji for emoji. The figure carries it too, with code points in place of the characters
  it cannot draw.
"""

from __future__ import annotations

import logging
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache

__all__ = ["PLACEHOLDER", "LabelStyle", "drawn_labels", "label_style", "mark_figure"]

_CJK_FAMILY_HINTS = ("cjk", "zen hei", "zenhei", "han sans", "han serif", "droid sans fallback", "wenquanyi",
                     "uming", "ukai", "simhei", "simsun", "yahei", "pingfang", "heiti", "noto sans sc", "noto sans tc",
                     "noto sans jp", "noto sans kr", "unifont")
_CJK_FILE_HINTS = ("wqy", "cjk", "droidsansfallback", "uming", "ukai", "sourcehan", "simhei", "simsun", "msyh",
                   "pingfang", "unifont")
INSTALL_HINT = "install a CJK font (Debian: apt-get install fonts-wqy-zenhei or fonts-noto-cjk)"
FULLER_CJK_HINT = "{font} lacks them; a fuller CJK font has more (Debian: apt-get install fonts-noto-cjk)"
EMOJI_HINT = "matplotlib cannot draw colour emoji fonts, and no font it uses here has emoji"
OTHER_HINT = "install a font that has them"
PLACEHOLDER = "\ufffd"  # "�": in DejaVu Sans, so always drawable; one per run of missing characters
_SHOWN = 5  # missing characters named in a notice; 3 labels mapped


@dataclass
class LabelStyle:
    """What to draw: `labels` (missing characters as ``�``, or a ``#n`` stand-in), matplotlib `rc`, the `notice`
    for the user (stderr) and `figure_notice`, the same with code points only (what the figure can draw)."""

    labels: list[str]
    rc: dict = field(default_factory=dict)
    notice: str | None = None
    figure_notice: str | None = None


@cache
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


@cache
def _fonts() -> tuple[tuple[str, frozenset[int]], ...]:
    """(family, codepoints) of the default sans font, then of every installed CJK-capable font."""
    from matplotlib import font_manager

    default = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=True)
    found = [("DejaVu Sans", _charmap(default))]
    seen = {"DejaVu Sans"}
    known = {entry.fname for entry in font_manager.fontManager.ttflist}
    for path in font_manager.findSystemFonts():  # fonts installed after matplotlib built its font cache
        if path not in known and any(hint in path.lower() for hint in _CJK_FILE_HINTS):
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):
                continue
    for entry in font_manager.fontManager.ttflist:
        name = entry.name
        if name in seen or not any(hint in name.lower() for hint in _CJK_FAMILY_HINTS):
            continue
        codes = _charmap(entry.fname)
        if ord("猫") in codes:
            seen.add(name)
            found.append((name, codes))
    return tuple(found)


def _ok(c: str, codes: frozenset[int]) -> bool:
    return ord(c) in codes or c.isspace() or ord(c) < 32


def _drawable(text: str, codes: frozenset[int]) -> bool:
    return all(_ok(c, codes) for c in text)


def _kind(c: str) -> str:
    """"emoji", "CJK" or "other": what a missing character is decides the advice."""
    o = ord(c)
    if 0x1F000 <= o <= 0x1FAFF or 0x2600 <= o <= 0x27BF or 0x2B00 <= o <= 0x2BFF or 0xE0020 <= o <= 0xE007F:
        return "emoji"
    name = unicodedata.name(c, "")
    if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO", "IDEOGRAPHIC", "KANGXI", "FULLWIDTH",
                        "HALFWIDTH", "YI ")) or 0x20000 <= o <= 0x3FFFF:
        return "CJK"
    return "other"


def _partial(text: str, codes: frozenset[int]) -> str:
    """`text` with each run of characters no font draws as one ``�``; a joiner, variation selector or mark right
    after a missing character belongs to its run (``👍🏽`` and ``👨‍👩‍👧`` are one ``�`` each)."""
    out: list[str] = []
    in_run = False
    for c in text:
        if not _ok(c, codes):
            if not in_run:
                out.append(PLACEHOLDER)
            in_run = True
        elif in_run and unicodedata.category(c) in ("Mn", "Me", "Cf"):
            continue
        else:
            out.append(c)
            in_run = False
    return "".join(out)


def label_style(labels: Sequence[str]) -> LabelStyle:
    """The rc settings that draw every label, with what no font draws replaced (``�`` or ``#n``) and said."""
    fonts = _fonts()
    families = [name for name, _ in fonts]
    union = frozenset().union(*(codes for _, codes in fonts))
    texts = [str(label) for label in labels]
    needed = frozenset(ord(c) for text in texts for c in text)
    used = [name for name, codes in fonts if name == "DejaVu Sans" or needed & (codes - fonts[0][1])]
    rc = {"font.family": used + [f for f in families if f not in used]}  # a fallback list, glyph by glyph
    bad = list(dict.fromkeys(t for t in texts if not _drawable(t, union)))
    if not bad:
        return LabelStyle(texts, rc)
    partial = {t: _partial(t, union) for t in bad}
    taken: dict[str, set[str]] = {}  # drawn text -> the labels drawn so
    for t in texts:
        taken.setdefault(partial.get(t, t), set()).add(t)
    standins: dict[str, str] = {}
    for t in bad:  # nothing identifying left, or the same as another label: a numbered stand-in
        kept = partial[t].replace(PLACEHOLDER, "")
        if not any(c.isalnum() for c in kept) or len(taken[partial[t]]) > 1:
            standins[t] = f"#{len(standins) + 1}"
    drawn = {t: standins.get(t, partial[t]) for t in bad}
    missing = list(dict.fromkeys(c for t in bad for c in t if not _ok(c, union)))
    return LabelStyle([drawn.get(t, t) for t in texts], rc, *_notices(bad, drawn, missing, len(fonts) > 1, families))


def _notices(bad: list[str], drawn: dict[str, str], missing: list[str], have_cjk: bool,
             families: list[str]) -> tuple[str, str]:
    """(notice for stderr, the same for the figure: code points in place of the characters it cannot draw)."""
    kinds = list(dict.fromkeys(_kind(c) for c in missing))
    hints = {"CJK": FULLER_CJK_HINT.format(font=families[1]) if have_cjk else INSTALL_HINT, "emoji": EMOJI_HINT,
             "other": OTHER_HINT}
    advice = "; ".join(f"{kind}: {hints[kind]}" if len(kinds) > 1 else hints[kind] for kind in kinds)
    more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
    chars = ", ".join(f"{c} (U+{ord(c):04X}, {_kind(c)})" for c in missing[:_SHOWN]) + more
    codes = ", ".join(f"U+{ord(c):04X} ({_kind(c)})" for c in missing[:_SHOWN]) + more
    # every #<n> stand-in is named (nothing else says which photo #4 is); names drawn with U+FFFD, the first 3
    numbered = [t for t in bad if drawn[t].startswith("#")]
    partial = [t for t in bad if not drawn[t].startswith("#")]
    mapped = ", ".join([*(f"{t!r} -> {drawn[t]}" for t in numbered), *(f"{t!r} -> {drawn[t]!r}" for t in partial[:3])])
    mapped += f" and {len(partial) - 3} more drawn with {PLACEHOLDER}" if len(partial) > 3 else ""
    head = f"{len(bad)} label(s) cannot be rendered with the installed fonts"
    how = []
    if any(not d.startswith("#") for d in drawn.values()):
        how.append(f"{PLACEHOLDER} in place of the missing characters")
    if any(d.startswith("#") for d in drawn.values()):
        how.append("#<n> for a label with nothing else to show (the command's warning names each)")
    return (f"{head}: no glyph for {chars}; drawn as: {mapped}; {advice}",
            f"{head}: no glyph for {codes}; drawn with {' and '.join(how)}; {advice}")


def mark_figure(fig, style: LabelStyle) -> None:
    """Write the style's notice into the figure itself (bottom left), so the PNG says it too.

    Called once the figure is laid out (`atomic.save_figure`'s ``finish``): the figure grows by the notice's
    height and every axes keeps its size and place above it, so the notice never covers an axis label."""
    if not style.notice:
        return
    import textwrap

    width_in, height_in = fig.get_size_inches()
    columns = max(40, int(width_in * 72 / 3.5))  # 6-pt characters per line, about
    text = "\n".join(textwrap.wrap(style.figure_notice or style.notice, columns))  # code points, not characters
    lines = text.count("\n") + 1
    extra = (lines * 6 * 1.25 + 6) / 72  # inches: the lines at 6 pt, and a margin
    boxes = [(ax, ax.get_position()) for ax in fig.axes]
    fig.set_size_inches(width_in, height_in + extra)
    for ax, box in boxes:  # same size in inches, moved up by `extra`
        ax.set_position([box.x0, (box.y0 * height_in + extra) / (height_in + extra), box.width,
                         box.height * height_in / (height_in + extra)])
    fig.text(0.005, 0.004, text, fontsize=6, color="tab:red", ha="left", va="bottom")


class _NearestWeight(logging.Filter):
    """Drops matplotlib's "findfont: Failed to find font weight normal for <font>, now using 500": CJK fonts
    such as WenQuanYi Zen Hei come in one weight (medium), the nearest is what we want, and the line reached
    every command's stderr that drew a Chinese label."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("findfont: Failed to find font weight")


@contextmanager
def drawn_labels(labels: Sequence[str]) -> Iterator[LabelStyle]:
    """Draw (and save) inside this block with fonts that cover `labels` (a UserWarning carries the notice, if any)."""
    import matplotlib

    style = label_style(labels)
    if style.notice:
        warnings.warn(style.notice, UserWarning, stacklevel=3)
    logger, quiet = logging.getLogger("matplotlib.font_manager"), _NearestWeight()
    logger.addFilter(quiet)
    try:
        with matplotlib.rc_context(style.rc):
            yield style
    finally:
        logger.removeFilter(quiet)
