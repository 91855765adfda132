"""What `clipforge eval TASK --help` shows must be what the task accepts: `eval retrieval --help`
offered `--expect top1=63.3`, which retrieval refuses ("retrieval has no such metric")."""

from __future__ import annotations

import re

import pytest

from clipforge.cli.main import main
from clipforge.evaluate.report import canonical_expect


@pytest.mark.parametrize("task", ["zeroshot", "retrieval", "linear-probe"])
def test_the_expect_example_in_help_is_accepted_by_its_task(task, capsys):
    with pytest.raises(SystemExit):
        main(["eval", task, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    example = re.search(r"golden check, e\.g\. (\S+)=([\d.]+);", text)
    assert example is not None, text
    name, value = example.groups()
    assert canonical_expect({name: float(value)}, task)  # raised ValueError for retrieval's old example


def test_retrieval_help_names_flickrs_own_caption_file(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "retrieval", "--help"])
    assert "Flickr8k.token.txt" in " ".join(capsys.readouterr().out.split())
