"""UI events whose values are not of the shape their component takes, sent straight to gradio's event API.

gradio checks an image's or a file list's value with the component's data model only when the event
runs, and prints the traceback of each failure to the server's stderr (1.4 kB for an 80-byte join,
as often as an anonymous client liked). Such a join is refused with one line before gradio queues it.
"""

from __future__ import annotations

from tests.server import test_server_attack_gradio as gradio_attack
from tests.server.test_server_attack_gradio import _blocks, _fn_index, run_events

ui_env = gradio_attack.ui_env  # the UI app over a library, its upload folder in tmp_path


def test_values_of_the_wrong_shape_are_refused_before_gradio_runs_them(ui_env, capfd):
    make, _, _, _ = ui_env
    client = make()
    blocks = _blocks(client)
    search, add = _fn_index(client, "search"), _fn_index(client, "add")
    assert [type(c).__name__ for c in blocks.fns[search].inputs] == ["Textbox", "Image", "Slider", "Textbox"]
    assert [type(c).__name__ for c in blocks.fns[add].inputs][:2] == ["File", "Textbox"]
    capfd.readouterr()
    bad = [
        (search, ["cat", "abc", 3, ""]),
        (search, ["cat", 5, 3, ""]),
        (search, ["cat", [1, 2], 3, ""]),
        (search, ["cat", {"path": "x.png"}, 3, ""]),
        (add, ["abc", "tok", None]),
        (add, [["abc"], "tok", None]),
        (add, [{"a": 1}, "tok", None]),
    ]
    joins, done = run_events(client, bad)
    statuses = [j.status_code for j in joins]
    assert statuses == [400, 400, 400, 403, 400, 400, 400] and done == [], [
        j.text for j in joins
    ]  # 403: a path
    assert joins[0].json() == {
        "error": "bad_request",
        "detail": "value 2 of this UI event (image) is not what this "
        "page sends there: a file it uploaded, or null",
    }
    assert joins[4].json()["detail"].startswith("value 1 of this UI event (file) is not what")
    # what this page does send still runs: a text search, and an empty add (refused by the handler, not gradio)
    joins, done = run_events(client, [(search, ["a cat", None, 3, ""]), (add, [None, "tok", None])])
    assert [j.status_code for j in joins] == [200, 200] and [m["success"] for m in done] == [True, True], done
    assert "Traceback" not in capfd.readouterr().err
