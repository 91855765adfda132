"""Review of the missing-root messages (stop 50): a name the registry accepts as an alias got no layout ("reads the
dataset's folder"), and a misspelt --dataset with a missing root was described as a dataset."""

from __future__ import annotations

import pytest

from clipforge.cli.main import main


@pytest.mark.parametrize(("alias", "layout"), [
    ("imagenet1k", "reads the ImageNet validation set: val/<wnid>/*.JPEG"),
    ("CIFAR-10", "reads the CIFAR-10 download cifar-10-python.tar.gz"),
    ("stanford_cars", "reads Stanford Cars: "),
    ("Food-101", "reads food-101/: meta/{train,test}.json"),
])
def test_an_alias_gets_its_datasets_layout(alias, layout, capsys) -> None:
    assert main(["eval", "zeroshot", "--dataset", alias, "--root", "/no/such/root"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --root /no/such/root: no such file or folder; --dataset {alias} {layout}"), err


def test_an_unknown_dataset_is_named_before_its_root(capsys) -> None:
    assert main(["eval", "zeroshot", "--dataset", "foo", "--root", "/no/such/root"]) == 2
    assert capsys.readouterr().err.startswith("error: --dataset 'foo': unknown dataset (did you mean food101?)")
    from clipforge.data.catalog import UnknownDatasetError
    from clipforge.evaluate.roots import missing_root_message

    with pytest.raises(UnknownDatasetError, match="unknown dataset 'foo'"):
        missing_root_message("foo", "/no/such/root")
