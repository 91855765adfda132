"""`/api/classify` names a template's full-width braces, as the CLI does.

`一张｛｝的照片` (a Chinese input method types full-width braces by default) got the generic "must contain '{}'
exactly once": the user sees braces and cannot tell what is wrong. The CLI said which braces it takes.
"""

from __future__ import annotations

import base64

DETAIL = "template: has full-width braces '｛｝', not the ASCII '{}' where the label goes, e.g. '一张{}的照片'"


def test_full_width_braces_are_named_in_forms_and_json(make_client, photos):
    client = make_client()
    data = photos[0].read_bytes()
    form = client.post("/api/classify", files={"image": ("x.png", data, "image/png")},
                       data={"labels": "猫,狗", "template": "一张｛｝的照片"})
    assert form.status_code == 422, form.text
    assert form.json() == {"error": "invalid_request", "detail": DETAIL}
    as_json = client.post("/api/classify", json={"image": base64.b64encode(data).decode(), "labels": "猫,狗",
                                                 "template": "一张｛｝的照片"})
    assert as_json.status_code == 422 and DETAIL.split(": ", 1)[1] in as_json.json()["detail"], as_json.text
    fixed = client.post("/api/classify", files={"image": ("x.png", data, "image/png")},
                        data={"labels": "猫,狗", "template": "一张{}的照片"})
    assert fixed.status_code == 200, fixed.text
