"""A library made for one model, filled first by another, says so (stop 49's note, left then).

`serve --create --model M` (or `Library(path, create=True, model=M)`) records M before any photo; an `index add DIR
--model N` that stores the first vectors makes N the library's model (a recorded model without vectors must not
fix it: audit 56). That replacement was silent, and a server still open on M searched an empty space. The add now
says it in one notice; an add into a library without a model, or into a second space, says nothing of the kind.
"""

from __future__ import annotations

import json
import warnings

from clipforge.cli.main import main
from clipforge.library import Library
from clipforge.library.indexer import ModelReplacedNotice


def _add(capsys, photos, lib, model: str | None) -> str:
    capsys.readouterr()
    extra = ["--model", model] if model else []
    assert main(["index", "add", str(photos), "--library", str(lib), "--workers", "0", *extra]) == 0
    return capsys.readouterr().err


def test_an_add_that_replaces_the_recorded_model_says_so(tmp_path, images_factory, capsys) -> None:
    images_factory(tmp_path / "photos", 2, formats=("png",))
    lib = tmp_path / "lib"
    Library(lib, model="test-vit-tiny", create=True).close()
    err = _add(capsys, tmp_path / "photos", lib, "test-rn-tiny")
    assert (f"notice: library {lib} was made for model test-vit-tiny and held none of its vectors: it is built with "
            "test-rn-tiny from now on (plain `search` and `tag` use it; a server still open on test-vit-tiny must be "
            "restarted)") in err, err
    assert err.count("was made for model") == 1
    capsys.readouterr()
    assert main(["index", "stats", "--json", "--library", str(lib)]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["name"] == "test-rn-tiny"


def test_the_python_api_sees_a_warning_it_can_filter(tmp_path, images_factory) -> None:
    images_factory(tmp_path / "photos", 2, formats=("png",))
    lib = tmp_path / "lib"
    Library(lib, model="test-vit-tiny", create=True).close()
    with Library(lib, model="test-rn-tiny", new_space=True) as library, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        library.add(tmp_path / "photos", workers=0, progress=False)
    replaced = [w for w in seen if issubclass(w.category, ModelReplacedNotice)]
    assert len(replaced) == 1 and "made for model test-vit-tiny" in str(replaced[0].message)


def test_no_such_notice_for_a_first_model_or_a_second_space(tmp_path, images_factory, capsys) -> None:
    images_factory(tmp_path / "photos", 2, formats=("png",))
    images_factory(tmp_path / "more", 1, formats=("jpg",))
    lib = tmp_path / "lib"
    assert "was made for model" not in _add(capsys, tmp_path / "photos", lib, "test-vit-tiny")  # records none yet
    err = _add(capsys, tmp_path / "more", lib, "test-rn-tiny")  # a second space: the default keeps its vectors
    assert "was made for model" not in err and "it is not the library's default" in err
    assert "was made for model" not in _add(capsys, tmp_path / "more", lib, None)
