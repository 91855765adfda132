"""Fonts for plot labels in any script: a CJK font when one is installed, an honest notice when none is.

matplotlib's default font (DejaVu Sans) has no Chinese glyphs: "猫" is drawn as an empty box with
a warning nobody reads. So before a figure is drawn, `label_style` checks every character of its
labels against the glyph tables (cmaps) of the default font and of installed CJK fonts
(WenQuanYi Zen Hei, Noto Sans/Serif CJK, Source Han, Droid Sans Fallback, ...; Debian's
`fonts-wqy-zenhei` or `fonts-noto-cjk`), and returns the rc settings that draw them (a font
fallback list, matplotlib >= 3.6). When no installed font covers a label, that label is drawn as
``#<index>`` and the returned notice says which could not be rendered and what to install; the
figure carries the same notice, so a plot never shows boxes in place of text.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache

__all__ = ["LabelStyle", "drawn_labels", "label_style", "mark_figure"]

_CJK_FAMILY_HINTS = ("cjk", "zen hei", "zenhei", "han sans", "han serif", "droid sans fallback", "wenquanyi",
                     "uming", "ukai", "simhei", "simsun", "yahei", "pingfang", "heiti", "noto sans sc", "noto sans tc",
                     "noto sans jp", "noto sans kr", "unifont")
_CJK_FILE_HINTS = ("wqy", "cjk", "droidsansfallback", "uming", "ukai", "sourcehan", "simhei", "simsun", "msyh",
                   "pingfang", "unifont")
INSTALL_HINT = "install a CJK font (Debian: apt-get install fonts-wqy-zenhei or fonts-noto-cjk)"


@dataclass
class LabelStyle:
    """What to draw: `labels` (unrenderable ones replaced by ``#i``), matplotlib `rc` and a `notice`."""

    labels: list[str]
    rc: dict = field(default_factory=dict)
    notice: str | None = None


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


def _drawable(text: str, codes: frozenset[int]) -> bool:
    return all(ord(c) in codes or c.isspace() or ord(c) < 32 for c in text)


def label_style(labels: Sequence[str]) -> LabelStyle:
    """The rc settings that draw every label, or `#i` stand-ins plus a notice for those no font covers."""
    fonts = _fonts()
    families = [name for name, _ in fonts]
    union = frozenset().union(*(codes for _, codes in fonts))
    needed = frozenset(ord(c) for label in labels for c in str(label))
    used = [name for name, codes in fonts if name == "DejaVu Sans" or needed & (codes - fonts[0][1])]
    rc = {"font.family": used + [f for f in families if f not in used]}  # a fallback list, glyph by glyph
    out, missing = [], []
    for i, label in enumerate(labels):
        text = str(label)
        if _drawable(text, union):
            out.append(text)
        else:
            out.append(f"#{i}")
            missing.append(text)
    if not missing:
        return LabelStyle(out, rc)
    shown = ", ".join(repr(m) for m in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    notice = (f"{len(missing)} label(s) cannot be rendered with the installed fonts ({shown}): drawn as #<index>; "
              f"{INSTALL_HINT}")
    return LabelStyle(out, rc, notice)


def mark_figure(fig, style: LabelStyle) -> None:
    """Write the style's notice into the figure itself (bottom left), so the PNG says it too."""
    if style.notice:  # without the labels themselves: the figure could not draw them either
        drawn = [label for label in style.labels if label.startswith("#")]
        text = (f"{len(drawn)} label(s) cannot be rendered with the installed fonts: drawn as #<index>; "
                f"{INSTALL_HINT}")
        fig.text(0.005, 0.005, text, fontsize=6, color="tab:red", ha="left", va="bottom", wrap=True)


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
