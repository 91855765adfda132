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
