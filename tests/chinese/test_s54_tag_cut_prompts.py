"""`clipforge tag` says when the model's context cuts the labels out of its prompts, as `classify` does.

clipforge-tiny-zh reads 16 tokens; Chinese labels take the 80 ``zh-imagenet`` templates (tag's default set,
in the labels' language), most of which put the label late: those prompts are the same for every label and
pull the scores together. `classify` printed a notice naming a shorter template set; `tag` said nothing.
"""

from __future__ import annotations

from clipforge.cli.main import main
from tests.chinese.chinese_files import write_photos


def test_tag_names_the_prompts_its_context_cuts(tmp_path, capsys):
    write_photos(tmp_path / "照片", ["a.png", "b.png"])
    lib = str(tmp_path / "图库")
    assert (
        main(["index", "add", str(tmp_path / "照片"), "--library", lib, "--model", "clipforge-tiny-zh", "-q"])
        == 0
    )
    capsys.readouterr()
    # zh-imagenet named (unnamed, tag now takes a set that fits: tests/zeroshot/test_s56_audit_templates.py)
    assert main(["tag", "--labels", "猫，狗", "--templates", "zh-imagenet", "--library", lib]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "lose their label to that cut" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("notice: model clipforge-tiny-zh reads 16 tokens of a text: ")
    assert lines[0].endswith("a shorter template set fits (--templates zh-cifar10)"), lines[0]
    # a set that fits says nothing
    assert main(["tag", "--labels", "猫，狗", "--templates", "zh-simple", "--library", lib]) == 0
    assert "lose their label" not in capsys.readouterr().err
    # -q keeps stderr quiet
    assert main(["tag", "--labels", "猫，狗", "--templates", "zh-imagenet", "--library", lib, "-q"]) == 0
    assert "lose their label" not in capsys.readouterr().err
