"""audit59 chinese findings 5 and 8: text in plots.

5. `eval retrieval --plot` drew its title "clipforge-tiny-zh on 中文数据" as boxes ("Glyph ... missing from font(s)
   DejaVu Sans"): `plot_recall_curves` was the one evaluation figure without the CJK font lookup. Every text the
   evaluation figures draw (titles, class/model names, axis and legend labels) now goes through it.
8. A name with an emoji (``跑车🚗.jpg``) was drawn as ``#7`` (an index into an internal list of 2 images and 3
   labels) with advice to install a CJK font that was installed: now only the emoji is replaced, and the notice
   names it (U+1F697, an emoji) and says why it cannot be drawn.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from clipforge.zeroshot import fonts

CAR = "跑车\U0001F697.jpg"  # 跑车🚗.jpg
EMOJI_HINT = "matplotlib cannot draw colour emoji fonts, and no font it uses here has emoji"
NOTICE_CAR = ("1 label(s) cannot be rendered with the installed fonts: no glyph for \U0001F697 (U+1F697, emoji); "
              f"drawn as: '{CAR}' -> '跑车\ufffd.jpg'; {EMOJI_HINT}")


def _cjk_font() -> bool:
    return fonts.label_style(["中文数据"]).notice is None


needs_cjk = pytest.mark.skipif(not _cjk_font(), reason="no CJK font installed here (CI installs fonts-wqy-zenhei)")


@pytest.fixture()
def no_cjk_font(monkeypatch):
    """A machine without any CJK font."""
    fonts._fonts.cache_clear()
    monkeypatch.setattr(fonts, "_CJK_FAMILY_HINTS", ())
    monkeypatch.setattr(fonts, "_CJK_FILE_HINTS", ())
    yield
    fonts._fonts.cache_clear()


def _glyph_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


@needs_cjk
def test_every_evaluation_figure_draws_chinese_titles_and_names_without_boxes(tmp_path: Path) -> None:
    from clipforge.evaluate import plots

    who = "clipforge-tiny-zh on 中文数据"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.plot_recall_curves([0, 1, 3, 7], [0, 2, 1, 9], tmp_path / "recall.png", title=who)
        plots.plot_per_class_accuracy([0.9, 0.5], ["猫", "狗"], tmp_path / "pc.png", title=f"{who}: 每类准确率",
                                      value_name="准确率")
        plots.plot_confusion_matrix(np.eye(2), ["猫", "狗"], tmp_path / "cm.png", title=f"{who}: 混淆矩阵")
        plots.plot_heatmap(np.array([[50.0]]), ["模型/猫模型.pt"], ["中文数据"], tmp_path / "heat.png",
                           title="套件", label="分数 (%)")
        sweep = {"-1": 0.5, "0": 0.75, "1": 0.7}
        fewshot = {"1": {"top1": {"mean": 0.5, "std": 0.1}}, "2": {"top1": {"mean": 0.6, "std": 0.1}}}
        written = plots.probe_plots(sweep, None, None, ["猫", "狗"], fewshot, tmp_path, "probe", title=who)
    assert _glyph_warnings(caught) == []  # the recall curve's title warned twice: 数 and 据 were boxes
    assert [w for w in caught if "cannot be rendered" in str(w.message)] == []
    assert len(written) == 2 and all(Path(p).stat().st_size > 0 for p in written)
    assert (tmp_path / "recall.png").stat().st_size > 0


def test_the_recall_curve_title_goes_through_the_font_lookup(tmp_path: Path, monkeypatch) -> None:
    """Whatever fonts are installed: the title is among the texts checked (it was not: no notice, boxes)."""
    from clipforge.evaluate import plots

    seen: list[list[str]] = []
    real = fonts.label_style

    def recording(labels):
        seen.append([str(t) for t in labels])
        return real(labels)

    monkeypatch.setattr(fonts, "label_style", recording)
    plots.plot_recall_curves([0, 1], [1, 0], tmp_path / "r.png", title="m on 中文数据")
    assert seen == [["m on 中文数据", "image -> text", "text -> image"]]


@needs_cjk
def test_an_emoji_costs_only_itself_and_the_notice_names_it_not_a_cjk_font() -> None:
    style = fonts.label_style(["猫", "狗", "跑车", "虎斑猫.jpg", CAR])
    assert style.labels == ["猫", "狗", "跑车", "虎斑猫.jpg", "跑车\ufffd.jpg"]  # was "#4": the whole name lost
    assert style.notice == NOTICE_CAR
    assert "CJK" not in style.notice and "fonts-wqy" not in style.notice  # WenQuanYi is installed and draws 跑车
    assert style.figure_notice == ("1 label(s) cannot be rendered with the installed fonts: no glyph for U+1F697 "
                                   "(emoji); drawn with \ufffd in place of the missing characters; "
                                   f"{EMOJI_HINT}")
    assert all(ord(c) < 0x10000 for c in style.figure_notice)  # the figure can draw its own notice


@needs_cjk
def test_classify_plot_of_two_images_draws_the_emoji_name_readably(tmp_path: Path, monkeypatch) -> None:
    """The audit's `classify 虎斑猫.jpg 跑车🚗.jpg --labels 猫,狗,跑车 --plot`: the second title was '#7'."""
    import clipforge.zeroshot.plot as zplot

    drawn: dict[str, list[str]] = {}
    real_save = zplot.save_figure

    def spy(fig, target, **kw):
        out = real_save(fig, target, **kw)  # lays out, writes the notice (`finish`), saves
        drawn["titles"] = [ax.get_title() for ax in fig.axes if ax.get_title()]
        drawn["notes"] = [t.get_text() for t in fig.texts]
        return out

    monkeypatch.setattr(zplot, "save_figure", spy)
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        zplot.plot_predictions([image, image], [["猫", "跑车", "狗"], ["跑车", "狗", "猫"]],
                               [[0.85, 0.09, 0.06], [0.44, 0.42, 0.14]], tmp_path / "分类.png",
                               titles=["虎斑猫.jpg", CAR])
    assert drawn["titles"] == ["虎斑猫.jpg", "跑车\ufffd.jpg"]
    assert [str(w.message) for w in caught if "cannot be rendered" in str(w.message)] == [NOTICE_CAR]
    assert _glyph_warnings(caught) == []
    assert len(drawn["notes"]) == 1 and "U+1F697 (emoji)" in drawn["notes"][0] and "#" not in drawn["notes"][0]


