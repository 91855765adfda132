"""The server reads labels and tags typed with a Chinese input method as the CLI does.

`/api/classify` with labels "猫，狗，鸟" (full-width commas) answered one label at 100%, and `/api/search` with
tags "猫，狗" filtered on one tag "猫，狗" that no photo has; the web UI's boxes did the same. Labels and tags
now go through `clipforge.text.labels.split_labels`, the rule `clipforge classify` and `clipforge tag` use:
",", "，" and "、" separate, blanks are ignored, duplicates dropped; the server's limits still hold.
"""

from __future__ import annotations

import base64

from clipforge.server.limits import ServerLimits


def _labels(answer) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [item["label"] for item in answer.json()["labels"]]


def test_classify_splits_chinese_commas_in_a_form_and_a_json_string(make_client, photos):
    client = make_client()
    image = photos[0].read_bytes()
    form = client.post("/api/classify", files={"image": ("p.png", image, "image/png")},
                       data={"labels": "猫，狗、鸟，猫，，"})
    assert sorted(_labels(form)) == ["狗", "猫", "鸟"]
    as_json = client.post("/api/classify", json={"image": base64.b64encode(image).decode(), "labels": "猫，狗、鸟"})
    assert sorted(_labels(as_json)) == ["狗", "猫", "鸟"]
    # A JSON list is a list of labels: an item is one label, whatever commas it holds.
    listed = client.post("/api/classify", json={"image": base64.b64encode(image).decode(),
                                                "labels": ["red, dark", "猫，狗"]})
    assert sorted(_labels(listed)) == ["red, dark", "猫，狗"]


def test_search_tags_split_on_chinese_commas(make_client, library, photos):
    library.classify("猫, 狗", templates="simple", top_k=1, progress=False)
    client = make_client()
    answer = client.post("/api/search", json={"text": "a photo", "top_k": 50, "tags": "猫，狗"}).json()
    assert answer["tags"] == ["猫", "狗"] and answer["reason"] is None
    assert len(answer["results"]) == len(photos)  # every photo's top tag is 猫 or 狗


def test_the_limits_count_labels_split_on_chinese_commas(make_client, photos):
    client = make_client(limits=ServerLimits(max_labels=3))
    image = photos[0].read_bytes()
    def answer(labels: str):
        reply = client.post("/api/classify", files={"image": ("p.png", image, "image/png")}, data={"labels": labels})
        return reply.status_code, reply.json()

    # the Chinese separators are counted by the published schema as the ASCII comma is: the same answers
    assert answer("a，b，c、d") == answer("a,b,c,d") and answer("a，b，c、d")[0] == 422
    assert "at most 3" in answer("a，b，c、d")[1]["detail"]
    assert answer(" ，、 ") == answer(" ,, ") and answer(" ，、 ")[0] == 422
    assert answer("a，b、c")[0] == 200


def test_clean_labels_is_one_rule_with_the_cli(library):
    from clipforge.library.tagging import parse_labels as tag_labels
    from clipforge.server.service import LibraryService
    from clipforge.zeroshot.files import parse_labels as classify_labels

    service = LibraryService(library)
    text = " 猫 ，狗、、飞机, 猫,,"
    assert service.clean_labels(text) == tag_labels(text) == classify_labels(text) == ["猫", "狗", "飞机"]
    many = "，".join(["猫"] * 999)  # an anonymous request's string of duplicates: one label
    assert service.clean_labels(many) == ["猫"]


def test_the_web_ui_classify_box_splits_chinese_commas(ui_classify):
    probabilities, _ = ui_classify("猫，狗、鸟")
    assert set(probabilities) == {"猫", "狗", "鸟"}
