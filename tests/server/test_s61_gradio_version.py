"""The app extra's gradio range (audit 61, packager 1): pip could install gradio 4.44 for ``gradio>=4``, which has
no `gr.I18n` and no ``gradio.route_utils.BUILD_PATH_LIB``; `serve` died in a traceback. Outside the range the page
was built against, `serve` now says so in one line before loading anything, and pyproject declares the same range."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from clipforge.server.gradio_version import GRADIO_RANGE, GradioVersionError, check_gradio

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("version", ["6.31.0", "6.31.1rc1", "6.99.0"])
def test_versions_in_the_range_pass(version):
    check_gradio(version)


@pytest.mark.parametrize("version", ["4.44.1", "5.49.1", "6.30.9", "7.0.0", "not-a-version"])
def test_versions_outside_the_range_are_one_line_naming_both(version):
    with pytest.raises(GradioVersionError) as caught:
        check_gradio(version)
    text = str(caught.value)
    assert f"gradio {version} is installed" in text and "gradio >= 6.31 and < 7.0" in text
    assert "pip install 'clipforge[app]'" in text and "--no-ui" in text and "\n" not in text


def test_pyproject_declares_the_range_the_check_enforces_and_the_constraints_pin_lies_in_it():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["app"]
    (low, high), = [re.fullmatch(r"gradio>=(\d+\.\d+),<(\d+)", spec).groups() for spec in extras
                    if spec.startswith("gradio")]
    assert (tuple(map(int, low.split("."))), (int(high), 0)) == GRADIO_RANGE
    pin = re.search(r"^gradio==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE).group(1)
    check_gradio(pin)


def test_serve_with_an_old_gradio_exits_2_in_one_line_before_loading_a_model(tmp_path, monkeypatch, capsys):
    from clipforge.cli.main import main
    from clipforge.server import gradio_version

    monkeypatch.setattr(gradio_version.metadata, "version", lambda name: "4.44.1")
    assert main(["serve", "--library", str(tmp_path / "lib"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: clipforge serve's web page needs gradio >= 6.31")
    assert not (tmp_path / "lib").exists()