@needs_cjk
def test_a_han_character_the_installed_font_lacks_asks_for_a_fuller_font_naming_the_one_installed() -> None:
    rare = "\U00020000"  # CJK Extension B: not in WenQuanYi Zen Hei
    if fonts.label_style([rare]).notice is None:
        pytest.skip("the installed CJK font draws U+20000")
    style = fonts.label_style([f"{rare}a.jpg"])
    family = [name for name, _ in fonts._fonts()][1]
    assert style.labels == ["\ufffda.jpg"]
    assert style.notice.endswith(f"{family} lacks them; a fuller CJK font has more (Debian: apt-get install "
                                 "fonts-noto-cjk)")
    assert fonts.INSTALL_HINT not in style.notice


def test_without_a_cjk_font_names_keep_what_can_be_drawn_and_stand_ins_are_numbered_and_mapped(no_cjk_font) -> None:
    style = fonts.label_style(["cat", "飞机", "猫.jpg", "狗.jpg", "a 猫", "飞机", CAR])
    # 猫.jpg and 狗.jpg would both read "�.jpg": stand-ins; the same text gets the same number
    assert style.labels == ["cat", "#1", "#2", "#3", "a \ufffd", "#1", "#4"]
    assert style.notice.startswith("5 label(s) cannot be rendered with the installed fonts: no glyph for "
                                   "飞 (U+98DE, CJK), 机 (U+673A, CJK), 猫 (U+732B, CJK), 狗 (U+72D7, CJK), "
                                   "跑 (U+8DD1, CJK) and 2 more; drawn as: '飞机' -> #1, '猫.jpg' -> #2, "
                                   f"'狗.jpg' -> #3, '{CAR}' -> #4, 'a 猫' -> 'a \ufffd'; ")  # every #n named (review)
    assert style.notice.endswith(f"CJK: {fonts.INSTALL_HINT}; emoji: {EMOJI_HINT}")
    assert "#<n> for a label with nothing else to show" in style.figure_notice


def test_an_emoji_sequence_is_one_placeholder(no_cjk_font) -> None:
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"  # 👨‍👩‍👧: three emoji joined by ZWJ
    thumbs = "\U0001F44D\U0001F3FD"  # 👍🏽: an emoji and its skin tone
    assert fonts.label_style([f"{family} family", f"ok {thumbs}!"]).labels == ["\ufffd family", "ok \ufffd!"]


def test_a_plot_with_a_notice_moves_its_axes_up_so_the_notice_covers_nothing(tmp_path: Path, monkeypatch) -> None:
    from clipforge.evaluate import plots

    boxes: dict[str, object] = {}
    real = fonts.mark_figure

    def spy(fig, style):  # measured as the figure is written (closed after)
        before = fig.get_size_inches()[1]
        real(fig, style)
        fig.canvas.draw()  # the axis label is placed when drawn
        renderer = fig.canvas.get_renderer()
        boxes.update(grown=fig.get_size_inches()[1] - before, note=fig.texts[-1].get_window_extent(renderer),
                     xlabel=fig.axes[0].xaxis.label.get_window_extent(renderer), width=fig.bbox.width)

    monkeypatch.setattr(plots, "mark_figure", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plots.plot_recall_curves([0, 1], [1, 0], tmp_path / "r.png", title=f"m on {CAR}")
    note, xlabel = boxes["note"], boxes["xlabel"]
    assert boxes["grown"] > 0 and note.y1 < xlabel.y0  # the notice sits below the x axis label
    assert note.x0 >= 0 and note.x1 <= boxes["width"]  # wrapped inside the figure
