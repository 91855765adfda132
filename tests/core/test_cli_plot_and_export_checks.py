"""`--plot` targets of `classify` / `similarity` and `export onnx`'s `--opset` / `--out`, checked before any model work.

Found by a reviewer acting as a new user: `classify imgs/tiny.png victim.jpg --plot victim.jpg` replaced the photo
with a 900x400 chart; `--plot nodir/` became the dotfile ``nodir/.png`` and failed after the model ran with
matplotlib's "Format 'tmp' is not supported"; `export onnx --opset 5` (or 99) ended in a torch traceback and left
an empty output folder; `export onnx --out imgs/tiny.png` printed a raw "[Errno 17] File exists".
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import clipforge.api
from clipforge.cli.main import main

MODEL = ["--model", "test-vit-tiny"]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the suite shares few CPUs
    yield
    torch.set_num_threads(before)


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Every model load the command makes (still loading it: the old code must be able to run to the end)."""
    seen: list[str] = []
    real = clipforge.api.load_model

    def spy(spec, *args, **kwargs):
        seen.append(str(spec))
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(clipforge.api, "load_model", spy)
    return seen


def _photo(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (30, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _command(name: str, *images: Path | str) -> list[str]:
    texts = ["--labels", "cat,dog"] if name == "classify" else ["--text", "a cat", "a dog"]
    return [name, *map(str, images), *texts, *MODEL, "--device", "cpu", "--quiet"]


def _one_error_line(err: str, *words: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


@pytest.mark.parametrize("command", ["classify", "similarity"])
def test_plot_never_replaces_an_input_image(tmp_path, capsys, loads, command) -> None:
    """The target named as an image, reached through the folder the command walks, or through a link to it:
    one line naming --plot and the file, exit 2, the photo's bytes as they were, no model loaded."""
    tiny = _photo(tmp_path / "imgs" / "tiny.png", (200, 10, 10), (20, 20))
    victim = _photo(tmp_path / "victim.jpg", (10, 10, 200))
    (tmp_path / "alias.jpg").symlink_to(victim)
    before = {path: path.read_bytes() for path in (tiny, victim)}
    cases = [([tiny, victim], victim, "victim.jpg"),
             ([tmp_path / "imgs"], tiny, "tiny.png"),  # a folder input: its files are inputs too
             ([tiny, victim], tmp_path / "alias.jpg", "alias.jpg")]
    for images, target, shown in cases:
        assert main([*_command(command, *images), "--plot", str(target)]) == 2
        captured = capsys.readouterr()
        _one_error_line(captured.err, "--plot", shown, "input")
        assert captured.out == ""
    assert {path: path.read_bytes() for path in before} == before
    assert loads == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["alias.jpg", "imgs", "tiny.png", "victim.jpg"]
    assert (tmp_path / "alias.jpg").resolve() == victim  # the link itself is left alone too


@pytest.mark.parametrize("command", ["classify", "similarity"])
def test_plot_refuses_another_photo_but_replaces_its_own_figure(tmp_path, capsys, loads, command) -> None:
    """An existing file that is not an input: a figure an earlier --plot wrote (PNG, PDF) is replaced, so
    re-running a command works; anything else (a photo, a text file) is refused before the model loads."""
    tiny = _photo(tmp_path / "tiny.png", (200, 10, 10), (20, 20))
    other = _photo(tmp_path / "other.jpg", (10, 200, 10))
    notes = tmp_path / "notes.png"
    notes.write_bytes(b"not a figure, and not mine to lose")
    kept = {path: path.read_bytes() for path in (other, notes)}
    for target in (other, notes):
        assert main([*_command(command, tiny), "--plot", str(target)]) == 2
        _one_error_line(capsys.readouterr().err, "--plot", target.name, "exists")
    assert {path: path.read_bytes() for path in kept} == kept and loads == []

    for name in ("chart.png", "chart.pdf"):
        chart = tmp_path / name
        for _ in range(2):  # the same command twice: the second run replaces the first run's figure
            assert main([*_command(command, tiny), "--plot", str(chart)]) == 0
            assert f"plot written to {chart}" in capsys.readouterr().out
        assert chart.stat().st_size > 0
    assert len(loads) == 4
    (tmp_path / "empty.png").touch()  # an empty file holds nothing to lose
    assert main([*_command(command, tiny), "--plot", str(tmp_path / "empty.png")]) == 0
    assert (tmp_path / "empty.png").stat().st_size > 0


@pytest.mark.parametrize("command", ["classify", "similarity"])
def test_plot_with_a_trailing_slash_is_a_folder_made_before_the_model_runs(tmp_path, capsys, loads, command) -> None:
    """`--plot nodir/` wrote the dotfile nodir/.png (matplotlib: "Format 'tmp' is not supported") after the
    model ran; it is a folder, created, with the command's PNG inside. A file in the way is one line, first."""
    tiny = _photo(tmp_path / "tiny.png", (200, 10, 10), (20, 20))
    folder = tmp_path / "nodir" / "deeper"
    assert main([*_command(command, tiny), "--plot", f"{folder}/"]) == 0
    written = folder / f"{command}.png"
    assert written.is_file() and not (folder / ".png").exists()
    with Image.open(written) as image:
        assert image.format == "PNG"
    assert f"plot written to {written}" in capsys.readouterr().out
    assert main([*_command(command, tiny), "--plot", f"{folder}/"]) == 0  # again: the folder is there now
    capsys.readouterr()

    loads.clear()
    before = tiny.read_bytes()
    for target in (f"{tiny}/", f"{tiny}/chart.png"):  # a file where the folder should be
        assert main([*_command(command, tiny), "--plot", target]) == 2
        _one_error_line(capsys.readouterr().err, "--plot", "tiny.png", "folder")
    assert tiny.read_bytes() == before and loads == []


@pytest.mark.parametrize("opset", [5, 13, 99])
def test_export_onnx_refuses_an_opset_it_cannot_write_before_loading(tmp_path, capsys, loads, opset) -> None:
    """`--opset 5` / `99` ended in torch's UnsupportedOperatorError / "Unsupported onnx_opset_version" traceback
    after the model loaded, and left the output folder behind: one line, exit 2, nothing written."""
    out = tmp_path / "onnx"
    assert main(["export", "onnx", *MODEL, "--opset", str(opset), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err, f"--opset {opset}", "expected 14 to")
    assert captured.out == "" and loads == [] and not out.exists() and list(tmp_path.iterdir()) == []


def test_export_onnx_range_is_what_the_exporter_writes(tmp_path, capsys) -> None:
    """The range's ends are real: the lowest opset exports (and names itself in the graph); torch's newest is
    accepted by the check."""
    onnx = pytest.importorskip("onnx")
    from torch.onnx import _constants

    from clipforge.cli.export import MIN_OPSET, check_opset, max_opset

    assert max_opset() == _constants.ONNX_MAX_OPSET
    check_opset(max_opset())
    with pytest.raises(ValueError, match="--opset"):
        check_opset(max_opset() + 1)
    with pytest.raises(ValueError, match="--opset"):
        check_opset(MIN_OPSET - 1)
    out = tmp_path / "onnx"
    assert main(["export", "onnx", *MODEL, "--opset", str(MIN_OPSET), "--no-verify", "--out", str(out)]) == 0
    assert f"opset {MIN_OPSET}" in capsys.readouterr().out
    assert [o.version for o in onnx.load(out / "text_encoder.onnx").opset_import if o.domain == ""] == [MIN_OPSET]


def test_export_onnx_out_that_is_a_file_is_one_line(tmp_path, capsys, loads) -> None:
    """`--out imgs/tiny.png` printed "[Errno 17] File exists" after loading the model: one line naming --out and
    what it expects; the file as it was; a path through a file likewise."""
    tiny = _photo(tmp_path / "imgs" / "tiny.png", (200, 10, 10), (20, 20))
    before = tiny.read_bytes()
    for out in (tiny, tiny / "sub"):
        assert main(["export", "onnx", *MODEL, "--out", str(out)]) == 2
        captured = capsys.readouterr()
        _one_error_line(captured.err, f"--out {out}", "folder")
        assert "Errno" not in captured.err and captured.out == ""
    assert tiny.read_bytes() == before and loads == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["imgs", "tiny.png"]


def test_export_onnx_failure_removes_the_folders_it_created(tmp_path, monkeypatch) -> None:
    """An export that fails midway left its new, empty output folder behind; a folder that was there stays."""
    import clipforge.inference.onnx_export as onnx_export

    def failing(model, out_dir, **kwargs):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        raise RuntimeError("the exporter gave up")

    monkeypatch.setattr(onnx_export, "export_onnx", failing)
    with pytest.raises(RuntimeError, match="gave up"):
        main(["export", "onnx", *MODEL, "--out", str(tmp_path / "new" / "onnx")])
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError, match="gave up"):
        main(["export", "onnx", *MODEL, "--out", str(tmp_path / "kept")])
    assert (tmp_path / "kept").is_dir()
