"""Tables line up in a terminal when a label is Chinese: padding counts columns, not characters."""

from __future__ import annotations

import torch

from clipforge.similarity import SimilarityTable
from clipforge.text.width import display_width, pad


def test_display_width_counts_terminal_columns() -> None:
    assert display_width("cat") == 3
    assert display_width("一只猫") == 6  # wide: two columns each
    assert display_width("ＡＢ") == 4  # fullwidth Latin
    assert display_width("e\u0301") == 1  # e + a combining acute accent: one column
    assert display_width("") == 0
    assert pad("猫", 5) == "猫   " and pad("猫", 5, ">") == "   猫" and pad("long label", 3) == "long label"


def test_similarity_table_columns_line_up_with_chinese_texts_and_file_names() -> None:
    texts = ["一只猫的照片", "a photo of a dog"]
    names = ["猫.jpg", "dog_0.jpg"]
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    lines = SimilarityTable(names, texts, probabilities, probabilities).format().splitlines()
    widths = {display_width(line) for line in lines}
    assert len(widths) == 1, lines  # every row ends in the same terminal column as the header
    header, first = lines[0], lines[1]
    # each text's last column is where the number beneath it ends
    assert display_width(header[:header.index("一只猫的照片") + len("一只猫的照片")]) == display_width(first[:first.index("0.9000") + 6])


def test_shorten_keeps_both_ends_within_the_columns() -> None:
    from clipforge.text.width import shorten

    name = "IMG_20241005_183512_holiday_in_the_mountains_0042.jpg"
    short = shorten(name, 24)
    assert display_width(short) <= 24 and "…" in short
    assert short.startswith("IMG_2024") and short.endswith("_0042.jpg")
    assert shorten("cat.jpg", 24) == "cat.jpg" and shorten("", 5) == ""
    chinese = "一只在海滩上奔跑的小狗的照片，背景是日落和海浪"
    short = shorten(chinese, 20)
    assert display_width(short) <= 20 and short.startswith("一只在海") and short.endswith("和海浪")
    assert len(short) < 20  # counted in columns: by characters it would run to twice the room


def test_similarity_heatmap_labels_are_shortened(tmp_path, monkeypatch) -> None:
    """Long captions and camera file names are drawn shortened in the middle, not squeezing the heatmap."""
    from PIL import Image

    import clipforge.similarity as similarity

    paths = []
    for i, colour in enumerate([(200, 0, 0), (0, 0, 200)]):
        path = tmp_path / f"IMG_20241005_183512_holiday_in_the_mountains_with_family_{i:04d}.jpg"
        Image.new("RGB", (40, 30), colour).save(path)
        paths.append(path)
    texts = ["a photo of a dog running on the beach at sunset with waves in the background", "猫"]
    table = SimilarityTable([p.name for p in paths], texts, torch.rand(2, 2), torch.rand(2, 2))
    drawn = {}

    def capture(fig, target, **kwargs):
        ax = fig.axes[0]
        drawn["x"] = [t.get_text() for t in ax.get_xticklabels()]
        drawn["y"] = [t.get_text() for t in ax.get_yticklabels()]
        similarity.pyplot().close(fig)
        return target

    monkeypatch.setattr(similarity, "save_figure", capture)
    similarity.plot_similarity(table, paths, tmp_path / "heat.png")
    assert all(display_width(t) <= similarity.NAME_COLUMNS for t in drawn["x"])
    assert [t[-9:] for t in drawn["x"]] == ["_0000.jpg", "_0001.jpg"]
    from clipforge.zeroshot import fonts

    drawable = fonts.label_style(["猫"]).notice is None  # without a CJK font it is drawn as its index, and said
    assert display_width(drawn["y"][0]) <= similarity.TEXT_COLUMNS and drawn["y"][1] == ("猫" if drawable else "#1")
