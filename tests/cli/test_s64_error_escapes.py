"""Every ``error:`` line shows what a terminal would act on as its escape (audit 64, finding 4).

Text from inside a file reached the terminal raw: a safetensors header whose dtype string held
``ESC ]0;HACKED BEL ESC [2J`` set the terminal's title and cleared the screen from the error line, and a
checkpoint's path with an ESC or a bidi override went out as it was. The one place errors are printed
(`clipforge.cli.main.report_error`) now passes the line through the CLI's one escaping rule
(`cli.common.one_line`, i.e. `scan_notices.printable_line`); text in any script is shown as it is.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from clipforge.cli.main import main, report_error

HOSTILE = "\x1b]0;HACKED\x07\x1b[2J\x1b[31m"
ESCAPED = "\\x1b]0;HACKED\\x07\\x1b[2J\\x1b[31m"


def _error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _classify(model: Path) -> list[str]:
    return ["classify", str(model), "--labels", "a,b", "--model", str(model), "-q"]


def test_a_safetensors_dtype_string_is_escaped_in_the_error_line(tmp_path, capsys) -> None:
    header = json.dumps({"a": {"dtype": HOSTILE, "shape": [2], "data_offsets": [0, 8]}}, ensure_ascii=False).encode()
    model = tmp_path / "st_ansi_dtype.safetensors"
    model.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    assert main(_classify(model)) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    line = err.strip()
    assert line.startswith(f"error: cannot read {model} as safetensors: ") and ESCAPED in line


def test_control_and_bidi_characters_in_a_checkpoint_path_are_escaped(tmp_path, capsys) -> None:
    model = tmp_path / "x\x1b[2J\u202eyy.pt"
    model.write_bytes(b"not a checkpoint at all")
    line = _error_line(capsys, _classify(model))
    assert "\x1b" not in line and "\u202e" not in line
    assert f"{tmp_path}/x\\x1b[2J\\u202eyy.pt" in line


def test_text_in_any_script_is_shown_as_it_is(tmp_path, capsys) -> None:
    model = tmp_path / "模型 权重.pt"
    model.write_bytes(b"not a checkpoint at all")
    line = _error_line(capsys, _classify(model))
    assert f"{tmp_path}/模型 权重.pt" in line


def test_report_error_escapes_a_message_and_keeps_it_one_line(capsys) -> None:
    assert report_error(ValueError("bad\nfile \x9b31m\u2066x\u2069: 写真")) == 2
    assert capsys.readouterr().err == "error: bad file \\x9b31m\\u2066x\\u2069: 写真\n"
    assert report_error(f"--model {HOSTILE}: not found") == 2
    assert capsys.readouterr().err == f"error: --model {ESCAPED}: not found\n"


def test_warning_and_notice_lines_are_escaped_too(capsys) -> None:
    """A library warning names a checkpoint's path (an assumed activation, say): printed through the CLI's
    warning hook, its ESC sequences are escaped as an error line's are (review 64)."""
    from clipforge.cli.main import _show_warning
    from clipforge.errors import Notice

    _show_warning(UserWarning(f"no activation recorded in /tmp/{HOSTILE}.pt: assumed quick_gelu"), UserWarning,
                  "x.py", 1)
    _show_warning(f"写真 {HOSTILE}", Notice, "x.py", 1)
    assert capsys.readouterr().err == (f"warning: no activation recorded in /tmp/{ESCAPED}.pt: assumed quick_gelu\n"
                                       f"notice: 写真 {ESCAPED}\n")
