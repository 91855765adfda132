"""Every shipped recipe says what it is for: `train --list-recipes` printed the bare name `cifar10-bilingual`
(the recipe that made the shipped clipforge-tiny-zh) because its file had no ``for`` block."""

from __future__ import annotations

import pytest

from clipforge.train.config import describe_recipes, list_recipes, load_recipe, recipe_info

SHIPPED = list_recipes()


def test_the_shipped_recipes_are_listed() -> None:
    assert {"cifar10-bilingual", "cifar10-from-scratch", "finetune-cars", "finetune-cub", "pretrain"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_describes_its_model_data_and_result(name: str) -> None:
    info = recipe_info(name)
    assert isinstance(info.get("description"), str) and len(info["description"]) > 40
    target = info.get("for")
    assert isinstance(target, dict) and set(target) >= {"model", "data", "expect"}, f"{name}: no 'for' block"
    for key in ("model", "data", "expect"):
        assert isinstance(target[key], str) and len(target[key]) > 20, f"{name}: for.{key} is empty"
    load_recipe(name)  # and its fields are all known config fields


def test_list_recipes_prints_model_data_and_expect_under_every_name() -> None:
    lines = describe_recipes().splitlines()
    starts = [i for i, line in enumerate(lines) if not line.startswith(" ")]
    assert [lines[i] for i in starts] == SHIPPED
    for here, after in zip(starts, [*starts[1:], len(lines)], strict=True):
        labels = [line.split(":", 1)[0].strip() for line in lines[here + 1 : after]]
        assert labels[:3] == ["model", "data", "expect"], f"{lines[here]}: {labels}"


def test_the_bilingual_recipe_says_it_makes_clipforge_tiny_zh() -> None:
    text = describe_recipes()
    block = text[text.index("cifar10-bilingual\n") : text.index("\ncifar10-from-scratch")]
    assert "clipforge-tiny-zh" in block and "81.99%" in block and "train_jpeg.zip" in block
